"""Paired tests over perturbations (the independent unit of perturbation-first AUROC)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedComparison:
    """Paired comparison of method a against method b over n units (perturbations).

    effect is the mean paired difference a - b; p_value is the two-sided Wilcoxon signed-rank test
    (zero differences dropped, Pratt would keep them; we follow scipy's default "wilcox").
    """

    n: int
    mean_a: float
    mean_b: float
    effect: float
    statistic: float
    p_value: float


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> PairedComparison:
    """Wilcoxon signed-rank test of a vs b on the units where both are finite."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    n = int(both.sum())
    difference = a - b
    if n == 0:
        return PairedComparison(0, np.nan, np.nan, np.nan, np.nan, np.nan)
    if np.all(difference == 0):
        return PairedComparison(n, float(a.mean()), float(b.mean()), 0.0, np.nan, 1.0)
    result = stats.wilcoxon(a, b, alternative="two-sided")
    return PairedComparison(n, float(a.mean()), float(b.mean()), float(difference.mean()),
                            float(result.statistic), float(result.pvalue))


def one_sample_wilcoxon(values: np.ndarray, reference: float) -> PairedComparison:
    """Wilcoxon signed-rank test of values against a fixed reference (e.g. AUROC 0.5)."""
    values = np.asarray(values, dtype=np.float64)
    return paired_wilcoxon(values, np.full(values.shape, reference))
