"""materialize() smoke test of the whole graph on a small synthetic world with known truth."""

import pandas as pd
import pytest

from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS
from scinterp_assets.definitions import build_definitions
from scinterp_assets.demo import _run, build_embedded_checkpoints, materialize_everything

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import dagster as dg

    from scinterp_assets_tests.conftest import write_project

    config = write_project(tmp_path_factory.mktemp("e2e") / "project")
    build_embedded_checkpoints(config, log=lambda message: None)
    with dg.instance_for_test() as instance:
        materialize_everything(config, instance)
        registry_path = config.storage_dir / "test_registry" / "__unpartitioned__.parquet"
        first = pd.read_parquet(registry_path)
        # one cell type and one model x cell type again, same configuration, then the fan-in: the registry
        # must not change (two whole demo runs from fresh clones are compared in the issue notes)
        defs = build_definitions(config)
        _run(defs, "cell_type_job", instance, "synthetic_b")
        _run(defs, "model_evaluation_job", instance, dg.MultiPartitionKey({"model": "tiny-scgpt", "cell_type": "synthetic_b"}))
        _run(defs, "summary_job", instance)
        second = pd.read_parquet(registry_path)
        yield config, first, second, instance


def test_registry_holds_the_framework_schema_and_tests(demo_run):
    _, registry, _, _ = demo_run
    assert tuple(registry.columns) == REGISTRY_COLUMNS
    assert {"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A09", "A10", "A11", "A12", "A13", "A14", "A15", "A16",
            "A17", "A18", "A19", "A22"} <= set(registry["analysis_id"])
    interventions = registry[registry["analysis_id"].isin(["A17", "A18", "A19"])]
    assert set(zip(interventions["model"], interventions["cell_type"], interventions["analysis_id"])) == {
        (model, cell_type, analysis) for model in ("tiny-geneformer", "tiny-scgpt")
        for cell_type in ("synthetic_a", "synthetic_b") for analysis in ("A17", "A18", "A19")}
    nested = registry[registry["test_id"].str.endswith("nested_cv_vs_correlation")]
    assert len(nested) and nested["confirmatory"].all()  # A02 compares held-out layers, never best-on-test
    assert registry["test_id"].str.contains(":value_weighted_L0_head_mean_vs_correlation").any()
    # both model families over every synthetic cell type
    assert set(zip(registry["model"], registry["cell_type"])) == {
        (model, cell_type) for model in ("tiny-geneformer", "tiny-scgpt") for cell_type in ("synthetic_a", "synthetic_b")}
    assert registry["test_id"].is_unique
    confirmatory = registry[registry["confirmatory"]]
    assert confirmatory["q_value"].notna().all() and registry.loc[~registry["confirmatory"], "q_value"].isna().all()


def test_positive_and_negative_controls_on_the_planted_network(demo_run):
    config, registry, _, _ = demo_run
    most_extreme = 1 / (1 + config.analyses.reference_permutations)  # no gene relabelling comes near
    a12 = registry[registry["analysis_id"] == "A12"]
    for cell_type in ("synthetic_a", "synthetic_b"):
        rows = a12[a12["cell_type"] == cell_type].set_index("test_id")
        correlation = rows.loc[rows.index.str.endswith("A12:planted:correlation")].iloc[0]
        random = rows.loc[rows.index.str.endswith("A12:planted:random")].iloc[0]
        print(f"{cell_type} planted-network AUROC: correlation {correlation['statistic']:.3f}, "
              f"random {random['statistic']:.3f}")
        assert correlation["statistic"] > 0.65 and correlation["p_value"] == pytest.approx(most_extreme)
        assert abs(random["statistic"] - 0.5) < 0.05


def test_rerunning_a_cell_type_and_a_model_partition_gives_an_identical_registry(demo_run):
    import dagster as dg

    _, first, second, instance = demo_run
    partition = str(dg.MultiPartitionKey({"model": "tiny-scgpt", "cell_type": "synthetic_b"}))
    for asset in ("attention_scores", "incremental_value", "reference_battery", "test_registry"):
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=20).records
        assert sum(record.partition_key in (partition, None) for record in records) == 2, asset  # really rerun
    pd.testing.assert_frame_equal(first, second)


def test_cell_embeddings_cover_the_control_cells(demo_run):
    config, _, _, _ = demo_run
    from scinterp_assets.core.attention.embeddings import CellEmbeddings

    stored = sorted((config.storage_dir / "cell_embeddings").glob("*.npz"))
    assert len(stored) == 4  # 2 models x 2 cell types
    poolings = set()
    for path in stored:
        embeddings = CellEmbeddings.load(path)
        assert len(embeddings.cell_ids) + len(embeddings.skipped) == 300  # n_control_cells of the small project
        poolings.add(embeddings.pooling)
    assert poolings == {"mean", "cls"}  # Geneformer V1 has no <cls>; scGPT does


def test_report_and_checks(demo_run):
    config, _, _, instance = demo_run
    report = config.report_dir / "report.md"
    text = report.read_text()
    assert "A12" in text and "## A02: Layer selection" in text and "## A23: cross-context table" in text
    assert "## A17: Head ablation" in text and "## A19: Fidelity" in text
    assert "## A20: Scaling" in text and "## A21: Cell-State Stratified" in text and ":max_pair_specific" in text
    assert sorted(p.name for p in config.report_dir.glob("*.png")) == [
        "cssi_gains.png", "intervention_dose_response.png", "pf_auroc_by_method.png", "reference_auroc_by_layer.png",
        "scaling_curves.png"]
    import dagster as dg

    checks = {"screen_data": "check_expression_qc_contract", "correlation_edges": "check_edge_table_contract",
              "reference_edges": "check_reference_edges_contract", "attention_edges": "check_edge_table_contract",
              "test_registry": "check_test_registry_contract", "attention_scores": "check_evaluable_coverage",
              "perturbation_auroc": "check_enough_perturbations", "reference_null": "check_null_verified"}
    keys = [dg.AssetCheckKey(dg.AssetKey(asset), name) for asset, name in checks.items()]
    executions = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    assert {key.asset_key.path[0]: record.status.value for key, record in executions.items()} == {
        asset: "SUCCEEDED" for asset in checks}


def test_registry_rows_record_the_data_versions_of_the_inputs_they_were_computed_from(demo_run):
    import json

    import dagster as dg

    _, registry, _, instance = demo_run
    rows = registry[registry["test_id"] == "tiny-scgpt|synthetic_a|A12:planted:correlation"]  # reference_structure
    (versions,) = set(rows["input_data_versions"])
    inputs = json.loads(versions)  # reference_structure's inputs, each at the partition it read
    assert set(inputs) == {"attention_edges", "attention_scores", "value_weighted_scores", "correlation_edges",
                           "gene_universe", "reference_edges", "reference_evaluability"}
    partitions = {"gene_universe": "synthetic_a", "correlation_edges": "synthetic_a", "reference_edges": "synthetic_a",
                  "reference_evaluability": "synthetic_a"}
    for asset, version in inputs.items():
        partition = partitions.get(asset, "synthetic_a|tiny-scgpt")
        record = instance.get_latest_data_version_record(dg.AssetKey(asset), partition_key=partition)
        assert version == record.asset_materialization.tags["dagster/data_version"], asset
