import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter, per_perturbation_auroc
from scinterp_assets.core.analyses.score_sets import ScoreSet, gene_level_score_sets
from scinterp_assets.core.analyses.sensitivity_cells import GridSettings, grid_cell_evaluator
from scinterp_assets.core.datasets.de_labels import DELabelRule, compute_de_labels
from scinterp_assets.core.datasets.preprocessing import (
    LOG_LAYER,
    gene_level_features,
    perturbed_genes,
    sample_control_cells,
    select_gene_universe,
    spearman_matrix,
)
from scinterp_assets.core.datasets.synthetic import SyntheticWorldSpec, simulate_world
from scinterp_assets.core.edges import NO_LAYER

SETTINGS = GridSettings(q_threshold=0.05, min_cells=30, test="welch", min_positives=3, min_negatives=3,
                        target_sum=1e4, seed=0)


def _world():
    return simulate_world(SyntheticWorldSpec(modality="CRISPRi", wiring_seed=1, seed=5, n_control_cells=400,
                                             n_perturbed_genes=30, cells_per_perturbation=40))


def test_a_grid_cell_equals_the_pipeline_at_the_same_setting():
    screen = _world()
    forced = perturbed_genes(screen)
    controls = sample_control_cells(screen, 300, 0, 1e4)
    genes = select_gene_universe(controls, 120, forced)["gene"].tolist()
    fake_attention = ScoreSet("attention", 0, "head_mean", np.random.default_rng(0).random((len(genes), len(genes))))
    evaluate = grid_cell_evaluator(screen, [fake_attention], genes, forced, SETTINGS)
    got = evaluate(0.5, 300, 120)
    # the pipeline's own steps, written out
    labels = compute_de_labels(screen, controls, genes, DELabelRule(0.05, 0.5, 30), 1e4).labels
    values = controls.layers[LOG_LAYER][:, controls.var_names.get_indexer(genes)]
    score_sets = [fake_attention, ScoreSet("correlation", NO_LAYER, "none", np.abs(spearman_matrix(values))),
                  *gene_level_score_sets(gene_level_features(controls, genes), genes)]
    expected = per_perturbation_auroc(labels, genes, score_sets, PerturbationFilter(3, 3))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))


def test_a_stricter_threshold_gives_fewer_positives_and_smaller_cells_restrict_attention():
    screen = _world()
    forced = perturbed_genes(screen)
    genes = select_gene_universe(sample_control_cells(screen, 300, 0, 1e4), 150, forced)["gene"].tolist()
    attention = ScoreSet("attention", 0, "head_mean", np.arange(len(genes) ** 2, dtype=float).reshape(len(genes), -1))
    evaluate = grid_cell_evaluator(screen, [attention], genes, forced, SETTINGS)
    loose = evaluate(0.25, 300, 150).drop_duplicates("perturbation")
    strict = evaluate(1.0, 300, 150).drop_duplicates("perturbation")
    shared = loose.merge(strict, on="perturbation", suffixes=("_loose", "_strict"))
    assert (shared["n_positives_strict"] <= shared["n_positives_loose"]).all()
    small = evaluate(0.5, 200, 60)
    assert small["n_targets"].max() < loose["n_targets"].max()
