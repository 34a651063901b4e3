"""test_registry on stored analysis partitions: coverage metadata, provisional q-values, mixed configurations."""

import re

import dagster as dg

from scinterp_assets.core.stats.registry import registry_rows
from scinterp_assets.definitions import build_definitions
from scinterp_assets.defs.registry_fields import code_version
import pandas as pd

from scinterp_assets_tests.automation_driver import Automation

ANALYSES = ("perturbation_prediction", "reference_structure", "layer_selection", "hvg_protocol_confound_tests",
            "reference_battery", "incremental_value", "sensitivity_grid_tests", "causal_interventions",
            "scaling_and_cssi")


def _store_partition(config, model: str, cell_type: str, version: str) -> None:
    """Registry rows of one model x cell type for every analysis, where the IO manager keeps them."""
    for analysis in ANALYSES:
        row = {"analysis_id": "A01", "test_id": f"{model}|{cell_type}|{analysis}:x", "p_value": 0.01,
               "confirmatory": True}
        rows = registry_rows([row], model=model, cell_type=cell_type, code_version=version)
        folder = config.storage_dir / analysis
        folder.mkdir(parents=True, exist_ok=True)
        rows.to_parquet(folder / f"{cell_type}__{model}.parquet")
    folder = config.storage_dir / "perturbation_auroc"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"perturbation": ["P1"], "method": ["correlation"], "layer": [-1], "aggregation": ["none"],
                  "auroc": [0.7]}).to_parquet(folder / f"{cell_type}__{model}.parquet")
    folder = config.storage_dir / "scaling_curves"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"ladder": ["accrual"], "seed": [0], "n_cells": [40], "n_strata": [1], "score": ["correlation"],
                  "reference": ["planted"], "auroc": [0.6], "f1": [0.2]}).to_parquet(
        folder / f"{cell_type}__{model}.parquet")


def _materialize_registry(config, instance) -> dg.ExecuteInProcessResult:
    job = build_definitions(config).resolve_job_def("summary_job")
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=[
        dg.AssetKey(key) for key in ("test_registry", "perturbation_auroc_table", "registry_coverage",
                                     "scaling_curves_table")])


def _registry_materialization(result: dg.ExecuteInProcessResult) -> dg.AssetMaterialization:
    (materialization,) = [event for event in result.asset_materializations_for_node("test_registry")
                          if event.asset_key == dg.AssetKey("test_registry")]
    return materialization


def test_registry_states_its_partitions_and_marks_q_values_provisional_while_some_are_missing(
        small_project, instance):
    instance.add_dynamic_partitions("model", ["m1", "m2"])
    for model, cell_type in (("m1", "synthetic_a"), ("m1", "synthetic_b"), ("m2", "synthetic_a")):
        _store_partition(small_project, model, cell_type, code_version(small_project))
    result = _materialize_registry(small_project, instance)
    assert result.success
    materialization = _registry_materialization(result)
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["partitions_covered"] == ["synthetic_a|m1", "synthetic_a|m2", "synthetic_b|m1"]
    assert metadata["q_values_provisional"] is True and metadata["partitions_missing"] == ["synthetic_b|m2"]
    stored = pd.read_parquet(small_project.storage_dir / "registry_coverage" / "__unpartitioned__.parquet")
    assert stored.to_dict("list") == {"partition": ["synthetic_a|m1", "synthetic_a|m2", "synthetic_b|m1", "synthetic_b|m2"],
                                      "status": ["complete", "complete", "complete", "missing"],
                                      "missing_inputs": ["", "", "", ", ".join(sorted(ANALYSES))]}
    pf = pd.read_parquet(small_project.storage_dir / "perturbation_auroc_table" / "__unpartitioned__.parquet")
    assert sorted(set(pf["cell_type"] + "|" + pf["model"])) == ["synthetic_a|m1", "synthetic_a|m2", "synthetic_b|m1"]

    _store_partition(small_project, "m2", "synthetic_b", code_version(small_project))
    complete = _registry_materialization(_materialize_registry(small_project, instance))
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


