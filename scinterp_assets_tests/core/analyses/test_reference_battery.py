"""Family R battery: shared labels, A11 direction, A14 top-k, A16 co-expression mapping, A12 depth rho.

`planted_world` and `planted_scores` are the small seeded world the other Family R test modules share.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.analyses.reference_battery import (
    coexpression_fit,
    coexpression_mapping_tests,
    depth_correlation,
    depth_correlation_tests,
    direction_sensitivity,
    direction_sensitivity_tests,
    membership_association,
    reference_labels,
    top_k_enrichment,
    top_k_enrichment_tests,
    top_k_pairs,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning
from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS, registry_rows


def planted_world(n_genes=60, n_tfs=8, targets_per_tf=6, seed=0):
    """genes, gene features, and a signed "regulates" reference whose targets are drawn with probability
    proportional to variance^2 (so target degree follows a gene-level covariate, as in real screens)."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i:02d}" for i in range(n_genes)]
    features = pd.DataFrame({"gene": genes, "mean": rng.gamma(2.0, 1.0, n_genes),
                             "variance": rng.gamma(2.0, 1.0, n_genes),
                             "detection_rate": rng.uniform(0.1, 0.9, n_genes)})
    weight = features["variance"].to_numpy() ** 2
    sources, targets = [], []
    for tf in range(n_tfs):
        p = weight.copy()
        p[tf] = 0
        for target in rng.choice(n_genes, size=targets_per_tf, replace=False, p=p / p.sum()):
            sources.append(genes[tf])
            targets.append(genes[target])
    reference = pd.DataFrame({"source": sources, "target": targets, "resource": "planted",
                              "sign": rng.choice([-1, 0, 1], size=len(sources)), "confidence": "",
                              "weight": np.nan, "relation": "regulates"})
    return genes, features, reference


def planted_scores(genes, features, reference, seed=1):
    """informative: membership + noise; covariate: target variance (+ tiny pair noise), a function of
    gene-level covariates only; degree: the target's in-degree in the reference, a function of degree only."""
    rng = np.random.default_rng(seed)
    n = len(genes)
    membership = reference_labels(reference, genes, "planted").membership
    return {
        "informative": ScoreSet("attention", 2, "head_mean", membership + rng.normal(0, 0.7, (n, n))),
        "covariate": ScoreSet("attention", 3, "head_mean",
                              np.tile(features["variance"].to_numpy(), (n, 1)) + rng.normal(0, 0.01, (n, n))),
        "degree": ScoreSet("attention", 4, "head_mean", np.tile(membership.sum(axis=0).astype(float), (n, 1))),
    }


def assert_registry_rows(rows):
    for row in rows:
        assert set(row) <= set(REGISTRY_COLUMNS) and row["family"] == "R"
    frame = registry_rows(rows, model="m", cell_type="c")
    assert len(frame) == len(rows) and frame["test_id"].is_unique


def tiny_reference():
    return pd.DataFrame({"source": ["A", "A", "B", "Z", "A", "C"], "target": ["B", "A", "C", "A", "C", "A"],
                         "resource": "r", "sign": [1, 1, -1, 1, 0, 1], "relation": "regulates"})


# ---------------------------------------------------------------------------------------------- labels


def test_reference_labels_keep_pairs_inside_genes_with_their_signs():
    labels = reference_labels(tiny_reference(), ["A", "B", "C", "D"], "r")
    expected = np.zeros((4, 4), dtype=bool)
    expected[0, 1] = expected[1, 2] = expected[0, 2] = expected[2, 0] = True
    np.testing.assert_array_equal(labels.membership, expected)
    assert labels.sign[0, 1] == 1 and labels.sign[1, 2] == -1 and labels.sign[0, 2] == 0
    assert labels.directed and labels.n_positives == 4 and labels.tf_rows.tolist() == [0, 1, 2]


def test_reference_labels_with_no_pair_inside_is_one_clear_error():
    with pytest.raises(ValueError, match="every label is negative"):
        reference_labels(tiny_reference(), ["A", "X", "Y"], "r")


