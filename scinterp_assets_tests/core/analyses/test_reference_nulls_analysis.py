"""A10: reference AUROC against the verified degree-preserving null, and its decomposition."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.analyses.reference_battery import reference_labels
from scinterp_assets.core.analyses.reference_nulls_analysis import (
    degree_null_decomposition,
    degree_null_table,
    degree_null_tests,
    null_aurocs,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet, random_score_set
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.networks.null import degree_preserving_null, null_auroc
from scinterp_assets.core.networks.reference_nulls import reference_nulls
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning
from scinterp_assets_tests.core.analyses.test_reference_battery import (
    assert_registry_rows,
    planted_scores,
    planted_world,
)


@pytest.fixture(scope="module")
def world():
    genes, features, reference = planted_world()
    nulls = reference_nulls(reference, genes, n_draws=200, seed=0, relations=("regulates",))
    return genes, reference, reference_labels(reference, genes, "planted"), \
        planted_scores(genes, features, reference), nulls


def test_null_aurocs_match_the_verified_null_auroc_over_the_whole_universe():
    rng = np.random.default_rng(0)
    sources = np.repeat(np.arange(5), 4)
    targets = np.array([(s + 1 + k * 3) % 30 for s in range(5) for k in range(4)])
    draws = degree_preserving_null(sources, targets, 30, n_draws=20, seed=1)
    scores = rng.random((30, 30))
    scores[1, 2] = np.nan
    genes = [f"G{i}" for i in range(30)]
    np.testing.assert_allclose(null_aurocs(scores, genes, genes, draws.codes), null_auroc(scores, draws))


def test_null_aurocs_over_an_evaluable_subset_restrict_each_draw():
    rng = np.random.default_rng(1)
    universe = [f"G{i}" for i in range(30)]
    sources = np.repeat(np.arange(6), 5)
    targets = np.array([(s + 1 + k * 5) % 30 for s in range(6) for k in range(5)])
    draws = degree_preserving_null(sources, targets, 30, n_draws=10, seed=2)
    evaluable = [universe[i] for i in rng.permutation(30)[:20]]  # a subset, in another order
    scores = rng.random((20, 20))
    result = null_aurocs(scores, evaluable, universe, draws.codes)
    position = {gene: i for i, gene in enumerate(evaluable)}
    off = ~np.eye(20, dtype=bool)
    for value, codes in zip(result, draws.codes):
        membership = np.zeros((20, 20), dtype=bool)
        for source, target in zip(codes // 30, codes % 30):
            if universe[source] in position and universe[target] in position:
                membership[position[universe[source]], position[universe[target]]] = True
        assert value == pytest.approx(roc_auc_score(membership[off], scores[off]))


def test_planted_truth_membership_signal_beats_the_null_and_degree_signals_do_not(world):
    _genes, _, labels, scores, nulls = world
    codes = nulls.codes["planted"]
    informative = degree_null_decomposition(scores["informative"], labels, nulls.genes, codes)
    covariate = degree_null_decomposition(scores["covariate"], labels, nulls.genes, codes)
    degree = degree_null_decomposition(scores["degree"], labels, nulls.genes, codes)
    off = labels.off_diagonal
    assert informative.observed == pytest.approx(roc_auc_score(labels.membership[off],
                                                               scores["informative"].matrix[off]))
    assert informative.z > 3 and informative.p_value == pytest.approx(1 / 201)
    assert abs(covariate.z) < 2 and covariate.p_value > 0.05
    # a function of target degree scores the same on every draw that keeps the in-degrees
    assert degree.z == 0.0 and degree.p_value == 1.0 and np.ptp(degree.null_auroc) == 0
    for result in (informative, covariate, degree):
        assert result.chance + result.degree + result.residual == pytest.approx(result.observed)
        assert result.n_draws == 200


def test_constant_scores_give_half_everywhere_with_the_degenerate_warning(world):
    _, _, labels, _, nulls = world
    with pytest.warns(DegenerateScoreWarning):
        result = degree_null_decomposition(ScoreSet("attention", 0, "head_mean", np.ones((60, 60))), labels,
                                           nulls.genes, nulls.codes["planted"])
    assert result.observed == 0.5 and (result.null_auroc == 0.5).all() and result.z == 0.0 and result.p_value == 1.0


def test_draws_of_another_network_are_refused(world):
    genes, reference, _, scores, nulls = world
    other = reference_labels(reference.iloc[:-6], genes, "planted")  # one TF fewer
    with pytest.raises(ValueError, match="drawn from another network"):
        degree_null_decomposition(scores["informative"], other, nulls.genes, nulls.codes["planted"])
    with pytest.raises(ValueError, match="no null draws for resource"):
        degree_null_tests(reference, genes, [scores["informative"]], nulls, resources=["trrust"])


def test_rows_one_per_score_set_and_resource_all_descriptive(world):
    genes, reference, _, scores, nulls = world
    correlation = ScoreSet("correlation", NO_LAYER, "none", scores["informative"].matrix.T)
    score_sets = [scores["informative"], correlation, random_score_set(60, 3)]
    rows = degree_null_tests(reference, genes, score_sets, nulls)
    assert [(row["test_id"], row["confirmatory"]) for row in rows] == [
        ("A10:planted:attention_L2_head_mean", False), ("A10:planted:correlation", False),
        ("A10:planted:random", False)]
    assert rows[0]["statistic_name"] == "null_z" and rows[0]["statistic"] > 3 and rows[0]["layer"] == 2
    assert_registry_rows(rows)
    table = degree_null_table(reference, genes, score_sets, nulls)
    assert isinstance(table, pd.DataFrame) and len(table) == 3
    np.testing.assert_allclose(table["chance"] + table["degree"] + table["residual"], table["observed"])
