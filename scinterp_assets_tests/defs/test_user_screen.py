"""A screen the user declares in the configuration (any h5ad with a perturbation column) and a reference in
a published format become a `cell_type` partition and run through the same assets as the synthetic ones."""

import re

import anndata as ad
import dagster as dg
import pandas as pd
import pytest

from scinterp_assets.core.datasets.synthetic import SyntheticWorldSpec, simulate_world
from scinterp_assets.definitions import build_definitions
from scinterp_assets.demo import _run, build_embedded_checkpoints
from scinterp_assets_tests.conftest import write_project

pytestmark = pytest.mark.slow

PROJECT = """
home: out
checkpoint_dir: checkpoints
cell_types:
  synthetic_a:
    kind: synthetic
    modality: CRISPRi
    wiring_seed: 1
    seed: 3
    n_control_cells: 300
    n_perturbed_genes: 30
    cells_per_perturbation: 40
  my_screen:
    kind: h5ad
    path: downloads/my_screen.h5ad
    perturbation_column: target_gene
    control_label: NTC
    modality: CRISPRi
    ensembl_id_column: gene_ids
  unknown_ids:
    kind: h5ad
    path: downloads/my_screen.h5ad
    perturbation_column: target_gene
    control_label: NTC
    modality: CRISPRi
    ensembl_id_column: made_up_ids
references:
  planted_trrust:
    format: trrust
    path: downloads/planted_trrust.tsv
  other_species:  # genes the screen does not have: not evaluable, reported, the other reference proceeds
    format: trrust
    path: downloads/other_species.tsv
preprocessing: {n_control_cells: 300, n_hvg: 150}
attention: {batch_size: 16, max_cells: 120, sources: analyses}  # per head: the rows the analyses query
analyses: {incremental_value_models: [logistic], incremental_value_bootstrap: 50, bootstrap_resamples: 200,
           incremental_value_repeats: 2, threads: 1}
interventions: {max_cells: 6, in_silico_cells: 2, ks: [1], random_draws: 2, exhaustive_up_to: 0}
# family S's per-group sums over this limit: it is left out, and nothing else is (the e2e test runs it)
scaling: {k_values: [2, 3], primary_k: 3, rung_sizes: [40, 80, 120], heterogeneity_cells: 40, ladder_seeds: 3,
          null_draws: 20, null_blocks: 30, min_stratum_size: 10, max_grouped_megabytes: 0.01}
tiny_checkpoints:
  - {family: geneformer, folder_name: tiny-geneformer, max_steps: 60}
"""


