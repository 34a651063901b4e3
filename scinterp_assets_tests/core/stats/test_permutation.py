import itertools

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.stats.permutation import gene_permutation_auroc, spearman_permutation_test


def _scipy_two_sided_p(x: np.ndarray, y: np.ndarray) -> float:
    """Exact permutation p of |rho| over every pairing of y with fixed x (scipy's enumeration)."""
    result = stats.permutation_test((y,), lambda y_: abs(stats.spearmanr(x, y_)[0]), permutation_type="pairings",
                                    n_resamples=np.inf, alternative="greater")
    return float(result.pvalue)


def test_three_monotone_layers_have_exact_p_one_third_never_zero():
    for aurocs in ([0.55, 0.60, 0.70], [0.70, 0.60, 0.55]):
        result = spearman_permutation_test(np.arange(3), np.array(aurocs), n_resamples=1000, seed=0)
        assert abs(result.rho) == pytest.approx(1.0)
        assert result.p_value == pytest.approx(2 / 6)  # the identity and the reversal reach |rho| = 1
        assert result.exact and result.n == 3 and result.n_permutations == 6


def test_four_monotone_layers_have_exact_p_one_twelfth():
    result = spearman_permutation_test(np.arange(4), np.array([0.5, 0.6, 0.7, 0.8]), n_resamples=1000, seed=0)
    assert result.p_value == pytest.approx(2 / 24)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
def test_exact_p_matches_scipy_permutation_test_on_random_inputs_with_ties(n):
    rng = np.random.default_rng(n)
    for _ in range(4):
        x = rng.permutation(n).astype(float)
        y = np.round(rng.uniform(0.5, 0.7, n), 1)  # rounding makes ties likely
        if np.all(y == y[0]):
            continue
        result = spearman_permutation_test(x, y, n_resamples=1000, seed=0)
        assert result.rho == pytest.approx(stats.spearmanr(x, y)[0])
        assert result.p_value == pytest.approx(_scipy_two_sided_p(x, y))


def test_exact_p_matches_scipy_two_sided_on_distinct_layers():
    x, y = np.arange(6.0), np.array([0.60, 0.58, 0.55, 0.57, 0.52, 0.61])
    oracle = stats.permutation_test((y,), lambda y_: stats.spearmanr(x, y_)[0], permutation_type="pairings",
                                    n_resamples=np.inf, alternative="two-sided")
    assert spearman_permutation_test(x, y, n_resamples=1000, seed=0).p_value == pytest.approx(oracle.pvalue)


def test_monte_carlo_beyond_the_exact_limit_is_seeded_and_never_zero():
    x, y = np.arange(12.0), np.linspace(0.5, 0.8, 12)
    result = spearman_permutation_test(x, y, n_resamples=999, seed=3)
    assert not result.exact and result.n_permutations == 999
    assert result.p_value == pytest.approx(1 / 1000)  # no random ordering of 12 reaches |rho| = 1 here
    again = spearman_permutation_test(x, y, n_resamples=999, seed=3)
    assert again == result


def test_monte_carlo_agrees_with_exact_enumeration():
    x, y = np.arange(6.0), np.array([0.60, 0.58, 0.55, 0.57, 0.52, 0.61])
    exact = spearman_permutation_test(x, y, n_resamples=1, seed=0)
    sampled = spearman_permutation_test(x, y, n_resamples=20000, seed=1, max_exact_n=5)
    assert exact.exact and not sampled.exact
    assert sampled.p_value == pytest.approx(exact.p_value, abs=0.015)  # ~4 Monte Carlo standard errors


def test_undefined_inputs_are_refused():
    with pytest.raises(ValueError, match=">= 3 finite pairs"):
        spearman_permutation_test(np.arange(2), np.array([0.5, 0.6]), n_resamples=10, seed=0)
    with pytest.raises(ValueError, match=">= 3 finite pairs"):
        spearman_permutation_test(np.arange(3), np.array([0.5, np.nan, 0.6]), n_resamples=10, seed=0)
    with pytest.raises(ValueError, match="constant"):
        spearman_permutation_test(np.arange(3), np.full(3, 0.6), n_resamples=10, seed=0)
    with pytest.raises(ValueError, match="equal-length"):
        spearman_permutation_test(np.arange(3), np.arange(4), n_resamples=10, seed=0)


def test_gene_permutation_auroc_against_exact_enumeration():
    """Five genes: all 120 relabellings enumerated by brute force (sklearn AUROC of each relabelled matrix)
    give the exact p; the Monte Carlo p over many relabellings must agree within its sampling error."""
    rng = np.random.default_rng(3)
    labels = np.array([[0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], bool)
    scores = np.round(rng.normal(size=(5, 5)), 1) + labels
    off = ~np.eye(5, dtype=bool)
    observed = roc_auc_score(labels[off], scores[off])
    permuted = [roc_auc_score(labels[off], scores[np.ix_(order, order)][off])
                for order in map(list, itertools.permutations(range(5)))]
    exact = np.mean(np.abs(np.array(permuted) - 0.5) >= abs(observed - 0.5) - 1e-12)
    result = gene_permutation_auroc(labels, scores, n_permutations=20000, seed=0)
    assert result.auroc == pytest.approx(observed)
    assert result.p_value == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-4)


def test_gene_permutation_auroc_is_never_zero_and_refuses_bad_input():
    labels = np.zeros((6, 6), dtype=bool)
    labels[0, 1:] = True
    scores = labels * 10.0 + np.arange(36).reshape(6, 6) / 100
    result = gene_permutation_auroc(labels, scores, n_permutations=99, seed=1)
    assert result.p_value >= 1 / 100
    with pytest.raises(ValueError, match="square"):
        gene_permutation_auroc(labels[:5], scores, n_permutations=10, seed=0)
    assert np.isnan(gene_permutation_auroc(np.zeros((4, 4), bool), np.ones((4, 4)), n_permutations=5, seed=0).p_value)