def _report_contexts(config) -> tuple[str, set[str], set[str]]:
    """The report's header line of partitions, the contexts of its PF table and those of its registry
    sections ("model | cell_type" pairs)."""
    text = (config.report_dir / "report.md").read_text()
    (header,) = [line for line in text.splitlines() if line.startswith("Model x cell type partitions")]
    pf = text.split("## Perturbation prediction")[1].split("\n## ")[0]
    a01 = text.split("## Confirmatory tests")[1]
    pairs = lambda section: {" | ".join(line.split(" | ")[:2]).strip("| ") for line in section.splitlines()
                             if re.match(r"\| m\d \|", line)}
    return header, pairs(pf), pairs(a01)


def test_automation_during_an_evaluation_gives_the_previous_or_the_next_consistent_report(small_project, instance):
    defs = build_definitions(small_project)
    automate = Automation(defs, instance)
    automate()  # the daemon's first tick
    instance.add_dynamic_partitions("model", ["m1"])
    for cell_type in ("synthetic_a", "synthetic_b"):
        _store_partition(small_project, "m1", cell_type, code_version(small_project))
        for analysis in (*ANALYSES, "perturbation_auroc", "scaling_curves"):
            instance.report_runless_asset_event(dg.AssetMaterialization(analysis, partition=f"{cell_type}|m1"))
    requested = automate()
    assert "evaluation_report" in requested
    header, pf, registry = _report_contexts(small_project)
    assert pf == registry == {"m1 | synthetic_a", "m1 | synthetic_b"}
    assert "`synthetic_a|m1`, `synthetic_b|m1` complete." in header

    # a second model half-way through its evaluation: PF AUROC of one cell type stored, no registry rows yet
    instance.add_dynamic_partitions("model", ["m2"])
    # the daemon ticks every 30 s, long before a new model's first result lands (Dagster 1.13 does not see an
    # update of a dynamic partition added since its last tick): the registry stays; the new model's verdicts
    # are issued at once, "not evaluable" (its registry rows are missing), and the report lists them
    pending = automate()
    assert "test_registry" not in pending and pending["qc_verdict"] == {"synthetic_a|m2", "synthetic_b|m2"}
    verdicts = pd.read_parquet(small_project.storage_dir / "verdicts" / "__unpartitioned__.parquet")
    m2 = verdicts[verdicts["model"] == "m2"]
    assert set(m2["status"]) == {"not evaluable"}
    assert m2.loc[m2["criterion"] != "verdict", "reason"].str.contains("preconditions failed: .*registry_status").all()
    _store_partition(small_project, "m2", "synthetic_a", code_version(small_project))
    for analysis in ANALYSES:  # not materialised yet: remove what _store_partition wrote for them
        (small_project.storage_dir / analysis / "synthetic_a__m2.parquet").unlink()
    instance.report_runless_asset_event(dg.AssetMaterialization("perturbation_auroc", partition="synthetic_a|m2"))
    requested = automate()
    assert "evaluation_report" in requested
    header, pf, registry = _report_contexts(small_project)
    assert pf == registry == {"m1 | synthetic_a", "m1 | synthetic_b"}  # the previous consistent report
    assert "not evaluated yet: `synthetic_a|m2`, `synthetic_b|m2`" in header and "provisional" in (
        small_project.report_dir / "report.md").read_text()

    # the evaluation of m2 on synthetic_a finishes: the next consistent report holds it everywhere
    _store_partition(small_project, "m2", "synthetic_a", code_version(small_project))
    for analysis in ANALYSES:
        instance.report_runless_asset_event(dg.AssetMaterialization(analysis, partition="synthetic_a|m2"))
    requested = automate()
    assert "evaluation_report" in requested
    header, pf, registry = _report_contexts(small_project)
    assert pf == registry == {"m1 | synthetic_a", "m1 | synthetic_b", "m2 | synthetic_a"}
    assert "`synthetic_a|m1`, `synthetic_a|m2`, `synthetic_b|m1` complete; not evaluated yet: `synthetic_b|m2`." in header
