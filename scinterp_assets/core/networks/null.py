"""Degree-preserving null networks: a vectorised, verified curveball sampler (FRAMEWORK.md section 5, A10).

A reference network restricted to a gene universe is a set of ordered pairs (source, target) over genes
0..n-1 without self pairs or duplicates. `degree_preserving_null` rewires it keeping every node's out- and
in-degree (undirected references: pass both orientations and `directed=False`; every node's degree is kept
and both orientations stay consistent), verifies every draw and returns them with their diagnostics.

The chain (why it samples uniformly)
------------------------------------
*Directed* (Strona et al. 2014; Carstens 2016; global curveball, Carstens et al. 2018). The state is the set
of target lists of the rows (nodes with out-degree > 0; rows with none never trade). One *round* draws a
uniformly random perfect matching of the rows and trades every pair at once: for rows i and j the tradable
targets are those in exactly one of the two lists, except that j stays in i's list and i in j's (no self
loops); they are pooled and i keeps a uniformly random subset of its former count, j gets the rest. Pairs
touch disjoint rows, so trading them together equals trading them one after another; each trade, given the
matching, is symmetric (the reverse trade has the same pool and the same probability), so a round is
symmetric and leaves the uniform distribution invariant. Curveball trades alone do not connect every
directed realisation without self loops (the two orientations of a directed 3-cycle on 3 nodes are
unreachable from each other), so every round is followed by one *triangle reorientation* proposal: pick an
edge (u, v) uniformly and a row w uniformly; if u -> v -> w -> u is a directed 3-cycle none of whose
reverse edges exists, reverse it. Proposal probabilities are equal both ways (same edge count, same rows),
so this step is symmetric too. Trades contain every single edge swap, and swaps plus 3-cycle
reorientations connect all realisations (Rao et al. 1996; Berger and Mueller-Hannemann 2010); every step
can leave the state unchanged (aperiodic). Hence the draws converge to the uniform distribution over
simple directed graphs with the observed degrees and no self loops.

*Undirected.* Trades of different pairs interact through the edges between them, so a round here draws a
uniformly random set S of 2 * max(1, R // 4) of the R nodes with degree > 0, pairs S at random and lets
each pair (i, j) trade only neighbours outside S (those in exactly one of the two neighbour lists),
updating both orientations. Trades then touch disjoint adjacency entries, each is symmetric, and S and the
pairing do not depend on the state, so a round is symmetric. Any double-edge swap {i, b}, {j, d} ->
{i, d}, {j, b} has positive probability (a round where i and j are paired, b and d lie outside S and every
other pair keeps its lists), and swaps connect simple undirected realisations (Taylor 1981). About half the
edges can move per round instead of all of them.

Draws are *independent chains*, each started at the observed network and run for `trades_per_draw` trades
(whole rounds): draws are exchangeable and independent given the observed network, which is what a
permutation p-value assumes; thinning one chain would cost the same number of trades per draw. Chains run
in blocks, vectorised over chains and over all pairs of a round (numpy only). The first block's chains are
run to twice `trades_per_draw` to record the mixing curve (mean Jaccard distance from the observed network
against trades), so the curve shows whether the plateau was reached where draws are taken.

The default, DEFAULT_TRADES_PER_ROW = 20 trades per row (40 global rounds directed, 80 undirected), comes
from mixing curves measured on the benchmark's network (`benchmarks/degree_preserving_null.py`: 200 TFs with
log-normal out-degree, median 29, max 299, over 2,000 genes, 10,011 edges): the mean Jaccard distance
reaches 96% of its plateau (0.933) after 10 rounds, 99.4% after 20, 99.9% after 30 and is flat from 40.
With a heavier tail (max out-degree 402) it is at 98.5% after 20 rounds and 99.8% after 40; a network where
one TF regulates 84% of the genes is at 99% after 40 rounds. Hubs set the pace: a hub trading with a small
partner exchanges at most the partner's share of its pool per round. An undirected network of 10,000 edges
over 1,893 nodes plateaus (0.985) after about 50 of its 80 rounds. Check the mixing curve of dense or
hub-dominated networks, and raise trades_per_draw where it is still climbing at the point of use.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse, stats

DEFAULT_TRADES_PER_ROW = 20  # trades per row per draw; the module docstring gives the mixing measurement
DEFAULT_MIN_MEDIAN_DISTANCE = 0.05  # median Jaccard distance below which draws are flagged as barely mixed
# draws are flagged as barely mixed when the smallest permutation p they allow, (1 + draws equal to the
# observed network) / (1 + draws), exceeds this: a null test at that level has no power
DEFAULT_MAX_SMALLEST_P = 0.05
_BLOCK_BYTES = 16 * 2**20  # working memory of one block of chains (dense row x node lookup + edge arrays)
_MAX_CHAINS_PER_BLOCK = 64
_DENSE_LOOKUP_MAX_CELLS = 2**26  # n_nodes^2 up to this: membership by a dense bool table, else searchsorted


class NullVerificationError(RuntimeError):
    """A null draw broke a margin or produced a self or duplicate edge: the sampler is wrong, never use it."""


class NullMixingWarning(UserWarning):
    """The null draws barely differ from the observed network (median Jaccard distance near 0)."""


@dataclass(frozen=True)
class NullDiagnostics:
    """Verification of a set of null draws against the observed network.

    jaccard_distance: (n_draws,) float64, 1 - |draw & observed| / |draw | observed| per draw.
    margins_preserved: every draw has exactly the observed out- and in-degree of every node.
    self_edges, duplicate_edges: totals over all draws (must be 0). asymmetric_edges: for undirected
    networks, edges whose reverse orientation is missing (must be 0; always 0 for directed).
    mixing_curve: columns `trades`, `mean_jaccard_distance` (one chain block's mean distance after each
    round; empty when not recorded).
    unique_realisation: the observed network is the only simple graph with its degrees (exact, structural
    check: no edge swap and no 3-cycle reorientation is possible), so no mixing is possible and every draw
    equals it.
    expected_distance: approximate Jaccard distance of a random graph with these degrees (Chung-Lu edge
    probabilities min(1, d_out(i) d_in(j) / m)); a reference scale, not a test.
    low_mixing: the median distance is below `min_median_distance`, or the smallest permutation p the draws
    allow, (1 + draws equal to the observed network) / (1 + draws), exceeds `max_smallest_p`.
    """

    jaccard_distance: np.ndarray
    margins_preserved: bool
    self_edges: int
    duplicate_edges: int
    asymmetric_edges: int
    mixing_curve: pd.DataFrame
    unique_realisation: bool
    expected_distance: float
    min_median_distance: float = DEFAULT_MIN_MEDIAN_DISTANCE
    max_smallest_p: float = DEFAULT_MAX_SMALLEST_P

    def __post_init__(self) -> None:
        if self.jaccard_distance.ndim != 1:
            raise ValueError(f"jaccard_distance must be 1-D, got shape {self.jaccard_distance.shape}")
        missing = {"trades", "mean_jaccard_distance"} - set(self.mixing_curve.columns)
        if missing:
            raise ValueError(f"mixing_curve lacks columns {sorted(missing)}")

    @property
    def passed(self) -> bool:
        """Every draw is a valid degree-preserving rewiring (says nothing about mixing)."""
        broken = self.self_edges + self.duplicate_edges + self.asymmetric_edges
        return self.margins_preserved and broken == 0

    @property
    def median_distance(self) -> float:
        return float(np.median(self.jaccard_distance)) if self.jaccard_distance.size else float("nan")

    @property
    def identical_to_observed(self) -> int:
        return int((self.jaccard_distance == 0).sum())

    @property
    def smallest_p(self) -> float:
        """The smallest permutation p-value, (1 + #null >= observed) / (1 + N), these draws allow: draws equal
        to the observed network always count."""
        return (1 + self.identical_to_observed) / (1 + self.jaccard_distance.size)

    @property
    def low_mixing(self) -> bool:
        n_draws = self.jaccard_distance.size
        return bool(n_draws and (self.median_distance < self.min_median_distance
                                 or self.smallest_p > self.max_smallest_p))

    @property
    def mixing_problem(self) -> str:
        """Why the draws cannot serve as a null ("" when they can): a unique realisation, too many draws equal
        to the observed network, or a median distance below the minimum."""
        if self.unique_realisation:
            return "unique realisation: the network is the only simple graph with its degrees, so every draw equals it"
        n_draws = self.jaccard_distance.size
        problems = []
        if n_draws and self.smallest_p > self.max_smallest_p:
            problems.append(f"{self.identical_to_observed} of {n_draws} draws equal the observed network, so no "
                            f"permutation p can fall below {self.smallest_p:.3g} (> {self.max_smallest_p:g})")
        if n_draws and self.median_distance < self.min_median_distance:
            problems.append(f"median Jaccard distance from the observed network {self.median_distance:.3g} < "
                            f"{self.min_median_distance:g} (a random graph with these degrees is at "
                            f"~{self.expected_distance:.3g})")
        return "; ".join(problems)

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-friendly dict for asset metadata."""
        distances = self.jaccard_distance
        return {
            "n_draws": int(distances.size),
            "median_jaccard_distance": self.median_distance,
            "min_jaccard_distance": float(distances.min()) if distances.size else float("nan"),
            "max_jaccard_distance": float(distances.max()) if distances.size else float("nan"),
            "identical_to_observed": self.identical_to_observed,
            "expected_jaccard_distance": self.expected_distance,
            "margins_preserved": self.margins_preserved,
            "self_edges": self.self_edges,
            "duplicate_edges": self.duplicate_edges,
            "asymmetric_edges": self.asymmetric_edges,
            "unique_realisation": self.unique_realisation,
            "low_mixing": self.low_mixing,
            "mixing_problem": self.mixing_problem,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class NullDraws:
    """Degree-preserving null draws of one network.

    codes: (n_draws, n_edges) int32 (int64 when n_nodes^2 >= 2^31), edge codes source * n_nodes + target,
    sorted within each draw. Undirected networks hold both orientations of every edge. trades_per_draw is
    the number of trades each draw's chain actually ran (whole rounds).
    """

    codes: np.ndarray
    n_nodes: int
    directed: bool
    seed: int
    trades_per_draw: int
    diagnostics: NullDiagnostics = field(repr=False)

    def __post_init__(self) -> None:
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be (n_draws, n_edges), got shape {self.codes.shape}")
        if self.diagnostics.jaccard_distance.shape != (self.codes.shape[0],):
            raise ValueError("diagnostics hold a different number of draws than codes")

    @property
    def n_draws(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.codes.shape[1])

    @property
    def sources(self) -> np.ndarray:
        """(n_draws, n_edges) source node of each edge."""
        return self.codes // self.n_nodes

    @property
    def targets(self) -> np.ndarray:
        """(n_draws, n_edges) target node of each edge."""
        return self.codes % self.n_nodes

    @property
    def edges(self) -> np.ndarray:
        """(n_draws, n_edges, 2) int: (source, target) pairs."""
        return np.stack([self.sources, self.targets], axis=-1)

    def summary(self) -> dict[str, Any]:
        """The diagnostics' summary plus the sampler's settings and `mixing_at_use_over_plateau`: the mixing
        curve where draws are taken over its mean in the last quarter (about 1 once it has plateaued)."""
        curve = self.diagnostics.mixing_curve
        distance = curve["mean_jaccard_distance"].to_numpy()
        at_use = distance[curve["trades"].to_numpy() == self.trades_per_draw]
        plateau = float(distance[-max(1, distance.size // 4) :].mean()) if distance.size else float("nan")
        ratio = float(at_use[0] / plateau) if at_use.size and plateau > 0 else float("nan")
        return {
            **self.diagnostics.summary(),
            "n_nodes": self.n_nodes,
            "n_edges": self.n_edges,
            "directed": self.directed,
            "seed": self.seed,
            "trades_per_draw": self.trades_per_draw,
            "mixing_at_use_over_plateau": ratio,
        }


# ----------------------------------------------------------------------------------------------------------
# Edge codes and validation


def _code_dtype(n_nodes: int) -> np.dtype:
    return np.dtype(np.int32) if n_nodes * n_nodes < 2**31 else np.dtype(np.int64)


def edge_codes(sources: np.ndarray, targets: np.ndarray, n_nodes: int) -> np.ndarray:
    """Sorted codes source * n_nodes + target of a valid edge list; raises on self pairs, duplicates and
    indices out of range."""
    s = np.asarray(sources)
    t = np.asarray(targets)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError(f"sources and targets must be 1-D of equal length, got {s.shape} and {t.shape}")
    if not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)) and s.size:
        raise ValueError("sources and targets must be integer node indices")
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be positive, got {n_nodes}")
    if s.size and (min(s.min(), t.min()) < 0 or max(s.max(), t.max()) >= n_nodes):
        raise ValueError(f"node indices must lie in [0, {n_nodes})")
    if (s == t).any():
        raise ValueError(f"{int((s == t).sum())} self pair(s): drop them before building the null")
    codes = np.sort(s.astype(np.int64) * n_nodes + t.astype(np.int64)).astype(_code_dtype(n_nodes))
    duplicates = int((np.diff(codes) == 0).sum())
    if duplicates:
        raise ValueError(f"{duplicates} duplicate pair(s): drop them before building the null")
    return codes


def _reverse_codes(codes: np.ndarray, n_nodes: int) -> np.ndarray:
    return (codes % n_nodes) * n_nodes + codes // n_nodes


# ----------------------------------------------------------------------------------------------------------
# Verification


def verify_null(
    observed: np.ndarray,
    draws: np.ndarray,
    n_nodes: int,
    *,
    directed: bool = True,
    mixing_curve: pd.DataFrame | None = None,
    min_median_distance: float = DEFAULT_MIN_MEDIAN_DISTANCE,
    max_smallest_p: float = DEFAULT_MAX_SMALLEST_P,
) -> NullDiagnostics:
    """Diagnostics of null draws (codes) against the observed network (codes); never raises on bad draws.

    observed: (n_edges,) edge codes. draws: (n_draws, n_edges) edge codes, any order within a draw.
    """
    obs = np.sort(np.asarray(observed).astype(np.int64))
    codes = np.asarray(draws).astype(np.int64)
    if codes.ndim != 2 or codes.shape[1] != obs.size:
        raise ValueError(f"draws must be (n_draws, {obs.size}), got shape {codes.shape}")
    n_draws, m = codes.shape
    sources, targets = codes // n_nodes, codes % n_nodes
    if codes.size and (codes.min() < 0 or codes.max() >= n_nodes * n_nodes):
        raise ValueError("draw codes out of range for n_nodes")
    self_edges = int((sources == targets).sum())

    def degrees(ends: np.ndarray) -> np.ndarray:
        offset = np.arange(n_draws)[:, None] * n_nodes
        return np.bincount((ends + offset).ravel(), minlength=n_draws * n_nodes).reshape(n_draws, n_nodes)

    observed_out = np.bincount(obs // n_nodes, minlength=n_nodes)
    observed_in = np.bincount(obs % n_nodes, minlength=n_nodes)
    margins = bool((degrees(sources) == observed_out).all() and (degrees(targets) == observed_in).all())
    ordered = codes if bool((np.diff(codes, axis=1) > 0).all()) else np.sort(codes, axis=1)
    duplicate_edges = int((np.diff(ordered, axis=1) == 0).sum())
    asymmetric = 0
    if not directed:
        reverse = np.sort(_reverse_codes(ordered, n_nodes), axis=1)
        asymmetric = int(m * n_draws - _row_overlap(ordered, reverse).sum())
    overlap = _overlap_with(obs, codes, n_nodes)
    union = 2 * m - overlap
    distance = np.where(union > 0, 1.0 - overlap / np.maximum(union, 1), 0.0)
    curve = mixing_curve if mixing_curve is not None else pd.DataFrame(
        {"trades": pd.Series(dtype="int64"), "mean_jaccard_distance": pd.Series(dtype="float64")}
    )
    return NullDiagnostics(
        jaccard_distance=distance.astype(np.float64),
        margins_preserved=margins,
        self_edges=self_edges,
        duplicate_edges=duplicate_edges,
        asymmetric_edges=asymmetric,
        mixing_curve=curve,
        unique_realisation=unique_realisation(obs, n_nodes, directed=directed),
        expected_distance=expected_jaccard_distance(obs, n_nodes),
        min_median_distance=min_median_distance,
        max_smallest_p=max_smallest_p,
    )


def _overlap_with(observed_sorted: np.ndarray, codes: np.ndarray, n_nodes: int) -> np.ndarray:
    """(n_draws,) number of each draw's codes that are observed edges."""
    if n_nodes * n_nodes <= _DENSE_LOOKUP_MAX_CELLS:
        member = np.zeros(n_nodes * n_nodes, dtype=bool)
        member[observed_sorted] = True
        return member[codes].sum(axis=1)
    if observed_sorted.size == 0:
        return np.zeros(codes.shape[0], dtype=np.int64)
    position = np.minimum(np.searchsorted(observed_sorted, codes), observed_sorted.size - 1)
    return (observed_sorted[position] == codes).sum(axis=1)


def _row_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) size of the intersection of each row of a with the same row of b (rows sorted, no duplicates)."""
    offset = np.arange(a.shape[0])[:, None] * (int(max(a.max(initial=0), b.max(initial=0))) + 1)
    flat_a, flat_b = (a + offset).ravel(), (b + offset).ravel()
    hit = np.isin(flat_a, flat_b, assume_unique=True).reshape(a.shape)
    return hit.sum(axis=1)


def unique_realisation(observed: np.ndarray, n_nodes: int, *, directed: bool = True) -> bool:
    """Whether the network is the only simple graph (no self loops) with its degrees.

    Exact: unique iff no edge swap is possible (two rows i, j where i has a target outside j's list other
    than j, and j one outside i's other than i) and, for directed graphs, no directed 3-cycle whose
    reverse edges are all absent exists (swaps and 3-cycle reorientations connect all realisations).
    """
    codes = np.asarray(observed).astype(np.int64)
    if codes.size == 0:
        return True
    adjacency = sparse.csr_matrix(
        (np.ones(codes.size, dtype=np.int32), (codes // n_nodes, codes % n_nodes)), shape=(n_nodes, n_nodes)
    )
    rows = np.flatnonzero(np.diff(adjacency.indptr))
    block = adjacency[rows]
    degree = np.diff(block.indptr)
    among_rows = block[:, rows].toarray().astype(np.int64)  # [a, b] = 1 if row b's node is a target of row a
    chunk = 512
    for start in range(0, rows.size, chunk):
        stop = min(start + chunk, rows.size)
        shared = (block[start:stop] @ block.T).toarray().astype(np.int64)
        only_here = degree[start:stop, None] - shared - among_rows[start:stop]  # i's targets j could take
        only_there = degree[None, :] - shared - among_rows[:, start:stop].T  # j's targets i could take
        swappable = (only_here > 0) & (only_there > 0)
        swappable[np.arange(stop - start), np.arange(start, stop)] = False
        if swappable.any():
            return False
    if directed:
        one_way = adjacency - adjacency.multiply(adjacency.T)
        if (one_way @ one_way).multiply(one_way.T).sum() > 0:
            return False
    return True


def expected_jaccard_distance(observed: np.ndarray, n_nodes: int) -> float:
    """Approximate Jaccard distance of a random graph with the observed degrees from the observed network,
    with Chung-Lu edge probabilities min(1, d_out(i) d_in(j) / m). It ignores the simple-graph constraints
    (no self loops, no multi-edges), so it is close for sparse networks, exact for stars and complete
    bipartite blocks, and off for dense ones (the complete digraph on 4 nodes gets 0.4 instead of 0)."""
    codes = np.asarray(observed).astype(np.int64)
    m = codes.size
    if m == 0:
        return 0.0
    sources, targets = codes // n_nodes, codes % n_nodes
    out_degree = np.bincount(sources, minlength=n_nodes)
    in_degree = np.bincount(targets, minlength=n_nodes)
    overlap = np.minimum(1.0, out_degree[sources] * in_degree[targets] / m).sum()
    return float(1.0 - overlap / (2 * m - overlap))


# ----------------------------------------------------------------------------------------------------------
# The sampler


class _ChainBlock:
    """C chains of the curveball sampler, all started at the observed network, in flat arrays.

    Rows are the nodes with out-degree > 0 (R of them); chain c's row r has the global row id c * R + r.
    State: `row` (C * m,) global row id of each edge slot's source, `target` (C * m,) its target node,
    `adjacent` (C * R * n,) bool, True at row_id * n + node where the row points to the node. Undirected
    networks store both orientations; `mate` holds the slot of each slot's reverse.
    """

    def __init__(self, chains: int, obs_codes: np.ndarray, n_nodes: int, directed: bool) -> None:
        n, m, C = n_nodes, obs_codes.size, chains
        sources, targets = obs_codes // n, obs_codes % n
        self.n, self.m, self.C, self.directed = n, m, C, directed
        self.row_node = np.unique(sources)
        R = self.R = self.row_node.size
        self.node_row = np.full(n, -1, dtype=np.int64)
        self.node_row[self.row_node] = np.arange(R)
        index = np.int32 if C * max(R, 1) * n < 2**31 and C * m < 2**31 else np.int64
        self.index = index
        self.chain_row0 = (np.arange(C, dtype=index) * R)[:, None]  # (C, 1) first global row id of each chain
        self.obs_local = (self.node_row[sources] * n + targets).astype(index)  # row * n + target, one chain
        self.row = (self.node_row[sources].astype(index)[None, :] + self.chain_row0).ravel()
        self.target = np.tile(targets.astype(index), C)
        self.global_row_node = np.tile(self.row_node.astype(index), C)
        self.adjacent = np.zeros(C * R * n, dtype=bool)
        self.adjacent[self.row.astype(np.int64) * n + self.target] = True
        if not directed:
            mate = np.searchsorted(obs_codes, _reverse_codes(obs_codes, n)).astype(index)
            self.mate = (mate[None, :] + (np.arange(C, dtype=index) * m)[:, None]).ravel()
            self.slot_chain_node0 = np.repeat(np.arange(C, dtype=index) * n, m)  # chain * n of each slot
        self.pairs_per_round = _pairs_per_round(R, directed)
        P = max(self.pairs_per_round, 1)
        self.random_bits = 63 - max(1, int(C * P - 1).bit_length())  # sort keys: (group, random bits)

    # -- one global curveball round -------------------------------------------------------------------
    def trade_round(self, rng: np.random.Generator) -> None:
        C, R, P, n = self.C, self.R, self.pairs_per_round, self.n
        if P == 0:
            return
        order = np.argsort(rng.random((C, R)), axis=1).astype(self.index) + self.chain_row0
        first, second = order[:, 0 : 2 * P : 2].ravel(), order[:, 1 : 2 * P : 2].ravel()
        partner = np.arange(C * R, dtype=self.index)  # an unpaired row is its own partner: nothing tradable
        partner[first], partner[second] = second, first
        group = np.zeros(C * R, dtype=np.int64)
        group[first] = group[second] = np.arange(C * P)
        is_first = np.zeros(C * R, dtype=bool)
        is_first[first] = True

        edge_partner = partner[self.row]
        # shared targets stay; so does j in i's list (j may not enter its own list)
        fixed = self.adjacent[edge_partner * n + self.target]  # `index` dtype holds C * R * n
        fixed |= self.target == self.global_row_node[edge_partner]
        if not self.directed:  # only neighbours outside the active set S (the paired rows) are traded
            active = np.zeros(C * n, dtype=bool)
            paired_local = order[:, : 2 * P] - self.chain_row0
            active[(self.row_node[paired_local] + (np.arange(C) * n)[:, None]).ravel()] = True
            fixed |= active[self.slot_chain_node0 + self.target]
        slots = np.flatnonzero(~fixed)
        if slots.size == 0:
            return
        old_row = self.row[slots]
        slot_group = group[old_row]
        row_pool = np.bincount(old_row, minlength=C * R)  # each row's share of its pair's pool
        keep_count = row_pool[first]
        size = keep_count + row_pool[second]
        start = np.cumsum(size) - size
        # The first row keeps a uniformly random keep_count-subset of its pair's pool: the elements whose
        # random key is below the pool's (keep_count + 1)-th smallest. Keys are (group, random) packed in an
        # int64, so one np.sort (much faster than argsort) gives every pool's order statistics. A tie across
        # a threshold (probability ~ 2^-40) would bias the choice, so the keys are then redrawn.
        random_mask = np.int64((1 << self.random_bits) - 1)
        high = slot_group << self.random_bits
        boundary = start + keep_count  # index of each group's first key that is not kept
        split = (keep_count > 0) & (keep_count < size)
        while True:
            keys = high | (rng.bit_generator.random_raw(slots.size).view(np.int64) & random_mask)
            ordered = np.sort(keys)
            if not (ordered[boundary[split] - 1] == ordered[boundary[split]]).any():
                break
        threshold = np.full(C * P, np.iinfo(np.int64).max)
        threshold[keep_count < size] = ordered[boundary[keep_count < size]]
        moved = (keys < threshold[slot_group]) != is_first[old_row]
        slots, old_row = slots[moved], old_row[moved]
        new_row = partner[old_row]
        target = self.target[slots]
        self.adjacent[old_row * n + target] = False
        self.adjacent[new_row * n + target] = True
        self.row[slots] = new_row
        if not self.directed:  # mirror: (t, old) becomes (t, new); t has an edge, so it is a row
            chain_row0 = (old_row // R) * R
            target_row = (chain_row0 + self.node_row[target]).astype(self.index)
            self.adjacent[target_row * n + self.global_row_node[old_row]] = False
            self.adjacent[target_row * n + self.global_row_node[new_row]] = True
            self.target[self.mate[slots]] = self.global_row_node[new_row]

    # -- one 3-cycle reorientation proposal per chain (directed only) ---------------------------------
    def triangle_step(self, rng: np.random.Generator) -> None:
        C, R, n, m = self.C, self.R, self.n, self.m
        if not self.directed or R < 3 or m == 0:
            return
        base = np.arange(C, dtype=np.int64) * R  # global row id of each chain's row 0
        slot = np.arange(C, dtype=np.int64) * m + rng.integers(m, size=C)
        u_row = self.row[slot].astype(np.int64)
        v = self.target[slot].astype(np.int64)
        v_local = self.node_row[v]
        w_row = base + rng.integers(R, size=C)
        u, w = self.row_node[u_row - base], self.row_node[w_row - base]
        v_row = base + np.maximum(v_local, 0)
        adj = self.adjacent
        ok = (v_local >= 0) & (w != u) & (w != v)
        ok &= adj[v_row * n + w] & adj[w_row * n + u]
        ok &= ~adj[v_row * n + u] & ~adj[w_row * n + v] & ~adj[u_row * n + w]
        for c in np.flatnonzero(ok):  # rare on real networks; cheap when it happens
            rows, targets = self.row[c * m : (c + 1) * m], self.target[c * m : (c + 1) * m]
            vw = np.flatnonzero((rows == v_row[c]) & (targets == w[c]))[0]
            wu = np.flatnonzero((rows == w_row[c]) & (targets == u[c]))[0]
            # u->v, v->w, w->u become u->w, v->u, w->v: every node keeps one out-edge and one in-edge
            targets[slot[c] - c * m], targets[vw], targets[wu] = w[c], u[c], v[c]
            adj[[u_row[c] * n + v[c], v_row[c] * n + w[c], w_row[c] * n + u[c]]] = False
            adj[[u_row[c] * n + w[c], v_row[c] * n + u[c], w_row[c] * n + v[c]]] = True

    def step(self, rng: np.random.Generator) -> None:
        self.trade_round(rng)
        self.triangle_step(rng)

    def codes(self, dtype: np.dtype) -> np.ndarray:
        """(C, m) sorted edge codes of the current states."""
        local_row = self.row.reshape(self.C, self.m) - self.chain_row0
        codes = self.row_node[local_row] * self.n + self.target.reshape(self.C, self.m)
        return np.sort(codes, axis=1).astype(dtype)

    def mean_distance(self) -> float:
        overlap = self.adjacent.reshape(self.C, -1)[:, self.obs_local].sum(axis=1)
        return float(np.mean(1.0 - overlap / (2 * self.m - overlap)))


def _pairs_per_round(rows: int, directed: bool) -> int:
    """Trades per round: every row is paired (directed); half the rows, the active set S (undirected)."""
    if directed:
        return rows // 2
    return max(1, rows // 4) if rows >= 3 else 0


def _chains_per_block(rows: int, n_nodes: int, n_edges: int) -> int:
    per_chain = rows * n_nodes + 64 * n_edges  # dense lookup plus edge arrays and round temporaries
    return int(max(1, min(_MAX_CHAINS_PER_BLOCK, _BLOCK_BYTES // max(per_chain, 1))))


def degree_preserving_null(
    sources: np.ndarray,
    targets: np.ndarray,
    n_nodes: int,
    *,
    n_draws: int,
    seed: int,
    trades_per_draw: int | None = None,
    directed: bool = True,
    min_median_distance: float = DEFAULT_MIN_MEDIAN_DISTANCE,
    max_smallest_p: float = DEFAULT_MAX_SMALLEST_P,
) -> NullDraws:
    """Verified degree-preserving null draws of a network (curveball; see the module docstring).

    sources, targets: (n_edges,) int node indices in [0, n_nodes); no self pairs, no duplicates; for
    `directed=False` both orientations of every edge. Each draw is an independent chain started at the
    observed network and run for `trades_per_draw` trades, rounded up to whole rounds (a directed round
    trades floor(R / 2) row pairs, R = nodes with out-degree > 0; an undirected one about R / 4).
    Default: DEFAULT_TRADES_PER_ROW * R. The same inputs and seed give identical draws.

    Raises NullVerificationError if any draw breaks a degree, has a self or duplicate edge (or, undirected,
    a missing reverse orientation). Warns NullMixingWarning when the draws barely move
    (`NullDiagnostics.mixing_problem`: a unique realisation, so many draws equal to the observed network
    that the smallest permutation p exceeds `max_smallest_p`, or a median Jaccard distance below
    `min_median_distance`).
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be positive, got {n_draws}")
    obs = edge_codes(sources, targets, n_nodes)
    if not directed:
        reverse = np.sort(_reverse_codes(obs, n_nodes))
        if not np.array_equal(reverse, obs):
            raise ValueError("directed=False needs both orientations of every edge (symmetric pairs)")
    dtype = _code_dtype(n_nodes)
    n_rows = int(np.unique(obs // n_nodes).size)
    if trades_per_draw is None:
        trades_per_draw = DEFAULT_TRADES_PER_ROW * n_rows
    if trades_per_draw < 0:
        raise ValueError(f"trades_per_draw must be >= 0, got {trades_per_draw}")
    chains = min(n_draws, _chains_per_block(n_rows, n_nodes, obs.size))
    block_seeds = np.random.SeedSequence(seed).spawn(math.ceil(n_draws / chains))
    per_round = _pairs_per_round(n_rows, directed)
    rounds = math.ceil(trades_per_draw / per_round) if per_round else 0
    draws = np.empty((n_draws, obs.size), dtype=dtype)
    curve_trades, curve_distance = [0], [0.0]
    for b, block_seed in enumerate(block_seeds):
        rng = np.random.default_rng(block_seed)
        lo, hi = b * chains, min(n_draws, (b + 1) * chains)
        block = _ChainBlock(hi - lo, obs, n_nodes, directed)
        if rounds == 0:
            draws[lo:hi] = block.codes(dtype)
            continue
        for r in range(1, (2 * rounds if b == 0 else rounds) + 1):
            block.step(rng)
            if b == 0:
                curve_trades.append(r * per_round)
                curve_distance.append(block.mean_distance())
            if r == rounds:
                draws[lo:hi] = block.codes(dtype)
    curve = pd.DataFrame(
        {"trades": np.asarray(curve_trades, dtype=np.int64), "mean_jaccard_distance": curve_distance}
    )
    diagnostics = verify_null(
        obs, draws, n_nodes, directed=directed, mixing_curve=curve, min_median_distance=min_median_distance,
        max_smallest_p=max_smallest_p,
    )
    if not diagnostics.passed:
        raise NullVerificationError(f"null draws failed verification: {diagnostics.summary()}")
    if diagnostics.mixing_problem:
        warnings.warn(
            f"null draws barely differ from the observed network: {diagnostics.mixing_problem}; no "
            "degree-preserving null test is possible with them (a small or nearly saturated network cannot be "
            "rewired; otherwise check the mixing curve or raise trades_per_draw)",
            NullMixingWarning,
            stacklevel=2,
        )
    return NullDraws(
        codes=draws,
        n_nodes=n_nodes,
        directed=directed,
        seed=seed,
        trades_per_draw=rounds * per_round,
        diagnostics=diagnostics,
    )


# ----------------------------------------------------------------------------------------------------------
# Statistics over draws


def permutation_p_value(
    observed: float, null_values: np.ndarray, alternative: Literal["greater", "less"] = "greater"
) -> float:
    """(1 + #(null >= observed)) / (1 + N) for "greater" (<= for "less"); never 0. NaN if observed is NaN.

    null_values: (N,) finite statistics of the null draws.
    """
    null = np.asarray(null_values, dtype=np.float64).ravel()
    if np.isnan(null).any():
        raise ValueError("null values contain NaN")
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if np.isnan(observed):
        return float("nan")
    extreme = null >= observed if alternative == "greater" else null <= observed
    return float((1 + int(extreme.sum())) / (1 + null.size))


def null_z_score(observed: float, null_values: np.ndarray) -> float:
    """(observed - mean(null)) / sd(null) (ddof = 1); inf-signed when the null has no spread."""
    null = np.asarray(null_values, dtype=np.float64).ravel()
    spread = float(null.std(ddof=1)) if null.size > 1 else 0.0
    difference = observed - float(null.mean())
    if spread == 0.0:
        return 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return difference / spread


def null_auroc(scores: np.ndarray, draws: NullDraws) -> np.ndarray:
    """(n_draws,) AUROC of a dense score matrix against each null network's membership.

    scores: (n_nodes, n_nodes) float; the diagonal is ignored, NaN scores rank lowest (as
    `core.stats.auroc`). Positives are a draw's ordered pairs, negatives every other off-diagonal pair
    (the universe of `reference_auroc_tests`). Ranks are computed once; per draw the AUROC is
    (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg).
    """
    n = draws.n_nodes
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n, n):
        raise ValueError(f"scores must be ({n}, {n}), got {s.shape}")
    off_diagonal = ~np.eye(n, dtype=bool)
    values = np.where(np.isnan(s), -np.inf, s)[off_diagonal]
    ranks = np.zeros(n * n)
    ranks[np.flatnonzero(off_diagonal)] = stats.rankdata(values, method="average")
    n_pos = draws.n_edges
    n_neg = n * (n - 1) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(draws.n_draws, np.nan)
    positive_rank_sum = ranks[draws.codes].sum(axis=1)
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