def test_reference_labels_refuse_mixed_relations():
    table = tiny_reference().assign(relation=["regulates", "interacts"] * 3)
    with pytest.raises(ValueError, match="mixes relations"):
        reference_labels(table, ["A", "B", "C"], "r")


def test_score_set_over_other_genes_is_one_clear_error():
    labels = reference_labels(tiny_reference(), ["A", "B", "C", "D"], "r")
    with pytest.raises(ValueError, match="gene list has 4 genes"):
        top_k_enrichment(ScoreSet("attention", 0, "head_mean", np.zeros((3, 3))), labels, k=2)


# ---------------------------------------------------------------------------------------------- A11


def test_known_mode_auroc_excludes_unknown_mode_pairs_and_matches_sklearn():
    genes, features, reference = planted_world()
    labels = reference_labels(reference, genes, "planted")
    score = planted_scores(genes, features, reference)["informative"]
    result = direction_sensitivity(score, labels)
    known = labels.membership & (labels.sign != 0)
    include = labels.off_diagonal & ~(labels.membership & (labels.sign == 0))
    assert result.auroc == pytest.approx(roc_auc_score(known[include], score.matrix[include]))
    assert result.reverse_auroc == pytest.approx(roc_auc_score(known[include], score.matrix.T[include]))
    assert result.n_positives == known.sum() and result.n_pairs == include.sum()


def test_direction_test_matches_a_loop_over_tfs_and_scipy_wilcoxon():
    genes, features, reference = planted_world()
    labels = reference_labels(reference, genes, "planted")
    matrix = planted_scores(genes, features, reference)["informative"].matrix
    result = direction_sensitivity(ScoreSet("attention", 1, "head_mean", matrix), labels)
    off = labels.off_diagonal
    percentile = np.zeros_like(matrix)
    percentile[off] = stats.rankdata(matrix[off]) / off.sum()
    means = []
    for tf in range(len(genes)):
        targets = [t for t in range(len(genes)) if labels.membership[tf, t] and labels.sign[tf, t] != 0
                   and not labels.membership[t, tf]]
        if targets:
            means.append(np.mean([percentile[tf, t] - percentile[t, tf] for t in targets]))
    np.testing.assert_allclose(result.per_tf_difference, means)
    assert result.wilcoxon_p == pytest.approx(stats.wilcoxon(means).pvalue)
    assert result.auroc > result.reverse_auroc and result.wilcoxon_p < 0.05  # the planted score knows direction


def test_a_symmetric_score_does_not_know_direction():
    genes, features, reference = planted_world()
    matrix = planted_scores(genes, features, reference)["informative"].matrix
    symmetric = ScoreSet("correlation", NO_LAYER, "none", matrix + matrix.T)
    rows = direction_sensitivity_tests(reference, "planted", genes, [symmetric])
    direction = rows[1]
    assert direction["test_id"] == "A11:planted:correlation:direction"
    assert direction["effect"] == pytest.approx(0.0) and direction["p_value"] == 1.0
    assert not direction["confirmatory"] and rows[0]["layer"] is None
    assert_registry_rows(rows)


def test_direction_needs_a_directed_reference_with_known_modes():
    genes = ["A", "B", "C", "D"]
    score = ScoreSet("attention", 0, "head_mean", np.arange(16.0).reshape(4, 4))
    undirected = tiny_reference().assign(relation="interacts")
    with pytest.raises(ValueError, match="undirected"):
        direction_sensitivity(score, reference_labels(undirected, genes, "r"))
    with pytest.raises(ValueError, match="known mode"):
        direction_sensitivity(score, reference_labels(tiny_reference().assign(sign=0), genes, "r"))


# ---------------------------------------------------------------------------------------------- A14


def test_top_k_breaks_ties_by_pair_order():
    scores = np.array([[9.0, 5.0, 5.0], [5.0, 9.0, 7.0], [np.nan, 5.0, 9.0]])  # the diagonal never counts
    np.testing.assert_array_equal(np.argwhere(top_k_pairs(scores, 3)), [[0, 1], [0, 2], [1, 2]])
    np.testing.assert_array_equal(np.argwhere(top_k_pairs(scores, 2)), [[0, 1], [1, 2]])


