"""A09 cross-fitted residualisation and A13 partial correlation: statsmodels / scipy oracles, literals and
planted truth."""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.analyses.reference_battery import reference_labels
from scinterp_assets.core.analyses.incremental_confirmatory import ConfirmatorySettings
from scinterp_assets.core.analyses.residualisation import (
    COVARIATES,
    beyond_features_tests,
    cross_fitted_residuals,
    gene_covariates,
    partial_correlation,
    partial_correlation_tests,
    partial_spearman,
    reference_label_table,
    residualisation,
    residualisation_tests,
    retained_share,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet, random_score_set
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning
from scinterp_assets_tests.core.analyses.test_reference_battery import (
    assert_registry_rows,
    planted_scores,
    planted_world,
)



@pytest.fixture(scope="module")
def world():
    genes, features, reference = planted_world()
    return genes, features, reference, reference_labels(reference, genes, "planted"), \
        planted_scores(genes, features, reference)


# ---------------------------------------------------------------------------------------------- A09


def test_retained_share_literals():
    assert retained_share(0.8, 0.65) == pytest.approx(0.5)
    assert retained_share(0.66, 0.54) == pytest.approx(0.25)
    assert np.isnan(retained_share(0.5, 0.6)) and np.isnan(retained_share(0.4, 0.45))
    np.testing.assert_allclose(retained_share(np.array([0.9, 0.5, np.nan]), np.array([0.7, 0.5, 0.6])),
                               [0.5, np.nan, np.nan])


def test_gene_covariates_need_every_gene_once():
    features = pd.DataFrame({"gene": ["A", "B", "C"], "mean": [1.0, 2, 3], "variance": [1.0, 1, 2],
                             "detection_rate": [0.1, 0.2, 0.3]})
    np.testing.assert_array_equal(gene_covariates(features, ["C", "A"]), [[3, 2, 0.3], [1, 1, 0.1]])
    with pytest.raises(ValueError, match="lack 1 of the score set's 2 genes"):
        gene_covariates(features, ["A", "D"])
    with pytest.raises(ValueError, match="more than once"):
        gene_covariates(pd.concat([features, features.iloc[:1]]), ["A"])


def test_ols_residuals_match_statsmodels_fitted_on_the_other_folds():
    rng = np.random.default_rng(0)
    n = 12
    covariates = rng.normal(size=(n, 3)) * [1, 10, 0.1] + [5, 0, 1]  # scales differ: standardising is invisible
    scores = rng.normal(size=(n, n)) + covariates[:, 0][None, :]
    scores[2, 5] = np.nan
    residuals, fold = cross_fitted_residuals(scores, covariates, n_folds=3, seed=4)
    assert np.bincount(fold).tolist() == [4, 4, 4]
    sources, targets = np.nonzero(~np.eye(n, dtype=bool) & np.isfinite(scores))
    design = sm.add_constant(np.column_stack([covariates[sources], covariates[targets]]))
    y = scores[sources, targets]
    for k in range(3):
        held = fold[sources] == k
        model = sm.OLS(y[~held], design[~held]).fit()
        np.testing.assert_allclose(residuals[sources[held], targets[held]], y[held] - model.predict(design[held]),
                                   atol=1e-10)
    assert np.isnan(residuals[2, 5]) and np.isnan(np.diag(residuals)).all()


def test_a_pairs_own_source_row_never_trains_its_model():
    rng = np.random.default_rng(1)
    covariates, scores = rng.normal(size=(15, 3)), rng.normal(size=(15, 15))
    before, _ = cross_fitted_residuals(scores, covariates, n_folds=5, seed=0)
    changed = scores.copy()
    changed[4] += 100.0  # move one source row: its residuals move by exactly that much, nothing else in the row
    after, _ = cross_fitted_residuals(changed, covariates, n_folds=5, seed=0)
    off = ~np.eye(15, dtype=bool)
    np.testing.assert_allclose((after - before)[4][off[4]], 100.0)


def test_planted_membership_signal_survives_and_covariate_signal_does_not(world):
    _genes, features, _reference, labels, scores = world
    informative = residualisation(scores["informative"], labels, features, n_folds=5, n_bootstrap=300, seed=0)
    covariate = residualisation(scores["covariate"], labels, features, n_folds=5, n_bootstrap=300, seed=0)
    off = labels.off_diagonal
    assert informative.raw_auroc == pytest.approx(roc_auc_score(labels.membership[off], scores["informative"].matrix[off]))
    assert informative.residual_auroc == pytest.approx(roc_auc_score(labels.membership[off], informative.residuals[off]))
    assert informative.retained_share > 0.9 and informative.ci_low > 0.8
    assert informative.ci_low <= informative.retained_share <= informative.ci_high
    assert covariate.raw_auroc > 0.75 and covariate.covariate_r2 > 0.99
    assert abs(covariate.retained_share) < 0.1
    boosted = residualisation(scores["covariate"], labels, features, n_folds=5, n_bootstrap=100, seed=0,
                              model="boosted")
    assert boosted.retained_share < 0.35


def test_constant_scores_keep_auroc_half_and_no_share(world):
    _genes, features, _, labels, _ = world
    with pytest.warns(DegenerateScoreWarning):
        result = residualisation(ScoreSet("attention", 0, "head_mean", np.full((60, 60), 0.3)), labels, features,
                                 n_folds=5, n_bootstrap=50, seed=0)
    assert result.raw_auroc == 0.5 and np.isnan(result.retained_share) and np.isnan(result.ci_low)


def test_features_for_other_genes_are_one_clear_error(world):
    _genes, features, _, labels, scores = world
    with pytest.raises(ValueError, match="gene features lack 1 of"):
        residualisation(scores["informative"], labels, features.iloc[1:], n_folds=5, n_bootstrap=10, seed=0)


def test_residualisation_share_rows_are_descriptive_without_p(world):
    genes, features, reference, _, scores = world
    rows = residualisation_tests(reference, "planted", genes, [scores["informative"]], features, n_folds=5,
                                 n_bootstrap=50, seed=0, models=("ols", "boosted"))
    assert [row["test_id"] for row in rows] == ["A09:planted:attention_L2_head_mean:ols",
                                                "A09:planted:attention_L2_head_mean:boosted"]
    assert not any(row["confirmatory"] for row in rows) and all(row.get("p_value") is None for row in rows)
    assert set(COVARIATES) <= set(features.columns)
    assert_registry_rows(rows)


BEYOND = ConfirmatorySettings(n_folds=4, joint_folds=2, n_repeats=2, n_bootstrap=100, alpha=0.05)


def test_reference_label_table_lists_every_tf_against_every_other_gene(world):
    genes, _, _, labels, _ = world
    table = reference_label_table(labels)
    assert len(table) == labels.tf_rows.size * (len(genes) - 1)
    assert (table["perturbation"] != table["target"]).all()
    index = pd.Index(genes)
    assert (labels.membership[index.get_indexer(table["perturbation"]), index.get_indexer(table["target"])]
            == table["is_de"]).all()
    assert int(table["is_de"].sum()) == labels.n_positives


def test_beyond_features_finds_membership_signal_and_not_a_covariate_copy():
    genes, features, reference = planted_world(n_genes=100, n_tfs=20)  # 20 TFs: enough for a TF-level interval
    scores = planted_scores(genes, features, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateScoreWarning)
        rows = beyond_features_tests(reference, "planted", genes,
                                     [scores["informative"], scores["covariate"], random_score_set(100, 0)],
                                     features, min_targets=3, settings=BEYOND, seed=0)
    by_id = {row["test_id"]: row for row in rows}
    informative = by_id["A09:planted:attention_L2_head_mean:beyond_features"]
    assert informative["confirmatory"] and informative["ci_low"] > 0 and informative["p_value"] < 0.05
    assert informative["n"] == 20
    covariate = by_id["A09:planted:attention_L3_head_mean:beyond_features"]
    assert covariate["ci_low"] <= 0 <= covariate["ci_high"]  # variance plus tiny noise: nothing beyond the covariates
    assert not by_id["A09:planted:random:beyond_features"]["confirmatory"]
    for row in rows:
        assert (row["p_value"] < 0.05) == (row["ci_low"] > 0 or row["ci_high"] < 0)
    assert_registry_rows(rows)


def test_beyond_features_skips_a_reference_with_fewer_tfs_than_folds(world):
    genes, features, reference, _, scores = world
    three_tfs = reference[reference["source"].isin(genes[:3])]
    with pytest.warns(UserWarning, match="3 TF\\(s\\) with >= 3 targets.*fewer than the 4 folds"):
        assert beyond_features_tests(three_tfs, "planted", genes, [scores["informative"]], features, min_targets=3,
                                     settings=BEYOND, seed=0) == []


def test_beyond_features_needs_a_directed_reference(world):
    genes, features, reference, _, scores = world
    undirected = reference.assign(relation="interacts")
    with pytest.raises(ValueError, match="directed"):
        beyond_features_tests(undirected, "planted", genes, [scores["informative"]], features, min_targets=3,
                              settings=BEYOND, seed=0)


# ---------------------------------------------------------------------------------------------- A13


def test_partial_spearman_matches_the_formula_and_the_statsmodels_t_test():
    rng = np.random.default_rng(2)
    z = rng.normal(size=200)
    y = (z + rng.normal(size=200) > 1).astype(float)
    x = z + 0.5 * y + rng.normal(size=200)
    r, p = partial_spearman(x, y, z)
    rxy, rxz, ryz = (stats.spearmanr(a, b)[0] for a, b in ((x, y), (x, z), (y, z)))
    assert r == pytest.approx((rxy - rxz * ryz) / np.sqrt((1 - rxz ** 2) * (1 - ryz ** 2)))
    ranks = [stats.rankdata(v) for v in (x, y, z)]
    ols = sm.OLS(ranks[0], sm.add_constant(np.column_stack([ranks[2], ranks[1]]))).fit()
    assert p == pytest.approx(ols.pvalues[2])  # same t, df = n - 3
    assert ols.df_resid == 197


def test_partial_correlation_literals():
    x, z = np.array([1.0, 2, 3, 4, 5]), np.array([5.0, 3, 1, 2, 4])
    assert partial_spearman(x, x, z)[0] == pytest.approx(1.0)
    assert partial_spearman(x, z, z) == (0.0, 1.0)  # nothing of z is left once z is controlled


def test_planted_co_expression_explains_a_copy_but_not_membership(world):
    genes, _, reference, labels, scores = world
    rng = np.random.default_rng(5)
    coexpression = ScoreSet("correlation", NO_LAYER, "none", labels.membership + rng.normal(0, 0.7, (60, 60)))
    echo = ScoreSet("attention", 5, "head_mean", coexpression.matrix + rng.normal(0, 0.01, (60, 60)))
    independent = partial_correlation(scores["informative"], labels, coexpression)
    copied = partial_correlation(echo, labels, coexpression)
    off = labels.off_diagonal
    assert independent.raw_rho == pytest.approx(stats.spearmanr(scores["informative"].matrix[off],
                                                                labels.membership[off])[0])
    assert independent.retained_share > 0.6 and independent.partial_p < 1e-10
    # what is left of the copy is rank noise: |partial rho| within 3.5 sd of 0 (sd ~ 1 / sqrt(3540) = 0.017)
    assert copied.raw_rho > 0.1 and abs(copied.partial_rho) < 0.06 and abs(copied.retained_share) < 0.5
    rows = partial_correlation_tests(reference, "planted", genes, [echo, coexpression], coexpression)
    assert [row["test_id"] for row in rows] == ["A13:planted:attention_L5_head_mean"]
    assert rows[0]["n"] == 60 * 59 and not rows[0]["confirmatory"]
    assert_registry_rows(rows)


def test_partial_correlation_of_a_constant_score_warns(world):
    _, _, _, labels, scores = world
    with pytest.warns(DegenerateScoreWarning):
        result = partial_correlation(ScoreSet("attention", 0, "head_mean", np.ones((60, 60))), labels,
                                     scores["informative"])
    assert result.partial_rho == 0.0 and result.partial_p == 1.0 and np.isnan(result.retained_share)