def _write_user_files(folder):
    """The synthetic world of wiring 1 (another cell sample) as a user would export it, and its planted
    network as a TRRUST raw file (TF, target, mode, PMIDs; no header)."""
    world = simulate_world(SyntheticWorldSpec(modality="CRISPRi", wiring_seed=1, seed=9, n_control_cells=300,
                                              n_perturbed_genes=30, cells_per_perturbation=40))
    folder.mkdir(parents=True)
    labels = world.obs["perturbation"].astype(str).replace({world.uns["control_label"]: "NTC"})
    ad.AnnData(X=world.X, obs=pd.DataFrame({"target_gene": labels.to_numpy()}, index=world.obs_names),
               var=pd.DataFrame({"gene_ids": world.var["ensembl_id"].to_numpy(),
                                 "made_up_ids": [f"ENSG9{i:010d}" for i in range(world.n_vars)]}, index=world.var_names)
               ).write_h5ad(folder / "my_screen.h5ad")
    truth = pd.DataFrame(world.uns["truth_edges"])
    mode = truth["sign"].map({1: "Activation", -1: "Repression"})
    pd.DataFrame({"tf": truth["source"], "target": truth["target"], "mode": mode, "pmids": "1"}).to_csv(
        folder / "planted_trrust.tsv", sep="\t", header=False, index=False)
    pd.DataFrame({"tf": ["Tf1"] * 12, "target": [f"Gene{i}" for i in range(12)], "mode": "Activation",
                  "pmids": "1"}).to_csv(folder / "other_species.tsv", sep="\t", header=False, index=False)
    return truth


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The declared project with its tiny checkpoint built and registered and the references read."""
    root = tmp_path_factory.mktemp("user_screen") / "project"
    truth = _write_user_files(root / "downloads")
    config = write_project(root, PROJECT)
    build_embedded_checkpoints(config, log=lambda message: None)
    defs = build_definitions(config)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("model", ["tiny-geneformer"])
        _run(defs, "reference_job", instance)
        _run(defs, "checkpoint_job", instance, "tiny-geneformer")
        yield config, defs, instance, truth


@pytest.fixture(scope="module")
def my_screen(project):
    """The project after the declared screen ran through the cell-type and model-evaluation jobs."""
    _, defs, instance, _ = project
    _run(defs, "cell_type_job", instance, "my_screen")
    _run(defs, "model_evaluation_job", instance, dg.MultiPartitionKey({"model": "tiny-geneformer", "cell_type": "my_screen"}))
    return project


def test_a_declared_screen_runs_through_the_same_assets(my_screen):
    config, defs, instance, truth = my_screen
    storage = config.storage_dir
    networks = pd.read_parquet(storage / "reference_networks" / "__unpartitioned__.parquet")
    assert len(networks) == len(truth) + 12 and set(networks["resource"]) == {"planted_trrust", "other_species"}
    reference = pd.read_parquet(storage / "reference_edges" / "my_screen.parquet")
    universe = set(pd.read_parquet(storage / "gene_universe" / "my_screen.parquet")["gene"])
    inside = truth[truth["source"].isin(universe) & truth["target"].isin(universe)]
    targets_inside = inside.groupby("source")["target"].nunique()
    kept_tfs = set(targets_inside.index[targets_inside >= 3])  # the TF rule, counted independently
    assert len(reference) == inside["source"].isin(kept_tfs).sum() > 0
    materialization = instance.fetch_materializations(dg.AssetKey("reference_edges"), limit=1).records[0]
    assert "tf_min_targets" in materialization.asset_materialization.metadata["survival"].value
    null = instance.fetch_materializations(dg.AssetKey("reference_null"), limit=1).records[0]
    assert null.asset_materialization.metadata["median_jaccard_distance_planted_trrust"].value > 0.2
    reference_tests = pd.read_parquet(storage / "reference_structure" / "my_screen__tiny-geneformer.parquet")
    assert (reference_tests["cell_type"] == "my_screen").all()
    assert reference_tests["test_id"].str.contains("planted_trrust:correlation").any()
    (left_out,) = reference_tests[reference_tests["statistic_name"] == "not_evaluable"].itertuples()
    assert left_out.test_id.endswith("|A12:other_species:not_evaluable") and not left_out.confirmatory
    assert left_out.note.startswith("reference 'other_species' not evaluable: keeps 0 edges (minimum 10) in a "
                                    f"universe of {len(universe)} genes: 0 of its 13 genes are in the universe")
    battery = pd.read_parquet(storage / "reference_battery" / "my_screen__tiny-geneformer.parquet")
    assert battery["test_id"].str.contains(":planted_trrust:").any()
    assert not battery["test_id"].str.contains("other_species").any()
    # family C ranks heads on the user's evaluable "regulates" reference, read out on held-out controls
    interventions = pd.read_parquet(storage / "causal_interventions" / "my_screen__tiny-geneformer.parquet")
    assert {"A17", "A18", "A19"} <= set(interventions["analysis_id"])
    assert interventions["note"].str.contains("heads ranked on planted_trrust").all()
    (scaling,) = pd.read_parquet(storage / "scaling_and_cssi" / "my_screen__tiny-geneformer.parquet").itertuples()
    assert scaling.test_id.endswith("|A21:not_evaluable") and not scaling.confirmatory
    assert "above scaling.max_grouped_megabytes (0.01). Fix: fewer scaling.k_values" in scaling.note


def test_attention_keeps_per_head_only_the_rows_the_analyses_query(my_screen):
    """attention.sources: analyses. The perturbed genes and the planted TFs are kept per head; every-pair
    analyses (A12, family R) then rank head means only, perturbation analyses every aggregation."""
    import json

    from scinterp_assets.core.attention.scores import AttentionScores

    config = my_screen[0]
    storage = config.storage_dir
    universe = pd.read_parquet(storage / "gene_universe" / "my_screen.parquet")["gene"].tolist()
    perturbed = set(pd.read_parquet(storage / "de_labels" / "my_screen.parquet")["perturbation"])
    reference = pd.read_parquet(storage / "reference_edges" / "my_screen.parquet")
    tfs = set(reference.loc[reference["relation"] == "regulates", "source"])
    sources = json.loads((storage / "attention_sources" / "my_screen.json").read_text())
    assert sources == [gene for gene in universe if gene in perturbed | tfs] and len(sources) < len(universe)
    scores = AttentionScores.load(storage / "attention_scores" / "my_screen__tiny-geneformer.attention_scores.npz")
    assert scores.sources == tuple(sources) and scores.sum.shape[2] == len(sources)
    assert scores.head_mean_sum.shape[1:] == (len(universe), len(universe))
    a12 = pd.read_parquet(storage / "reference_structure" / "my_screen__tiny-geneformer.parquet")
    attention_a12 = a12[a12["test_id"].str.contains(":attention_L")]
    assert set(attention_a12["aggregation"]) == {"head_mean"}  # head_max exists for the source rows only
    battery = pd.read_parquet(storage / "reference_battery" / "my_screen__tiny-geneformer.parquet")
    assert not battery["test_id"].str.contains("head_max").any()
    pf = pd.read_parquet(storage / "perturbation_auroc" / "my_screen__tiny-geneformer.parquet")
    assert set(pf.loc[pf["method"] == "attention", "aggregation"]) == {"head_mean", "head_max"}
    # what each step read of the accumulators (metadata): every-pair analyses no per-head rows at all
    instance = my_screen[2]

    def read(asset: str) -> dict:
        record = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
        return record.asset_materialization.metadata["accumulators_read_mb"].value["attention_scores"]

    head_means_and_counts = round((scores.count.nbytes + scores.head_mean_sum.nbytes) / 1e6, 3)
    assert read("reference_structure") == read("reference_battery") == {
        "read": head_means_and_counts, "stored": round(scores.nbytes / 1e6, 3)}
    assert read("perturbation_auroc")["read"] == round(scores.nbytes / 1e6, 3)  # head_max: the per-head rows


def test_a_vocabulary_that_misses_the_screen_fails_before_the_forward_pass_and_stores_nothing(project):
    config, defs, instance, _ = project
    _run(defs, "cell_type_job", instance, "unknown_ids")
    result = defs.resolve_job_def("model_evaluation_job").execute_in_process(
        instance=instance, raise_on_error=False,
        partition_key=dg.MultiPartitionKey({"model": "tiny-geneformer", "cell_type": "unknown_ids"}))
    assert not result.success
    failure = next(event for event in result.all_events if event.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert re.search(r"tiny-geneformer on cell type unknown_ids: 0 of \d+ genes \(0\.0%\) map to the model's "
                     r"vocabulary.*Nothing was computed or stored", message, re.S)
    assert not list((config.storage_dir / "attention_scores").glob("*unknown_ids*"))


def test_the_random_weights_twin_runs_through_the_same_assets_and_sits_beside_its_checkpoint(my_screen):
    """A25: the twin partition (same architecture and tokeniser, seeded random weights) is evaluated like any
    model; the registry then holds its rows and, per attention score set, the trained-minus-twin PF AUROC."""
    config, defs, instance, _ = my_screen
    twin = "tiny-geneformer.random-weights"
    assert twin in defs.resources["model_store"].checkpoints()  # twins are on by default
    instance.add_dynamic_partitions("model", [twin])
    _run(defs, "checkpoint_job", instance, twin)
    checkpoint = instance.fetch_materializations(dg.AssetKey("model_checkpoint"), limit=1).records[0]
    assert checkpoint.partition_key == twin
    assert checkpoint.asset_materialization.metadata["weights"].text == "random (seed 0), the twin of 'tiny-geneformer'"
    _run(defs, "model_evaluation_job", instance, dg.MultiPartitionKey({"model": twin, "cell_type": "my_screen"}))
    _run(defs, "summary_job", instance)
    registry = pd.read_parquet(config.storage_dir / "test_registry" / "__unpartitioned__.parquet")
    held = registry[registry["cell_type"] == "my_screen"]
    twin_rows = held[held["model"] == twin]
    assert {"A01", "A12", "A17"} <= set(twin_rows["analysis_id"])
    # a reference, not a claim: outside the confirmatory family and its q-values
    assert not twin_rows["confirmatory"].any() and twin_rows["q_value"].isna().all()
    assert twin_rows["note"].str.contains("random-weights twin: an untrained reference").all()
    assert held.loc[held["model"] == "tiny-geneformer", "confirmatory"].any()
    untrained = held[held["analysis_id"] == "A25"]
    assert len(untrained) and (untrained["model"] == "tiny-geneformer").all()
    assert untrained["test_id"].str.contains(":attention_L0_head_mean_trained_vs_random_weights").any()
    pf = pd.read_parquet(config.storage_dir / "perturbation_auroc" / "my_screen__tiny-geneformer.parquet")
    pf_twin = pd.read_parquet(config.storage_dir / "perturbation_auroc" / f"my_screen__{twin}.parquet")
    key = ["perturbation", "method", "layer", "aggregation"]
    paired = pf.merge(pf_twin, on=key, suffixes=("", "_twin")).query("method == 'attention' and layer == 0 "
                                                                      "and aggregation == 'head_mean'").dropna()
    row = untrained[untrained["test_id"].str.endswith(":attention_L0_head_mean_trained_vs_random_weights")].iloc[0]
    assert row["effect"] == pytest.approx((paired["auroc"] - paired["auroc_twin"]).mean())
    assert row["n"] == len(paired) and pd.isna(row["p_value"])
    for model in ("tiny-geneformer", twin):  # the verdicts, then the report
        _run(defs, "verdict_job", instance, dg.MultiPartitionKey({"model": model, "cell_type": "my_screen"}))
    _run(defs, "report_job", instance)
    report = (config.report_dir / "report.md").read_text()
    assert "intervention_dose_response.png" in report
    verdicts = pd.read_parquet(config.storage_dir / "verdicts" / "__unpartitioned__.parquet")
    assert set(verdicts.loc[verdicts["criterion"] == "verdict", "model"]) == {"tiny-geneformer", twin}
    assert f"| {twin} | my_screen |" in report.split("## Verdict")[1].split("\n## ")[0]
