"""Permutation tests for small paired samples (FRAMEWORK.md section 7: small-sample tests are exact and a
permutation p-value is never 0).

The Spearman trend test permutes the pairing of y with x: exactly, over all n! orderings, when n is small
enough to enumerate; otherwise over N seeded random orderings with
p = (1 + #{|rho_perm| >= |rho_obs|}) / (1 + N).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Largest n whose n! orderings are enumerated: 8! = 40,320 orderings (a 40,320 x 8 rank table, a few MB) take
# milliseconds; 10! would already need 3.6 million rows. Transformers of interest have 6 (Geneformer V1),
# 12 (scGPT, Geneformer V2-104M) or 18 layers, so shallow models get their exact p and deep ones Monte Carlo.
MAX_EXACT_PERMUTATION_N = 8
# |rho_perm| counts as "at least as extreme" within this tolerance: rho values that are equal in exact
# arithmetic (the identity ordering, mirrored orderings) can differ in the last bits of floating point.
_RHO_TOLERANCE = 1e-12


@dataclass(frozen=True)
class PermutationTrend:
    """Spearman rho of (x, y) with its two-sided permutation p-value.

    exact: True when all n! orderings were enumerated (p = #{|rho_perm| >= |rho_obs|} / n!, identity
    included); False for Monte Carlo (p = (1 + #{...}) / (1 + n_permutations)). Either way p > 0.
    """

    rho: float
    p_value: float
    n: int
    n_permutations: int
    exact: bool


def spearman_permutation_test(x: np.ndarray, y: np.ndarray, *, n_resamples: int, seed: int,
                              max_exact_n: int = MAX_EXACT_PERMUTATION_N) -> PermutationTrend:
    """Two-sided permutation test of Spearman's rho (average ranks for ties) between x and y, (n,) each.

    Orderings of y against fixed x are enumerated when n <= max_exact_n, else `n_resamples` seeded random
    orderings are drawn. Raises ValueError for n < 3, non-finite values, or a constant side (rho undefined).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be equal-length 1-D arrays, got {x.shape} and {y.shape}")
    n = x.size
    if n < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(
            f"a Spearman permutation test needs >= 3 finite pairs, got x={x.tolist()}, y={y.tolist()}")
    if np.all(x == x[0]) or np.all(y == y[0]):
        raise ValueError("Spearman rho is undefined when x or y is constant")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    x_centred = _centred_ranks(x)
    y_centred = _centred_ranks(y)
    scale = np.sqrt((x_centred**2).sum() * (y_centred**2).sum())
    observed = float(x_centred @ y_centred / scale)
    exact = n <= max_exact_n
    if exact:
        orderings = np.array(list(itertools.permutations(range(n))), dtype=np.intp)
    else:
        rng = np.random.default_rng(seed)
        orderings = rng.permuted(np.tile(np.arange(n), (n_resamples, 1)), axis=1)
    permuted = y_centred[orderings] @ x_centred / scale
    extreme = int((np.abs(permuted) >= abs(observed) - _RHO_TOLERANCE).sum())
    if exact:
        return PermutationTrend(observed, extreme / math.factorial(n), n, math.factorial(n), True)
    return PermutationTrend(observed, (1 + extreme) / (1 + n_resamples), n, n_resamples, False)


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    ranks = stats.rankdata(values, method="average")
    return ranks - ranks.mean()
