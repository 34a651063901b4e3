"""test_registry on stored analysis partitions: coverage metadata, provisional q-values, mixed configurations."""

import dagster as dg

from scinterp_assets.core.stats.registry import registry_rows
from scinterp_assets.definitions import build_definitions
from scinterp_assets.defs.registry_fields import code_version
from scinterp_assets.defs.summary_assets import _partitions_missing_from_registry

ANALYSES = ("perturbation_prediction", "reference_structure", "layer_selection", "hvg_protocol_confound_tests",
            "reference_battery", "incremental_value", "sensitivity_grid_tests")


def _store_partition(config, model: str, cell_type: str, version: str) -> None:
    """Registry rows of one model x cell type for every analysis, where the IO manager keeps them."""
    for analysis in ANALYSES:
        row = {"analysis_id": "A01", "test_id": f"{model}|{cell_type}|{analysis}:x", "p_value": 0.01,
               "confirmatory": True}
        rows = registry_rows([row], model=model, cell_type=cell_type, code_version=version)
        folder = config.storage_dir / analysis
        folder.mkdir(parents=True, exist_ok=True)
        rows.to_parquet(folder / f"{cell_type}__{model}.parquet")


def _materialize_registry(config, instance) -> dg.ExecuteInProcessResult:
    job = build_definitions(config).resolve_job_def("summary_job")
    return job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("test_registry")],
                                  raise_on_error=False)


def test_registry_states_its_partitions_and_marks_q_values_provisional_while_some_are_missing(
        small_project, instance):
    instance.add_dynamic_partitions("model", ["m1", "m2"])
    for model, cell_type in (("m1", "synthetic_a"), ("m1", "synthetic_b"), ("m2", "synthetic_a")):
        _store_partition(small_project, model, cell_type, code_version(small_project))
    result = _materialize_registry(small_project, instance)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("test_registry")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["partitions_covered"] == ["synthetic_a|m1", "synthetic_a|m2", "synthetic_b|m1"]
    assert metadata["q_values_provisional"] is True and metadata["partitions_missing"] == ["synthetic_b|m2"]
    assert _partitions_missing_from_registry(instance) == ["synthetic_b|m2"]  # what the report will print

    _store_partition(small_project, "m2", "synthetic_b", code_version(small_project))
    (complete,) = _materialize_registry(small_project, instance).asset_materializations_for_node("test_registry")
    assert complete.metadata["q_values_provisional"].value is False
    assert complete.metadata["partitions_missing"].value == []


def test_registry_refuses_partitions_of_another_configuration(small_project, instance):
    instance.add_dynamic_partitions("model", ["m1"])
    _store_partition(small_project, "m1", "synthetic_a", code_version(small_project))
    _store_partition(small_project, "m1", "synthetic_b", "0.0.1+stale")
    result = _materialize_registry(small_project, instance)
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.cause.message
    assert "code_version '0.0.1+stale' in partitions ['synthetic_b|m1']" in message
    assert f"code_version '{code_version(small_project)}' in partitions ['synthetic_a|m1']" in message
    assert "re-materialise the stale partitions ['synthetic_b|m1']" in message
