import numpy as np
import pytest
from scipy import stats

from scinterp_assets.core.stats.paired import one_sample_wilcoxon, paired_wilcoxon


def test_paired_matches_scipy_and_drops_nan_pairs():
    rng = np.random.default_rng(0)
    a = rng.normal(0.6, 0.1, 40)
    b = rng.normal(0.55, 0.1, 40)
    a[3] = np.nan
    result = paired_wilcoxon(a, b)
    keep = ~np.isnan(a)
    oracle = stats.wilcoxon(a[keep], b[keep])
    assert result.n == 39
    assert result.p_value == pytest.approx(oracle.pvalue)
    assert result.statistic == pytest.approx(oracle.statistic)
    assert result.effect == pytest.approx(np.mean(a[keep] - b[keep]))


def test_identical_samples_are_not_significant():
    values = np.linspace(0.4, 0.9, 12)
    assert paired_wilcoxon(values, values).p_value == 1.0


def test_one_sample_against_half():
    values = np.array([0.7, 0.8, 0.65, 0.9, 0.75, 0.6, 0.85, 0.72])
    assert one_sample_wilcoxon(values, 0.5).p_value == pytest.approx(stats.wilcoxon(values - 0.5).pvalue)


def test_shape_mismatch_refused():
    with pytest.raises(ValueError, match="shape"):
        paired_wilcoxon(np.ones(3), np.ones(4))
