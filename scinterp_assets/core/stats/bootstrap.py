"""Bootstrap resampling and the two-sided test that agrees with its own interval.

resample_counts draws multiplicities of independent units (perturbations, targets, TFs): resample b takes
n units with replacement and unit i enters it counts[b, i] times. Statistics re-weight stored values by
these counts instead of re-running anything.

bootstrap_test turns B resampled values of an effect into a two-sided percentile interval and a two-sided
p-value that agree by construction:

    p = min(1, 2 min(1 + #{d <= 0}, 1 + #{d >= 0}) / (1 + B))          (never 0)
    ci_low = d_(j), ci_high = d_(B + 1 - j)  (order statistics, 1-based),  j = ceil(alpha (1 + B) / 2) - 1

so that p < alpha exactly when the interval excludes 0 (ci_low > 0 or ci_high < 0). For B = 200 and
alpha = 0.05, j = 5: the usual 2.5% / 97.5% percentiles. With B <= 2 / alpha - 1 resamples (39 at 0.05)
no outcome can reach p < alpha, and such a bootstrap is refused.

wald_test is the normal-theory counterpart for a mean over many independent units (a mean over
perturbations): interval = effect -/+ z_(1 - alpha/2) SE with SE the standard deviation of the resampled
effects, p = 2 (1 - Phi(|effect| / SE)). Interval and p agree by construction as well, and p is continuous,
so a framework-wide Benjamini-Hochberg family is not limited by a resampling floor of 2 / (1 + B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def resample_counts(n_units: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_units) float64 multiplicities of a bootstrap over units; each row sums to n_units."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if n_units < 1:
        raise ValueError(f"n_units must be >= 1, got {n_units}")
    draws = np.random.default_rng(seed).integers(0, n_units, size=(n_resamples, n_units))
    flat = (draws + np.arange(n_resamples)[:, None] * n_units).ravel()
    return np.bincount(flat, minlength=n_resamples * n_units).reshape(n_resamples, -1).astype(np.float64)


def _rank(n_resamples: int, alpha: float) -> int:
    return math.ceil(round(alpha * (1 + n_resamples) / 2, 12)) - 1


def interval_rank(n_resamples: int, alpha: float) -> int:
    """j of the module docstring: the 1-based order statistic of the lower interval bound."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rank = _rank(n_resamples, alpha)
    if rank < 1:
        fewest = next(n for n in range(n_resamples + 1, n_resamples + 10**6) if _rank(n, alpha) >= 1)
        raise ValueError(
            f"{n_resamples} bootstrap resamples cannot reject at alpha = {alpha}: use at least {fewest} "
            "(the configured bootstrap resamples)"
        )
    return rank


@dataclass(frozen=True)
class BootstrapTest:
    """Two-sided percentile interval and the matching p-value of one effect; n_resamples: finite ones."""

    ci_low: float
    ci_high: float
    p_value: float
    n_resamples: int

    @property
    def excludes_zero(self) -> bool:
        return bool(self.ci_low > 0 or self.ci_high < 0)


def bootstrap_test(replicates: np.ndarray, alpha: float = 0.05) -> BootstrapTest:
    """Interval and p-value (module docstring) from resampled effects; NaN resamples (effect undefined in
    that resample) are left out. All NaN: NaN interval, p = 1."""
    values = np.sort(np.asarray(replicates, dtype=np.float64).ravel())
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return BootstrapTest(math.nan, math.nan, 1.0, 0)
    rank = interval_rank(n, alpha)
    at_or_below = int(np.searchsorted(values, 0.0, side="right"))
    at_or_above = n - int(np.searchsorted(values, 0.0, side="left"))
    p_value = min(1.0, 2 * min(1 + at_or_below, 1 + at_or_above) / (1 + n))
    return BootstrapTest(float(values[rank - 1]), float(values[n - rank]), p_value, n)


def wald_p_value(estimate: float, null_value: float, standard_error: float) -> float:
    """Two-sided normal p of (estimate - null_value) / standard_error; 1 when both are 0, 0 when only the SE is."""
    difference = estimate - null_value
    if not np.isfinite(difference) or not np.isfinite(standard_error):
        return float("nan")
    if standard_error == 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * stats.norm.sf(abs(difference) / standard_error))


def wald_test(effect: float, replicates: np.ndarray, alpha: float = 0.05) -> BootstrapTest:
    """Normal interval and p-value of `effect` (module docstring) with the SE of its resampled values; NaN
    resamples are left out. Fewer than two finite resamples or a NaN effect: NaN interval, p NaN."""
    values = np.asarray(replicates, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if len(values) < 2 or not np.isfinite(effect):
        return BootstrapTest(math.nan, math.nan, math.nan, len(values))
    standard_error = float(np.std(values, ddof=1))
    half_width = float(stats.norm.ppf(1 - alpha / 2)) * standard_error
    return BootstrapTest(effect - half_width, effect + half_width, wald_p_value(effect, 0.0, standard_error),
                         len(values))
