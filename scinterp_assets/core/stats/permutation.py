"""Permutation tests (FRAMEWORK.md section 7: small-sample tests are exact and a permutation p-value is
never 0): a Spearman trend over a few paired values, and a gene-pair AUROC tested by relabelling genes.

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
# A permuted statistic counts as "at least as extreme" within this tolerance: values that are equal in exact
# arithmetic (the identity ordering, mirrored orderings) can differ in the last bits of floating point.
_EXTREME_TOLERANCE = 1e-12


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
    extreme = int((np.abs(permuted) >= abs(observed) - _EXTREME_TOLERANCE).sum())
    if exact:
        return PermutationTrend(observed, extreme / math.factorial(n), n, math.factorial(n), True)
    return PermutationTrend(observed, (1 + extreme) / (1 + n_resamples), n, n_resamples, False)


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    ranks = stats.rankdata(values, method="average")
    return ranks - ranks.mean()


@dataclass(frozen=True)
class GenePermutationAuroc:
    """AUROC of a gene-pair score against gene-pair labels with its two-sided gene-label permutation p."""

    auroc: float
    p_value: float
    n_permutations: int


# Permuted positive positions gathered at once: bounds memory at ~40 MB of float64 per chunk.
_GATHER_CHUNK = 5_000_000


def gene_permutation_auroc(labels: np.ndarray, scores: np.ndarray, *, n_permutations: int,
                           seed: int | np.random.SeedSequence) -> GenePermutationAuroc:
    """AUROC over every ordered off-diagonal pair of G genes, tested by relabelling the genes.

    labels: (G, G) bool (the diagonal is ignored); scores: (G, G), NaN ranking lowest. Each permutation
    relabels the genes of the score matrix (the same permutation for its rows and columns, so a gene keeps
    its roles as source and target, and the diagonal stays the diagonal) and recomputes the AUROC against
    the fixed labels. When the score carries no information about the labels, any gene-level structure it
    has (hub rows, preferred targets) survives relabelling unchanged, so the permutation distribution is the
    AUROC's null distribution whatever that structure is (the quadratic assignment procedure), where a
    Mann-Whitney test assumes independent pairs. Ranks are computed once; a permutation costs one gather
    over the positive pairs. p = (1 + #{|A_perm - 0.5| >= |A_obs - 0.5|}) / (1 + N), never 0.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != y.shape[1] or s.shape != y.shape:
        raise ValueError(f"labels and scores must be one square (G, G) shape; got {y.shape} and {s.shape}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    n = y.shape[0]
    off_diagonal = ~np.eye(n, dtype=bool)
    ranks = np.zeros((n, n))
    ranks[off_diagonal] = stats.rankdata(np.where(np.isnan(s), -np.inf, s)[off_diagonal])
    sources, targets = np.nonzero(y & off_diagonal)
    n_pos = sources.size
    n_neg = int(off_diagonal.sum()) - n_pos
    if n_pos == 0 or n_neg == 0:
        return GenePermutationAuroc(math.nan, math.nan, 0)

    def area(rank_sums: np.ndarray) -> np.ndarray:
        return (rank_sums - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)

    observed = float(area(ranks[sources, targets].sum()))
    rng = np.random.default_rng(seed)
    extreme = 0
    chunk = max(1, _GATHER_CHUNK // n_pos)
    for start in range(0, n_permutations, chunk):
        relabel = np.argsort(rng.random((min(chunk, n_permutations - start), n)), axis=1)
        permuted = area(ranks[relabel[:, sources], relabel[:, targets]].sum(axis=1))
        extreme += int(np.sum(np.abs(permuted - 0.5) >= abs(observed - 0.5) - _EXTREME_TOLERANCE))
    return GenePermutationAuroc(observed, (1 + extreme) / (1 + n_permutations), n_permutations)