def test_top_k_enrichment_hand_checked_table_and_scipy_oracle():
    genes = ["A", "B", "C", "D"]
    labels = reference_labels(tiny_reference(), genes, "r")  # positives (A,B), (A,C), (B,C), (C,A)
    scores = np.zeros((4, 4))
    scores[0, 1], scores[0, 2], scores[3, 0], scores[1, 2] = 4, 3, 2, 1  # top 3: two positives, one negative
    result = top_k_enrichment(ScoreSet("attention", 0, "head_mean", scores), labels, k=3)
    np.testing.assert_array_equal(result.table, [[2, 1], [2, 7]])
    assert result.odds_ratio == pytest.approx(7.0)
    assert result.p_value == pytest.approx(stats.fisher_exact([[2, 1], [2, 7]], alternative="greater")[1])
    assert result.tied_at_boundary == 0


def test_top_k_planted_enrichment_and_constant_scores_pick_by_gene_order():
    genes, features, reference = planted_world()
    scores = planted_scores(genes, features, reference)
    rows = top_k_enrichment_tests(reference, "planted", genes, [scores["informative"]], k=48)
    assert rows[0]["test_id"] == "A14:planted:attention_L2_head_mean:top48"
    assert rows[0]["effect"] > 5 and rows[0]["p_value"] < 1e-4 and rows[0]["ci_low"] > 1
    assert_registry_rows(rows)
    labels = reference_labels(reference, genes, "planted")
    with pytest.warns(DegenerateScoreWarning):
        constant = top_k_enrichment(ScoreSet("attention", 0, "head_mean", np.ones((60, 60))), labels, k=5)
    assert constant.k == 5 and constant.tied_at_boundary == 60 * 59 - 5
    np.testing.assert_array_equal(np.argwhere(top_k_pairs(np.ones((60, 60)), 5)), [[0, 1], [0, 2], [0, 3], [0, 4], [0, 5]])


# ---------------------------------------------------------------------------------------------- A16


def test_coexpression_mapping_matches_scipy_statsmodels_and_sklearn():
    genes, _features, reference = planted_world()
    labels = reference_labels(reference, genes, "planted")
    rng = np.random.default_rng(3)
    coexpression = ScoreSet("correlation", NO_LAYER, "none", rng.random((60, 60)))
    matrix = 0.5 * coexpression.matrix + labels.membership + rng.normal(0, 0.5, (60, 60))
    matrix[0, 5] = np.nan  # an undefined pair is left out of both halves
    score = ScoreSet("attention", 1, "head_mean", matrix)
    keep = labels.off_diagonal & np.isfinite(matrix)
    fit = coexpression_fit(score, coexpression, genes)
    assert fit.rho == pytest.approx(stats.spearmanr(matrix[keep], coexpression.matrix[keep])[0])
    ols = sm.OLS(matrix[keep], sm.add_constant(coexpression.matrix[keep])).fit()
    assert fit.r2 == pytest.approx(ols.rsquared) and fit.n_pairs == keep.sum()
    association = membership_association(score, labels)
    r, p = stats.pointbiserialr(labels.membership[keep], matrix[keep])
    assert association.point_biserial_r == pytest.approx(r) and association.p_value == pytest.approx(p)
    assert association.auroc == pytest.approx(roc_auc_score(labels.membership[keep], matrix[keep]))
    rows = coexpression_mapping_tests(reference, ["planted"], genes, [score, coexpression], coexpression)
    assert [row["test_id"] for row in rows] == ["A16:attention_L1_head_mean:coexpression",
                                                "A16:planted:attention_L1_head_mean:membership",
                                                "A16:planted:correlation:membership"]
    assert_registry_rows(rows)


def test_coexpression_mapping_of_a_constant_score_warns_and_reports_no_association():
    genes, _, reference = planted_world()
    labels = reference_labels(reference, genes, "planted")
    constant = ScoreSet("attention", 1, "head_mean", np.full((60, 60), 0.25))
    with pytest.warns(DegenerateScoreWarning):
        association = membership_association(constant, labels)
    assert association.auroc == 0.5 and association.point_biserial_r == 0.0 and association.p_value == 1.0


