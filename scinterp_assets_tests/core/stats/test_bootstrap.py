"""The bootstrap's resampling and the two-sided test whose p-value agrees with its interval."""

import math

import numpy as np
import pytest

from scinterp_assets.core.stats.bootstrap import bootstrap_test, interval_rank, resample_counts, wald_p_value, wald_test


def test_resample_counts_are_seeded_multiplicities():
    counts = resample_counts(30, 5, seed=1)
    assert counts.shape == (5, 30) and (counts.sum(axis=1) == 30).all()
    assert (counts == np.round(counts)).all() and (counts == 0).any()
    assert (counts == resample_counts(30, 5, seed=1)).all()
    assert not (counts == resample_counts(30, 5, seed=2)).all()


def test_interval_rank_is_the_usual_percentile_and_refuses_too_few_resamples():
    assert interval_rank(200, 0.05) == 5  # 2.5% of 200
    assert interval_rank(999, 0.05) == 24
    assert interval_rank(40, 0.05) == 1
    with pytest.raises(ValueError, match="cannot reject at alpha = 0.05: use at least 40"):
        interval_rank(39, 0.05)
    assert interval_rank(33, 0.06) == 1
    with pytest.raises(ValueError, match="use at least 33"):
        interval_rank(32, 0.06)


def test_hand_checkable_interval_and_p():
    # 40 resamples at alpha 0.05: j = ceil(0.05 x 41 / 2) - 1 = 1, the extremes
    values = np.arange(1.0, 41.0)  # all above 0
    test = bootstrap_test(values, 0.05)
    assert (test.ci_low, test.ci_high) == (1.0, 40.0)
    assert test.p_value == pytest.approx(2 / 41) and test.excludes_zero
    shifted = bootstrap_test(values - 1.0, 0.05)  # one value is exactly 0: counts on both sides
    assert shifted.ci_low == 0.0 and shifted.p_value == pytest.approx(4 / 41) and not shifted.excludes_zero


@pytest.mark.parametrize(("n", "alpha"), [(40, 0.05), (199, 0.05), (200, 0.05), (1000, 0.05), (40, 0.1),
                                          (199, 0.1), (200, 0.01), (1000, 0.01)])
def test_p_below_alpha_exactly_when_the_interval_excludes_zero(n, alpha):
    rng = np.random.default_rng(n)
    for shift in np.linspace(-4, 4, 81):
        replicates = rng.normal(shift, 1.0, n)
        replicates[rng.random(n) < 0.1] = 0.0  # ties at zero, as degenerate resamples give
        test = bootstrap_test(replicates, alpha)
        assert (test.p_value < alpha) == test.excludes_zero, (shift, test)
        assert 0 < test.p_value <= 1


def test_nan_resamples_are_left_out_and_all_nan_is_no_evidence():
    values = np.r_[np.arange(1.0, 41.0), np.nan, np.nan]
    assert bootstrap_test(values).n_resamples == 40
    empty = bootstrap_test(np.full(50, np.nan))
    assert math.isnan(empty.ci_low) and empty.p_value == 1.0 and empty.n_resamples == 0


def test_wald_p_value_literals():
    assert wald_p_value(0.5 + 1.959963984540054, 0.5, 1.0) == pytest.approx(0.05)
    assert wald_p_value(0.5, 0.5, 0.0) == 1.0 and wald_p_value(0.6, 0.5, 0.0) == 0.0


def test_wald_test_interval_and_p_agree_and_use_the_resampled_sd():
    rng = np.random.default_rng(0)
    for effect in (0.0, 0.01, 0.05, -0.08, 0.3):
        replicates = effect + rng.normal(0, 0.04, 200)
        test = wald_test(effect, replicates, 0.05)
        sd = np.std(replicates, ddof=1)
        assert test.ci_high - test.ci_low == pytest.approx(2 * 1.959963984540054 * sd)
        assert (test.p_value < 0.05) == test.excludes_zero
    assert math.isnan(wald_test(0.1, np.array([0.1, np.nan]), 0.05).p_value)  # one finite resample: no SE
