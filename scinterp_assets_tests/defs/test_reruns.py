"""Reruns as the daemon drives them: a second checkpoint dropped into the folder, then one overwritten in
place. The checkpoint sensor requests exactly the new or changed model's partitions, Dagster marks exactly
those stale, and the automation conditions then re-run the registry, every verdict (q-values are
framework-wide) and the report, which show the change."""

import shutil

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from scinterp_assets.core.models.pretrain import TinyGeneformerSpec, train_tiny_geneformer
from scinterp_assets.definitions import build_definitions
from scinterp_assets.defs.cell_type_assets import load_screen
from scinterp_assets.demo import build_embedded_checkpoints, materialize_everything
from scinterp_assets.resources.model_store import COMPLETION_MARKER
from scinterp_assets_tests.automation_driver import Automation
from scinterp_assets_tests.conftest import write_project

pytestmark = pytest.mark.slow

# one cell type, one tiny model, the cheaper analyses: what is tested is which runs happen, not the numbers
RERUN_PROJECT = """
home: out
checkpoint_dir: checkpoints
cell_types:
  synthetic_a: {kind: synthetic, modality: CRISPRi, wiring_seed: 1, seed: 3, n_control_cells: 300,
                n_perturbed_genes: 30, cells_per_perturbation: 40}
preprocessing: {n_control_cells: 300, n_hvg: 150}
attention: {batch_size: 16, max_cells: 60}
analyses: {incremental_value_models: [logistic], incremental_value_bootstrap: 40, bootstrap_resamples: 100,
           incremental_value_repeats: 1, incremental_value_folds: 3, residualisation_folds: 3, threads: 1,
           layer_selection_folds: 3, perturbation_bootstrap: 100, incremental_value_splits: [perturbation_split],
           sensitivity_lfc: [0.5], sensitivity_n_ctrl: [300], sensitivity_n_hvg: [150]}
reference_null: {n_draws: 50}
interventions: {enabled: false}
scaling: {enabled: false}
random_weights_twins: false
tiny_checkpoints:
  - {family: geneformer, folder_name: first, max_steps: 30}
"""


def _run_requests(defs, instance, requests) -> list[str]:
    """Execute a sensor tick's run requests in order (checkpoints before evaluations); their partitions."""
    done = []
    for request in sorted(requests, key=lambda r: r.job_name != "checkpoint_job"):
        result = defs.resolve_job_def(request.job_name).execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags)
        assert result.success
        done.append(request.partition_key)
    return done


def _stale(defs, instance, asset: str, partitions: list[str]) -> dict[str, bool]:
    """Whether Dagster marks the asset's partitions stale (the UI's "stale" badge, from code and data versions)."""
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return {partition: resolver.get_status(dg.AssetKey(asset), partition) == StaleStatus.STALE
            for partition in partitions}


def test_a_new_and_an_overwritten_checkpoint_rerun_exactly_their_partitions(tmp_path):
    config = write_project(tmp_path / "project", RERUN_PROJECT)
    build_embedded_checkpoints(config, log=lambda message: None)
    with dg.instance_for_test() as instance:
        materialize_everything(config, instance)
        defs = build_definitions(config)
        registry_path = config.storage_dir / "test_registry" / "__unpartitioned__.parquet"
        verdicts_path = config.storage_dir / "verdicts" / "__unpartitioned__.parquet"
        before = pd.read_parquet(registry_path)
        assert set(pd.read_parquet(verdicts_path)["model"]) == {"first"}
        automate = Automation(defs, instance)
        automate()  # the daemon's first look at an instance the demo filled (its cursor starts here)
        assert automate() == {}

        # a second checkpoint: only its partitions run, then the summaries, every verdict and the report
        second = config.checkpoint_dir / "second"
        shutil.copytree(config.checkpoint_dir / "first", second)
        (second / COMPLETION_MARKER).touch()
        with dg.build_sensor_context(instance=instance, definitions=defs) as context:
            tick = defs.resolve_sensor_def("checkpoint_sensor")(context)
        for request in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        assert sorted(_run_requests(defs, instance, tick.run_requests)) == ["second", "synthetic_a|second"]
        requested = automate()
        assert requested["test_registry"] == {None} and requested["evaluation_report"] == {None}
        assert requested["qc_verdict"] == {"synthetic_a|first", "synthetic_a|second"}
        assert set(pd.read_parquet(verdicts_path)["model"]) == {"first", "second"}
        assert "second" in (config.report_dir / "report.md").read_text()
        with_second = pd.read_parquet(registry_path)
        first_rows = with_second[with_second["model"] == "first"].set_index("test_id")
        assert first_rows["statistic"].equals(before.set_index("test_id").loc[first_rows.index, "statistic"])

        # overwrite the first in place: it, and nothing of the second, goes stale and runs again
        screens = [load_screen(cell_type) for cell_type in config.cell_types.values()]
        train_tiny_geneformer(screens, config.checkpoint_dir / "first", TinyGeneformerSpec(max_steps=30, seed=7),
                              log=lambda message: None)
        (config.checkpoint_dir / "first" / COMPLETION_MARKER).touch()
        with dg.build_sensor_context(instance=instance, definitions=defs, cursor=tick.cursor) as context:
            changed = defs.resolve_sensor_def("checkpoint_sensor")(context)
        checkpoint_run = [r for r in changed.run_requests if r.job_name == "checkpoint_job"]
        assert [r.partition_key for r in checkpoint_run] == ["first"]
        _run_requests(defs, instance, checkpoint_run)
        assert _stale(defs, instance, "attention_scores", ["synthetic_a|first", "synthetic_a|second"]) == {
            "synthetic_a|first": True, "synthetic_a|second": False}
        evaluations = [r for r in changed.run_requests if r.job_name != "checkpoint_job"]
        assert _run_requests(defs, instance, evaluations) == ["synthetic_a|first"]
        requested = automate()
        assert requested["qc_verdict"] == {"synthetic_a|first", "synthetic_a|second"}
        after = pd.read_parquet(registry_path).set_index("test_id")
        old = with_second.set_index("test_id")
        first_ids = after.index[after["model"] == "first"]
        second_ids = after.index[after["model"] == "second"]
        assert not after.loc[first_ids, "checkpoint"].equals(old.loc[first_ids, "checkpoint"])
        assert after.loc[second_ids, "statistic"].equals(old.loc[second_ids, "statistic"])
        verdicts = pd.read_parquet(verdicts_path)
        evidence = verdicts[(verdicts["model"] == "first") & verdicts["test_ids"].ne("[]")]
        assert len(evidence)  # the verdict rests on registry rows of the retrained checkpoint
