"""A05/A06 incremental value and A07 covariate R^2: oracles (sklearn), folds, the perturbation bootstrap,
planted truth (a tiny seeded generative world) and bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scinterp_assets.core.analyses.incremental_value import (
    DesignTable,
    ModelSettings,
    PredictionMetrics,
    build_design,
    compare_metrics,
    covariate_r2,
    covariate_r2_tests,
    edge_score_columns,
    evaluate_predictions,
    incremental_value,
    make_folds,
    out_of_fold_scores,
)
from scinterp_assets.core.analyses.incremental_confirmatory import ConfirmatorySettings, incremental_value_tests
from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning
from scinterp_assets.core.stats.bootstrap import resample_counts
from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS, registry_rows

RULE = PerturbationFilter(min_positives=3, min_negatives=3)
SMALL = ModelSettings(boosted_max_iter=30, boosted_max_leaf_nodes=7)  # tiny worlds need tiny forests



def planted_world(
    n_perturbations: int = 30,
    n_genes: int = 100,
    *,
    edge_effect: float = 1.5,
    null: bool = False,
    base_logit: float = -2.5,
    seed: int = 0,
):
    """A seeded toy screen: labels, features, genes and one attention-like score set.

    Target features: mean ~ Gamma, variance = mean x U(0.5, 1.5), detection = 1 - exp(-1.5 mean).
    P(DE) = sigmoid(base_logit + 1.2 z(variance_t) + edge_effect x e[p, t]) with e ~ N(0, 1) per pair.
    Signal world: score = e + N(0, 0.5) noise (information beyond the features). Null world
    (null=True, edge_effect ignored): labels depend on the target only and the score is a deterministic,
    nonlinear function of the target's features, the same for every perturbation.
    """
    rng = np.random.default_rng(seed)
    genes = [f"G{i:03d}" for i in range(n_genes)]
    mean = rng.gamma(2.0, 0.6, n_genes)
    variance = mean * rng.uniform(0.5, 1.5, n_genes)
    features = pd.DataFrame(
        {"gene": genes, "mean": mean, "variance": variance, "detection_rate": 1 - np.exp(-1.5 * mean)}
    )
    latent = rng.normal(size=(n_genes, n_genes))
    z = (variance - variance.mean()) / variance.std()
    logit = base_logit + 1.2 * z[None, :] + (0.0 if null else edge_effect) * latent
    is_de = rng.random((n_genes, n_genes)) < 1 / (1 + np.exp(-logit))
    if null:
        matrix = np.tile(np.exp(mean) + variance**2, (n_genes, 1))
    else:
        matrix = latent + rng.normal(0, 0.5, (n_genes, n_genes))
    pairs = [(p, t) for p in range(n_perturbations) for t in range(n_genes) if t != p]
    labels = pd.DataFrame(
        {
            "perturbation": [genes[p] for p, _ in pairs],
            "target": [genes[t] for _, t in pairs],
            "is_de": [bool(is_de[p, t]) for p, t in pairs],
        }
    )
    return labels, features, genes, ScoreSet("attention", 3, "head_mean", matrix)


def _segments(design: DesignTable):
    offsets = design.offsets
    return [np.arange(offsets[p], offsets[p + 1]) for p in range(design.n_perturbations)]


# ----------------------------------------------------------------------------------------------------------
# Design table


def test_design_filters_like_pf_auroc_and_carries_target_features():
    genes = ["A", "B", "C", "D", "E", "F"]
    labels = pd.DataFrame(
        {
            "perturbation": ["B"] * 6 + ["A"] * 5 + ["C"] * 5 + ["Z"],
            "target": ["A", "C", "D", "E", "F", "B", "B", "C", "D", "E", "F", "A", "B", "D", "E", "F", "A"],
            "is_de": [1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1],
        }
    )
    features = pd.DataFrame(
        {
            "gene": genes,
            "mean": np.arange(6.0),
            "variance": np.arange(6.0) * 2,
            "detection_rate": np.linspace(0.1, 0.6, 6),
        }
    )
    design = build_design(labels, features, genes, PerturbationFilter(2, 2))

    # B's self pair is dropped; C has 1 positive (filtered out); Z is not evaluable
    assert design.perturbations == ("A", "B")
    assert design.n_rows == 10 and design.is_de.sum() == 6
    first = _segments(design)[0]
    assert [design.genes[t] for t in design.target[first]] == ["B", "C", "D", "E", "F"]
    assert (design.features[first, 0] == [1, 2, 3, 4, 5]).all()  # the target's mean
    assert (design.source[first] == 0).all()


def test_missing_scores_are_imputed_with_the_perturbation_median_and_flagged():
    labels, features, genes, _ = planted_world(6, 20, seed=1)
    design = build_design(labels, features, genes, PerturbationFilter(1, 1))
    matrix = np.arange(400.0).reshape(20, 20)
    matrix[0, [1, 2]] = np.nan  # perturbation G000 misses two scores
    matrix[1, :] = np.nan  # G001 misses all
    edges = edge_score_columns(design, ScoreSet("attention", 0, "head_mean", matrix))

    assert edges.names == ("edge_score", "edge_missing") and edges.n_missing == 2 + 19
    rows = _segments(design)
    g000 = design.perturbations.index("G000")
    observed = matrix[0, 3:]
    assert edges.values[rows[g000][:2], 0] == pytest.approx([np.median(observed)] * 2)
    g001 = design.perturbations.index("G001")
    present = matrix[design.source, design.target]
    assert (edges.values[rows[g001], 0] == np.nanmedian(present)).all()
    assert edges.values[:, 1].sum() == 21 and not edges.degenerate


# ----------------------------------------------------------------------------------------------------------
# Bad input: one clear ValueError each


def test_too_few_perturbations_for_the_folds():
    labels, features, genes, score_set = planted_world(4, 40)
    with pytest.raises(ValueError, match=r"only \d perturbations in the design but n_folds=5"):
        incremental_value_tests(labels, features, genes, [score_set], rule=RULE, settings=ConfirmatorySettings(5))


def test_all_labels_negative():
    labels, features, genes, score_set = planted_world(10, 30)
    with pytest.raises(ValueError, match="all .* labels are negative"):
        incremental_value_tests(labels.assign(is_de=False), features, genes, [score_set], rule=RULE)


def test_score_set_genes_must_match():
    labels, features, genes, _ = planted_world(10, 30)
    wrong = ScoreSet("attention", 1, "head_mean", np.zeros((29, 29)))
    with pytest.raises(ValueError, match="genes do not match"):
        incremental_value_tests(labels, features, genes, [wrong], rule=RULE)


def test_features_must_cover_the_targets():
    labels, features, genes, score_set = planted_world(10, 30)
    with pytest.raises(ValueError, match="features lack 1 perturbed or target genes"):
        incremental_value_tests(labels, features.iloc[1:], genes, [score_set], rule=RULE)


def test_constant_score_warns_and_adds_exactly_nothing():
    labels, features, genes, _ = planted_world(10, 40)
    constant = ScoreSet("attention", 2, "head_mean", np.full((40, 40), 0.3))
    design = build_design(labels, features, genes, RULE)
    with pytest.warns(DegenerateScoreWarning, match="constant"):
        edges = edge_score_columns(design, constant)
    assert edges.degenerate and edges.score_auroc == 0.5
    with pytest.warns(DegenerateScoreWarning):
        results = incremental_value(
            design,
            [constant],
            splits=("perturbation_split",),
            models=("logistic",),
            n_bootstrap=50,
            settings=SMALL,
        )
    for c in results[0].comparisons:
        assert c.delta == 0.0 and c.ci_low == 0.0 and c.ci_high == 0.0 and c.p_value == 1.0
        assert math.isfinite(c.gene_only)


# ----------------------------------------------------------------------------------------------------------
# Folds


@pytest.fixture(scope="module")
def design():
    labels, features, genes, _ = planted_world(30, 60, seed=3)
    return build_design(labels, features, genes, RULE)


def test_perturbation_folds_never_share_a_perturbation(design):
    folds = make_folds(design, "perturbation_split", 5, seed=0)
    tested = np.zeros(design.n_rows, dtype=int)
    for k in range(5):
        train, test = folds.train(k), folds.test(k)
        assert not set(design.perturbation[train]) & set(design.perturbation[test])
        assert not (train & test).any() and (train | test).all()
        tested += test
    assert (tested == 1).all() and folds.n_tests == 5


def test_target_folds_never_share_a_target(design):
    folds = make_folds(design, "target_split", 5, seed=0)
    for k in range(5):
        assert not set(design.target[folds.train(k)]) & set(design.target[folds.test(k)])


def test_joint_folds_hold_out_perturbation_and_target(design):
    joint = make_folds(design, "joint_split", 5, seed=0)
    by_perturbation = make_folds(design, "perturbation_split", 5, seed=0).row_folds[:, 0]
    by_target = make_folds(design, "target_split", 5, seed=0).row_folds[:, 0]
    assert (joint.row_folds == np.column_stack([by_perturbation, by_target])).all()  # independent, shared
    assert joint.n_tests == 25
    tested_once = np.zeros(design.n_rows, dtype=int)
    for k in range(joint.n_tests):
        train, test = joint.train(k), joint.test(k)
        i, j = divmod(k, 5)
        assert (test == ((by_perturbation == i) & (by_target == j))).all()
        assert (train == ((by_perturbation != i) & (by_target != j))).all()
        # neither a test row's perturbation nor its target is seen in training, in that role
        assert not set(design.perturbation[test]) & set(design.perturbation[train])
        assert not set(design.target[test]) & set(design.target[train])
        tested_once += test
    assert (tested_once == 1).all()  # every row is tested exactly once


def test_seeds_and_repeats_draw_new_folds(design):
    a = make_folds(design, "joint_split", 5, seed=4).row_folds
    assert (a == make_folds(design, "joint_split", 5, seed=4).row_folds).all()
    assert not (a == make_folds(design, "joint_split", 5, seed=5).row_folds).all()
    assert not (a == make_folds(design, "joint_split", 5, seed=4, repeat=1).row_folds).all()


def test_out_of_fold_logistic_matches_sklearn_fit_per_fold(design):
    folds = make_folds(design, "perturbation_split", 5, seed=2)
    scores = out_of_fold_scores(design.features, design.is_de, folds, "logistic", SMALL, seed=0)
    for k in range(5):
        train, test = folds.train(k), folds.test(k)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, solver="newton-cholesky"))
        expected = model.fit(design.features[train], design.is_de[train]).decision_function(
            design.features[test]
        )
        assert scores[test] == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------------------
# Metrics and the perturbation bootstrap against sklearn


def _toy_predictions(seed=0, n_perturbations=12, targets=40):
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(n_perturbations), targets)
    y = rng.random(len(group)) < 0.25
    y[::targets] = True  # every perturbation has a positive ...
    y[1::targets] = False  # ... and a negative
    scores = np.round(y * 0.8 + rng.normal(0, 1, len(group)), 1)  # rounding makes ties
    return y, scores, group


def _expected_recall(y, scores, k):
    """Share of positives among the k highest scores, ties at the cut-off counted by expected share."""
    order = np.sort(scores)[::-1]
    if k >= len(scores):
        return 1.0
    cut = order[k - 1]
    above = scores > cut
    tied = scores == cut
    return (y[above].sum() + (k - above.sum()) * y[tied].sum() / tied.sum()) / y.sum()


def _sklearn_metrics(y, scores, group, recall_at):
    per = [roc_auc_score(y[group == p], scores[group == p]) for p in np.unique(group)]
    recall = [
        np.mean([_expected_recall(y[group == p], scores[group == p], k) for p in np.unique(group)])
        for k in recall_at
    ]
    return [roc_auc_score(y, scores), np.mean(per), average_precision_score(y, scores), *recall]


def test_point_metrics_match_sklearn():
    y, scores, group = _toy_predictions()
    metrics = evaluate_predictions(
        y, scores, group, 12, np.ones((1, 12)), recall_at=(3, 10, 50), block_rows=7
    )
    assert metrics.names == (
        "auroc",
        "auroc_per_perturbation",
        "auprc",
        "recall_at_3",
        "recall_at_10",
        "recall_at_50",
    )
    assert metrics.point == pytest.approx(_sklearn_metrics(y, scores, group, (3, 10, 50)), abs=1e-12)
    assert metrics.n_positives == y.sum() and (metrics.n_perturbations == 12).all()


def test_recall_at_k_by_hand_with_a_tie_at_the_cut():
    y = np.array([True, False, True, False, False])
    scores = np.array([0.9, 0.9, 0.5, 0.5, 0.1])  # top 3: both 0.9s plus one of the two 0.5s
    metrics = evaluate_predictions(
        y, scores, np.zeros(5, dtype=int), 1, np.ones((1, 1)), recall_at=(1, 3, 10)
    )
    # k=1: one of the two 0.9s (half a positive); k=3: 1 + half of the 0.5 pair's one positive = 1.5
    assert metrics.point[3:] == pytest.approx([0.25, 0.75, 1.0])


def test_bootstrap_reweighting_equals_recomputing_on_resampled_perturbations():
    y, scores, group = _toy_predictions(seed=1)
    weights = resample_counts(12, 6, seed=9)
    assert weights.shape == (6, 12) and (weights.sum(axis=1) == 12).all()
    assert (weights == np.round(weights)).all() and (weights == 0).any()  # draws with replacement
    metrics = evaluate_predictions(y, scores, group, 12, weights, recall_at=(5, 20), block_rows=16)
    for b in range(6):
        # the resample written out: perturbation p repeated weights[b, p] times, each copy its own group
        chosen = np.repeat(np.arange(12), weights[b].astype(int))
        rows = np.concatenate([np.flatnonzero(group == p) for p in chosen])
        copies = np.repeat(np.arange(len(chosen)), [np.sum(group == p) for p in chosen])
        expected = _sklearn_metrics(y[rows], scores[rows], copies, (5, 20))
        assert metrics.replicates[:, b] == pytest.approx(expected, abs=1e-12)


def test_nan_scores_are_left_out_of_every_metric():
    y, scores, group = _toy_predictions(seed=2)
    partial = scores.copy()
    partial[group >= 6] = np.nan
    keep = group < 6
    metrics = evaluate_predictions(y, partial, group, 12, np.ones((1, 12)), recall_at=(5,))
    assert metrics.point == pytest.approx(_sklearn_metrics(y[keep], scores[keep], group[keep], (5,)))
    assert (metrics.n_perturbations == 6).all()


def test_delta_ci_and_p_value_by_hand():
    names = ("auroc",)
    gene_only = PredictionMetrics(
        names, np.array([0.70]), np.array([[0.70, 0.71, 0.69, 0.70, 0.72]]), np.array([10]), 50
    )
    with_score = PredictionMetrics(
        names, np.array([0.72]), np.array([[0.71, 0.70, 0.72, 0.74, 0.72]]), np.array([10]), 50
    )
    (c,) = compare_metrics(gene_only, with_score, confidence=0.5)
    # deltas 0.01, -0.01, 0.03, 0.04, 0.0; alpha 0.5 with 5 resamples: j = ceil(0.5 x 6 / 2) - 1 = 1
    assert c.delta == pytest.approx(0.02)
    assert (c.ci_low, c.ci_high) == pytest.approx((-0.01, 0.04))
    assert c.p_value == pytest.approx(min(1.0, 2 * (1 + 2) / (1 + 5)))  # two deltas <= 0, four >= 0
    assert c.gene_only_ci == pytest.approx((0.69, 0.72))


# ----------------------------------------------------------------------------------------------------------
# Planted truth


def _lower_bounds(world, splits=("perturbation_split",), n_bootstrap=200, seed=0):
    labels, features, genes, score_set = world
    design = build_design(labels, features, genes, RULE)
    results = incremental_value(
        design, [score_set], splits=splits, n_bootstrap=n_bootstrap, seed=seed, settings=SMALL
    )
    return {(r.model, r.split): r.comparison("auroc") for r in results}


def test_planted_edge_signal_is_found_by_both_models_and_all_splits():
    comparisons = _lower_bounds(
        planted_world(30, 80, seed=11), splits=("perturbation_split", "target_split", "joint_split")
    )
    assert len(comparisons) == 6
    for key, c in comparisons.items():
        assert c.ci_low > 0, key
        assert c.p_value == pytest.approx(2 / 201), key  # two-sided, no resampled delta <= 0


def test_score_that_is_a_function_of_target_features_adds_nothing():
    comparisons = _lower_bounds(planted_world(30, 80, null=True, seed=12))
    for key, c in comparisons.items():
        assert c.ci_low <= 0 <= c.ci_high, key


# ----------------------------------------------------------------------------------------------------------
# Registry rows and reproducibility


def test_registry_rows_fit_the_schema_with_confirmatory_flags():
    labels, features, genes, attention = planted_world(20, 40, seed=5)
    rng = np.random.default_rng(0)
    correlation = ScoreSet("correlation", NO_LAYER, "none", rng.normal(size=(40, 40)))
    random = ScoreSet("random", NO_LAYER, "none", rng.random((40, 40)))
    rows = incremental_value_tests(
        labels,
        features,
        genes,
        [attention, correlation, random],
        rule=RULE,
        settings=ConfirmatorySettings(n_repeats=2, n_bootstrap=40),
        seed=3,
        model_settings=SMALL,
        recall_at=(10,),
        label_rule="welch q<0.05",
    )
    for row in rows:
        assert set(row) <= set(REGISTRY_COLUMNS)
    table = registry_rows(rows, model="m", cell_type="c")
    by_id = table.set_index("test_id")
    # per split x model: confirmatory (1 gene-only + 3 score sets), flexible descriptive (3 metrics:
    # auroc, auprc, recall_at_10; gene-only + 3 score sets) and the study's form (4 metrics, same shape)
    assert len(table) == 3 * 2 * ((1 + 3) + 3 * (1 + 3) + 4 * (1 + 3)) and by_id.index.is_unique
    primary = by_id.loc["A05:logistic:perturbation_split:attention_L3_head_mean"]
    assert primary["confirmatory"] and primary["analysis_id"] == "A05" and primary["layer"] == 3
    assert primary["statistic_name"] == "auroc_per_perturbation_with_residualised_score" and primary["n"] == 20
    assert primary["label_rule"] == "welch q<0.05" and primary["seed"] == 3
    assert by_id.loc["A06:boosted:joint_split:correlation", "confirmatory"]
    assert by_id.loc["A06:boosted:target_split:correlation", "analysis_id"] == "A06"
    assert not by_id.loc["A05:logistic:perturbation_split:random", "confirmatory"]
    assert not by_id.loc["A05:logistic:perturbation_split:flexible:attention_L3_head_mean:auprc", "confirmatory"]
    study = by_id.loc["A05:logistic:perturbation_split:study:attention_L3_head_mean:auroc"]
    assert not study["confirmatory"] and study["statistic_name"] == "auroc_with_score"
    gene_only = by_id.loc["A05:boosted:perturbation_split:gene_only"]
    assert not gene_only["confirmatory"] and np.isnan(gene_only["p_value"])
    assert table.loc[table["confirmatory"], "test_id"].str.count(":").eq(3).all()
    assert table["confirmatory"].sum() == 2 * 2 * 3  # attention and correlation x 2 models x 3 splits
    # every row's two-sided p agrees with its interval (FRAMEWORK section 7)
    tested = table[table["p_value"].notna()]
    excludes_zero = (tested["ci_low"] > 0) | (tested["ci_high"] < 0)
    assert (excludes_zero == (tested["p_value"] < 0.05)).all()


def test_same_inputs_and_seed_give_identical_rows():
    world = planted_world(15, 30, seed=6)

    def run(seed):
        return incremental_value_tests(
            *world[:3], [world[3]], rule=RULE, settings=ConfirmatorySettings(n_repeats=2, n_bootstrap=40),
            seed=seed, model_settings=SMALL,
        )

    first = pd.DataFrame(run(1))
    pd.testing.assert_frame_equal(first, pd.DataFrame(run(1)))
    assert not first["ci_low"].equals(pd.DataFrame(run(2))["ci_low"])


# ----------------------------------------------------------------------------------------------------------
# A07 covariate R^2


@pytest.mark.parametrize("model", ["ols", "boosted"])
def test_covariate_r2_matches_cross_val_score(design, model):
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(60, 60)) + np.log1p(np.arange(60.0))[None, :]
    matrix[rng.random((60, 60)) < 0.05] = np.nan
    score_set = ScoreSet("attention", 1, "head_mean", matrix)
    (result,) = covariate_r2(design, score_set, n_folds=5, seed=7, models=(model,), settings=SMALL)

    values = matrix[design.source, design.target]
    observed = np.isfinite(values)
    fold_of = make_folds(design, "target_split", 5, seed=7).row_folds[observed, 0]
    cv = [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(5)]
    estimator = (
        LinearRegression()
        if model == "ols"
        else HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=7, early_stopping=False)
    )
    expected = cross_val_score(estimator, design.features[observed], values[observed], cv=cv, scoring="r2")
    assert result.fold_r2 == pytest.approx(expected)
    assert result.r2 == pytest.approx(expected.mean()) and result.n_pairs == observed.sum()


def test_covariate_r2_is_high_for_a_feature_function_and_low_for_edge_signal():
    null_world = planted_world(20, 80, null=True, seed=2)
    rows = {
        r["test_id"]: r
        for r in covariate_r2_tests(*null_world[:3], [null_world[3]], rule=RULE, settings=SMALL)
    }
    assert rows["A07:boosted:attention_L3_head_mean"]["statistic"] > 0.8
    signal = planted_world(20, 80, seed=2)
    rows = {r["test_id"]: r for r in covariate_r2_tests(*signal[:3], [signal[3]], rule=RULE, settings=SMALL)}
    assert rows["A07:ols:attention_L3_head_mean"]["statistic"] < 0.05
    row = rows["A07:ols:attention_L3_head_mean"]
    assert not row["confirmatory"] and set(row) <= set(REGISTRY_COLUMNS)
    assert row["ci_low"] <= row["statistic"] <= row["ci_high"]


def test_covariate_r2_of_a_constant_score_warns_and_is_nan(design):
    with pytest.warns(DegenerateScoreWarning):
        results = covariate_r2(
            design, ScoreSet("attention", 0, "head_mean", np.ones((60, 60))), settings=SMALL
        )
    assert all(np.isnan(r.r2) for r in results)


def test_no_warning_for_an_informative_score(design):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateScoreWarning)
        edge_score_columns(
            design, ScoreSet("attention", 0, "head_mean", np.random.default_rng(0).random((60, 60)))
        )
