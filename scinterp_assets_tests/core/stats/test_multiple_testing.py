import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from scinterp_assets.core.stats.multiple_testing import benjamini_hochberg, benjamini_hochberg_rows


@pytest.mark.parametrize("seed", range(4))
def test_matches_statsmodels(seed):
    p = np.random.default_rng(seed).random(57) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], atol=1e-12)


def test_hand_checkable():
    # m = 4: 0.01*4/1 = 0.04, 0.02*4/2 = 0.04, 0.03*4/3 = 0.04, 0.5*4/4 = 0.5
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.03, 0.5, 0.01, 0.02])), [0.04, 0.5, 0.04, 0.04])


def test_nan_not_counted():
    q = benjamini_hochberg(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2]], multipletests([0.01, 0.02], method="fdr_bh")[1])


def test_rows_match_per_row_oracle():
    p = np.random.default_rng(9).random((5, 30))
    expected = np.vstack([multipletests(row, method="fdr_bh")[1] for row in p])
    np.testing.assert_allclose(benjamini_hochberg_rows(p), expected, atol=1e-12)


def test_out_of_range_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg(np.array([0.2, 1.5]))
