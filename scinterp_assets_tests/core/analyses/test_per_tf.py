"""A15: TF-block bootstrap, leave-one-TF-out and per-TF AUROC, against explicit resampling and sklearn."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.analyses.per_tf import (
    _per_tf_bootstrap,
    leave_one_tf_out_aurocs,
    per_tf_analysis,
    per_tf_auroc,
    per_tf_tests,
    row_weighted_aurocs,
    tf_block_auroc,
    tf_block_weights,
)
from scinterp_assets.core.analyses.reference_battery import reference_labels
from scinterp_assets.core.analyses.score_sets import ScoreSet, random_score_set
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning
from scinterp_assets_tests.core.analyses.test_reference_battery import (
    assert_registry_rows,
    planted_scores,
    planted_world,
)


@pytest.fixture(scope="module")
def world():
    genes, features, reference = planted_world()
    labels = reference_labels(reference, genes, "planted")
    scores = planted_scores(genes, features, reference)
    matrix = np.round(scores["informative"].matrix, 1)  # ties across blocks
    matrix[3, 7] = np.nan  # an undefined score ranks lowest
    return genes, reference, labels, scores, matrix


def lowest_for_nan(matrix):
    """NaN scores rank lowest (sklearn refuses NaN and inf)."""
    return np.where(np.isnan(matrix), np.nanmin(matrix) - 1, matrix)


def concatenated_auroc(matrix, labels, row_weights):
    """Oracle: materialise every resampled block (row repeated by its weight) and call sklearn."""
    y, s = [], []
    for row, copies in enumerate(row_weights.astype(int)):
        keep = labels.off_diagonal[row]
        for _ in range(copies):
            y.append(labels.membership[row, keep])
            s.append(lowest_for_nan(matrix)[row, keep])
    return roc_auc_score(np.concatenate(y), np.concatenate(s))


def test_unit_row_weights_reproduce_the_global_auroc(world):
    _, _, labels, _, matrix = world
    off = labels.off_diagonal
    expected = roc_auc_score(labels.membership[off], lowest_for_nan(matrix)[off])
    assert row_weighted_aurocs(matrix, labels, np.ones(60))[0] == pytest.approx(expected)


def test_bootstrap_draws_equal_the_auroc_of_the_concatenated_blocks(world):
    _, _, labels, _, matrix = world
    weights = tf_block_weights(labels, 4, np.random.default_rng(0))
    assert (weights[:, labels.tf_rows].sum(axis=1) == 8).all() and (weights.sum(axis=1) == 60).all()
    for draw, auroc in zip(weights, row_weighted_aurocs(matrix, labels, weights)):
        assert auroc == pytest.approx(concatenated_auroc(matrix, labels, draw))


def test_undirected_references_weight_both_orientations_like_the_concatenated_blocks():
    rng = np.random.default_rng(4)
    genes = [f"G{i}" for i in range(25)]
    upper = np.triu(rng.random((25, 25)) < 0.3, 1)
    sources, targets = np.nonzero(upper | upper.T)
    reference = pd.DataFrame({"source": np.array(genes)[sources], "target": np.array(genes)[targets],
                              "relation": "interacts"})
    labels = reference_labels(reference, genes)
    matrix = np.round(rng.random((25, 25)), 1)
    weights = tf_block_weights(labels, 3, rng)
    for draw, auroc in zip(weights, row_weighted_aurocs(matrix, labels, weights)):
        assert auroc == pytest.approx(concatenated_auroc(matrix, labels, draw))
    loto = leave_one_tf_out_aurocs(matrix, labels)
    kept = np.ones(25)
    kept[labels.tf_rows[0]] = 0
    assert loto[0] == pytest.approx(concatenated_auroc(matrix, labels, kept))


def test_leave_one_tf_out_drops_the_whole_block(world):
    _, _, labels, _, matrix = world
    loto = leave_one_tf_out_aurocs(matrix, labels)
    for t, row in enumerate(labels.tf_rows):
        kept = np.ones(60)
        kept[row] = 0
        assert loto[t] == pytest.approx(concatenated_auroc(matrix, labels, kept))


def test_tf_block_auroc_interval_and_seed_streams(world):
    _, _, labels, scores, _ = world
    result = tf_block_auroc(scores["informative"], labels, n_bootstrap=300, seed=5)
    assert result.ci_low < result.auroc < result.ci_high and result.loto_min <= result.auroc <= result.loto_max
    assert result.p_value < 1e-6 and len(result.tfs) == 8
    again = tf_block_auroc(scores["informative"], labels, n_bootstrap=300, seed=5)
    np.testing.assert_array_equal(result.bootstrap, again.bootstrap)


def test_per_tf_auroc_matches_sklearn_per_row_and_perfect_scores_have_a_point_interval(world):
    genes, _, labels, scores, matrix = world
    table = per_tf_auroc(ScoreSet("attention", 2, "head_mean", matrix), labels, min_positives=3, min_negatives=3,
                         n_bootstrap=200, seed=0)
    assert len(table) == 8
    for _, row in table.iterrows():
        r = genes.index(row["tf"])
        keep = labels.off_diagonal[r]
        s = lowest_for_nan(matrix)[r, keep]
        assert row["auroc"] == pytest.approx(roc_auc_score(labels.membership[r, keep], s))
        assert row["ci_low"] <= row["auroc"] <= row["ci_high"] and row["n_positives"] == 6
    perfect = per_tf_auroc(ScoreSet("attention", 2, "head_mean", labels.membership * 1.0), labels, min_positives=3,
                           min_negatives=3, n_bootstrap=50, seed=0)
    assert (perfect[["auroc", "ci_low", "ci_high"]].to_numpy() == 1.0).all()
    strict = per_tf_auroc(scores["informative"], labels, min_positives=7, min_negatives=3, n_bootstrap=10, seed=0)
    assert strict.empty


def test_per_tf_bootstrap_has_the_distribution_of_resampling_targets():
    rng = np.random.default_rng(6)
    positives, negatives = np.round(rng.normal(0.5, 1, 8), 1), np.round(rng.normal(0, 1, 300), 1)  # with ties
    fast = _per_tf_bootstrap(positives, negatives, 4000, np.random.default_rng(0))
    # naive: resample target indices and average the pairwise comparison matrix (AUROC = mean of H)
    h = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    assert h.mean() == pytest.approx(roc_auc_score(np.r_[np.ones(8), np.zeros(300)], np.r_[positives, negatives]))
    naive = np.array([h[np.ix_(rng.integers(8, size=8), rng.integers(300, size=300))].mean() for _ in range(4000)])
    assert fast.mean() == pytest.approx(naive.mean(), abs=0.01)
    assert fast.std() == pytest.approx(naive.std(), rel=0.1)


def test_one_tf_makes_the_tf_block_bootstrap_impossible():
    genes = [f"G{i}" for i in range(10)]
    reference = pd.DataFrame({"source": ["G0"] * 4, "target": ["G1", "G2", "G3", "G4"]})
    labels = reference_labels(reference, genes)
    with pytest.raises(ValueError, match="1 TF only: a TF-block bootstrap needs >= 2 TFs"):
        tf_block_auroc(random_score_set(10, 0), labels, n_bootstrap=10, seed=0)


def test_constant_scores_give_auroc_half_with_the_degenerate_warning(world):
    _, _, labels, _, _ = world
    with pytest.warns(DegenerateScoreWarning):
        result = per_tf_analysis(ScoreSet("attention", 0, "head_mean", np.zeros((60, 60))), labels,
                                 n_bootstrap=50, seed=0)
    g = result.global_auroc
    assert g.auroc == 0.5 and g.ci_low == g.ci_high == 0.5 and g.p_value == 1.0
    assert (result.per_tf["auroc"] == 0.5).all() and result.wilcoxon_p == 1.0


def test_rows_three_per_score_set(world):
    genes, reference, _, scores, _ = world
    rows = per_tf_tests(reference, "planted", genes, [scores["informative"], random_score_set(60, 1)],
                        n_bootstrap=100, seed=0)
    assert [row["test_id"] for row in rows[:3]] == ["A15:planted:attention_L2_head_mean:tf_block",
                                                    "A15:planted:attention_L2_head_mean:leave_one_tf_out",
                                                    "A15:planted:attention_L2_head_mean:per_tf"]
    assert rows[2]["n"] == 8 and rows[2]["p_value"] < 0.05 and rows[2]["effect"] > 0.7
    assert rows[1]["ci_low"] <= rows[1]["statistic"] <= rows[1]["ci_high"]
    assert not any(row["confirmatory"] for row in rows)
    assert_registry_rows(rows)
