"""Multiple-testing corrections."""

from __future__ import annotations

import numpy as np


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) for a 1-D array, in input order.

    NaN p-values stay NaN and do not count towards the number of tests.
    """
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = ~np.isnan(p)
    n_tests = int(finite.sum())
    if n_tests == 0:
        return q
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    tested = p[finite]
    order = np.argsort(tested, kind="stable")
    scaled = tested[order] * n_tests / np.arange(1, n_tests + 1)
    # step-up: q_(i) = min over j >= i of p_(j) * m / j
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(n_tests)
    adjusted[order] = np.minimum(monotone, 1.0)
    q[finite] = adjusted
    return q


def benjamini_hochberg_rows(p_values: np.ndarray) -> np.ndarray:
    """BH along the last axis of a 2-D array (one family per row), vectorised; NaN-free input only."""
    p = np.asarray(p_values, dtype=np.float64)
    n_tests = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * n_tests / np.arange(1, n_tests + 1)
    monotone = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, np.minimum(monotone, 1.0), axis=-1)
    return adjusted
