import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.stats.auroc import (
    DegenerateScoreWarning,
    auroc,
    auroc_mann_whitney_p,
    resampled_auroc,
)


def test_hand_checkable_literals():
    # positives at scores 3 and 4 beat both negatives: perfect ranking
    assert auroc(np.array([0, 0, 1, 1], bool), np.array([1.0, 2.0, 3.0, 4.0])) == 1.0
    # one of four positive-negative pairs is won, one tied: (1 + 0.5) / 4
    assert auroc(np.array([1, 0, 1, 0], bool), np.array([2.0, 2.0, 0.0, 1.0])) == pytest.approx(0.375)


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_on_many_columns_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.2
    scores = rng.integers(0, 7, size=(300, 6)).astype(float)  # heavy ties
    expected = [roc_auc_score(labels, scores[:, k]) for k in range(6)]
    np.testing.assert_allclose(auroc(labels, scores), expected, atol=1e-12)


def test_nan_scores_rank_lowest():
    labels = np.array([1, 1, 0, 0], bool)
    scores = np.array([0.9, np.nan, 0.1, 0.2])
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, [0.9, -1.0, 0.1, 0.2]))


def test_constant_scores_give_half_with_warning():
    with pytest.warns(DegenerateScoreWarning):
        assert auroc(np.array([1, 0, 1, 0], bool), np.zeros(4)) == 0.5


def test_single_class_is_nan():
    assert np.isnan(auroc(np.ones(5, bool), np.arange(5.0)))


def test_mann_whitney_p_matches_scipy():
    rng = np.random.default_rng(3)
    labels = rng.random(200) < 0.3
    scores = rng.normal(size=200) + labels * 0.5
    area, p_value = auroc_mann_whitney_p(labels, scores)
    oracle = stats.mannwhitneyu(scores[labels], scores[~labels], method="asymptotic")
    assert area == pytest.approx(oracle.statistic / (labels.sum() * (~labels).sum()))
    assert p_value == pytest.approx(oracle.pvalue)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_auroc_matches_sklearn_sample_weights_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(60) < 0.3
    scores = np.round(rng.normal(size=60), 1)  # many ties
    weights = rng.integers(0, 4, size=(7, 60)).astype(float)
    expected = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
    assert resampled_auroc(labels, scores, weights) == pytest.approx(expected, abs=1e-12)
    assert resampled_auroc(labels, scores, np.ones((1, 60)))[0] == pytest.approx(auroc(labels, scores))


def test_resampled_auroc_hand_literals_and_undefined_resamples():
    labels = np.array([True, False, True, False])
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    # unit weights: pairs (0.9 > 0.5), (0.9 > 0.1), (0.5 = 0.5: half), (0.5 > 0.1) -> 3.5 / 4
    # second weighting drops both positives: undefined
    result = resampled_auroc(labels, scores, np.array([[1, 1, 1, 1], [0, 2, 0, 1.0]]))
    assert result[0] == pytest.approx(3.5 / 4) and np.isnan(result[1])
    with pytest.raises(ValueError, match="finite"):
        resampled_auroc(labels, np.array([0.9, np.nan, 0.5, 0.1]), np.ones((1, 4)))