# ---------------------------------------------------------------------------------------------- A12 depth


def test_depth_correlation_is_spearman_with_an_exact_permutation_p():
    layers, aurocs = np.array([0, 1, 2, 3, 4]), np.array([0.60, 0.58, 0.55, 0.57, 0.52])
    result = depth_correlation(layers, aurocs, n_permutations=100, seed=0)
    oracle = stats.permutation_test((aurocs,), lambda y: stats.spearmanr(layers, y)[0],
                                    permutation_type="pairings", n_resamples=np.inf, alternative="two-sided")
    assert result.rho == pytest.approx(stats.spearmanr(layers, aurocs)[0])
    assert result.p_value == pytest.approx(oracle.pvalue) and result.exact and result.n == 5
    three = depth_correlation(np.arange(3), np.array([0.5, 0.6, 0.7]), n_permutations=100, seed=0)
    assert three.rho == pytest.approx(1.0) and three.p_value == pytest.approx(2 / 6)  # never 0
    with pytest.raises(ValueError, match=">= 3 layers"):
        depth_correlation(np.arange(2), np.array([0.5, 0.6]), n_permutations=100, seed=0)
    with pytest.warns(DegenerateScoreWarning):
        flat = depth_correlation(np.arange(3), np.full(3, 0.6), n_permutations=100, seed=0)
    assert flat.rho == 0.0 and flat.p_value == 1.0


def test_depth_correlation_of_deep_models_is_monte_carlo_and_never_zero():
    result = depth_correlation(np.arange(12), np.linspace(0.5, 0.7, 12), n_permutations=499, seed=0)
    assert not result.exact and result.p_value == pytest.approx(1 / 500)


def test_depth_rows_one_per_reference_and_method_and_short_models_are_skipped_visibly():
    per_layer = pd.DataFrame({
        "resource": ["trrust"] * 4 + ["string_700"] * 4 + ["trrust"] * 2,
        "method": ["attention"] * 10,
        "aggregation": ["head_mean"] * 8 + ["head_max"] * 2,
        "layer": [0, 1, 2, 3, 0, 1, 2, 3, 0, 1],
        "auroc": [0.50, 0.52, 0.55, 0.60, 0.70, 0.66, 0.62, 0.61, 0.5, 0.6]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = depth_correlation_tests(per_layer, n_permutations=100, seed=0)
    assert any("head_max" in str(w.message) for w in caught)
    by_id = {row["test_id"]: row for row in rows}
    assert set(by_id) == {"A12:string_700:attention_head_mean:depth_rho", "A12:trrust:attention_head_mean:depth_rho"}
    trrust = by_id["A12:trrust:attention_head_mean:depth_rho"]
    assert trrust["statistic"] == pytest.approx(1.0) and trrust["p_value"] == pytest.approx(2 / 24)
    assert trrust["n"] == 4
    assert trrust["statistic_name"] == ("spearman_rho_with_layer_depth, "
                                       "two-sided exact permutation p over all 4! = 24 orderings")
    assert by_id["A12:string_700:attention_head_mean:depth_rho"]["statistic"] == pytest.approx(-1.0)
    assert not any(row["confirmatory"] for row in rows)
    assert_registry_rows(rows)


def test_direction_applies_to_signed_directed_references_only():
    from scinterp_assets.core.analyses.reference_battery import direction_testable

    base = {"source": ["A", "B"], "target": ["B", "A"], "resource": "r", "confidence": "", "weight": 1.0}
    assert direction_testable(pd.DataFrame({**base, "sign": [1, 0], "relation": "regulates"}))
    assert not direction_testable(pd.DataFrame({**base, "sign": [0, 0], "relation": "regulates"}))  # ChIP-like
    assert not direction_testable(pd.DataFrame({**base, "sign": [0, 0], "relation": "interacts"}))  # STRING-like
