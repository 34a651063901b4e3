"""The degree-preserving null: validity of every draw, known answers (unique realisations, brute-force
enumeration of all realisations visited uniformly), mixing, and the statistics over draws."""

from __future__ import annotations

import itertools
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scinterp_assets.core.networks import null
from scinterp_assets.core.networks.null import (
    NullMixingWarning,
    NullVerificationError,
    degree_preserving_null,
    edge_codes,
    expected_jaccard_distance,
    null_auroc,
    null_z_score,
    permutation_p_value,
    unique_realisation,
    verify_null,
)
from scinterp_assets.core.stats.auroc import auroc


def random_network(seed: int, n_nodes: int, n_rows: int, n_edges: int) -> tuple[np.ndarray, np.ndarray]:
    """A directed network: n_rows sources with heavy-tailed out-degree, targets drawn with heterogeneous
    popularity, no self pairs, no duplicates."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, n_rows)
    out_degree = np.clip(np.round(weights / weights.sum() * n_edges), 1, n_nodes // 3).astype(int)
    rows = rng.choice(n_nodes, n_rows, replace=False)
    popularity = rng.lognormal(0.0, 1.0, n_nodes)
    sources, targets = [], []
    for row, degree in zip(rows, out_degree):
        p = popularity.copy()
        p[row] = 0.0
        chosen = rng.choice(n_nodes, degree, replace=False, p=p / p.sum())
        sources += [row] * degree
        targets += list(chosen)
    return np.array(sources), np.array(targets)


def independent_degrees(codes: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_draws, n_nodes) out- and in-degrees computed in the test, not by verify_null."""
    out = np.array([np.bincount(row // n_nodes, minlength=n_nodes) for row in codes])
    inn = np.array([np.bincount(row % n_nodes, minlength=n_nodes) for row in codes])
    return out, inn


def draw_quietly(*args, **kwargs) -> null.NullDraws:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NullMixingWarning)
        return degree_preserving_null(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Validity of every draw


@pytest.mark.parametrize(("n_nodes", "n_rows", "n_edges"), [(12, 5, 20), (60, 15, 200), (300, 40, 1500)])
def test_every_draw_keeps_both_margins_without_self_or_duplicate_edges(n_nodes, n_rows, n_edges):
    sources, targets = random_network(1, n_nodes, n_rows, n_edges)
    draws = draw_quietly(sources, targets, n_nodes, n_draws=70, seed=3)
    observed = edge_codes(sources, targets, n_nodes)
    assert draws.codes.shape == (70, observed.size)
    out, inn = independent_degrees(draws.codes, n_nodes)
    np.testing.assert_array_equal(out, np.broadcast_to(np.bincount(sources, minlength=n_nodes), out.shape))
    np.testing.assert_array_equal(inn, np.broadcast_to(np.bincount(targets, minlength=n_nodes), inn.shape))
    assert not (draws.sources == draws.targets).any()
    assert (np.diff(draws.codes, axis=1) > 0).all()  # sorted and no duplicates
    np.testing.assert_array_equal(draws.edges[..., 0] * n_nodes + draws.edges[..., 1], draws.codes)
    diagnostics = draws.diagnostics
    assert diagnostics.passed and diagnostics.margins_preserved
    assert diagnostics.self_edges == diagnostics.duplicate_edges == 0
    assert draws.trades_per_draw >= null.DEFAULT_TRADES_PER_ROW * np.unique(sources).size


def test_same_seed_same_draws_other_seed_other_draws():
    sources, targets = random_network(2, 80, 12, 250)
    first = degree_preserving_null(sources, targets, 80, n_draws=20, seed=11)
    again = degree_preserving_null(sources, targets, 80, n_draws=20, seed=11)
    other = degree_preserving_null(sources, targets, 80, n_draws=20, seed=12)
    np.testing.assert_array_equal(first.codes, again.codes)
    pd.testing.assert_frame_equal(first.diagnostics.mixing_curve, again.diagnostics.mixing_curve)
    assert not np.array_equal(first.codes, other.codes)
    assert first.seed == 11


def test_undirected_draws_keep_degrees_and_both_orientations():
    rng = np.random.default_rng(4)
    pairs = {tuple(sorted(p)) for p in rng.integers(0, 50, size=(150, 2)) if p[0] != p[1]}
    a, b = np.array(sorted(pairs)).T
    sources, targets = np.concatenate([a, b]), np.concatenate([b, a])
    draws = draw_quietly(sources, targets, 50, n_draws=40, seed=5, directed=False)
    degree = np.bincount(sources, minlength=50)
    out, inn = independent_degrees(draws.codes, 50)
    np.testing.assert_array_equal(out, np.broadcast_to(degree, out.shape))
    np.testing.assert_array_equal(inn, np.broadcast_to(degree, inn.shape))
    for codes in draws.codes:  # every edge has its reverse
        np.testing.assert_array_equal(np.sort((codes % 50) * 50 + codes // 50), codes)
    assert draws.diagnostics.asymmetric_edges == 0
    assert np.median(draws.diagnostics.jaccard_distance) > 0.5


def test_an_empty_network_has_one_empty_realisation():
    with pytest.warns(NullMixingWarning, match="unique realisation"):
        draws = degree_preserving_null(np.array([], int), np.array([], int), 5, n_draws=3, seed=0)
    assert draws.codes.shape == (3, 0) and draws.diagnostics.passed


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="self pair"):
        degree_preserving_null(np.array([0, 1]), np.array([0, 2]), 3, n_draws=2, seed=0)
    with pytest.raises(ValueError, match="duplicate"):
        degree_preserving_null(np.array([0, 0]), np.array([1, 1]), 3, n_draws=2, seed=0)
    with pytest.raises(ValueError, match="both orientations"):
        degree_preserving_null(np.array([0, 1]), np.array([1, 2]), 3, n_draws=2, seed=0, directed=False)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        degree_preserving_null(np.array([0]), np.array([3]), 3, n_draws=2, seed=0)


def test_verify_null_counts_each_kind_of_broken_draw():
    n = 4
    observed = edge_codes(np.array([0, 1, 2]), np.array([1, 2, 3]), n)  # 0->1, 1->2, 2->3
    good = observed
    self_edge = np.array([0 * n + 1, 1 * n + 1, 2 * n + 3])  # 1->1; in-degrees also broken
    duplicate = np.array([0 * n + 1, 0 * n + 1, 2 * n + 3])
    diagnostics = verify_null(observed, np.stack([good, self_edge, duplicate]), n)
    assert not diagnostics.margins_preserved
    assert diagnostics.self_edges == 1
    assert diagnostics.duplicate_edges == 1
    assert not diagnostics.passed
    np.testing.assert_allclose(diagnostics.jaccard_distance[0], 0.0)


def test_the_sampler_refuses_to_return_broken_draws(monkeypatch):
    sources, targets = random_network(6, 30, 6, 60)

    honest = null._ChainBlock.codes

    def corrupted(self, dtype):
        codes = honest(self, dtype)
        codes[:, 0] = codes[:, 1]  # a duplicate edge, and the first edge's target loses an in-edge
        return codes

    monkeypatch.setattr(null._ChainBlock, "codes", corrupted)
    with pytest.raises(NullVerificationError):
        degree_preserving_null(sources, targets, 30, n_draws=3, seed=0)


# ----------------------------------------------------------------------------------------------------------
# Known answer 1: networks with a single realisation


@pytest.mark.parametrize(
    ("edges", "chung_lu_exact"),
    [
        ([(0, t) for t in range(1, 8)], True),  # a star: the hub points to every other node
        ([(s, t) for s in range(3) for t in range(3, 7)], True),  # a complete directed bipartite block 3 -> 4
        ([(s, t) for s in range(4) for t in range(4) if s != t], False),  # the complete digraph on 4 nodes
    ],
)
def test_unique_realisation_gives_identical_draws_distance_zero_and_a_flag(edges, chung_lu_exact):
    sources, targets = np.array(edges).T
    with pytest.warns(NullMixingWarning, match="unique realisation"):
        draws = degree_preserving_null(sources, targets, 8, n_draws=25, seed=0)
    observed = edge_codes(sources, targets, 8)
    assert (draws.codes == observed).all()
    diagnostics = draws.diagnostics
    assert diagnostics.unique_realisation and diagnostics.low_mixing
    assert diagnostics.summary()["median_jaccard_distance"] == 0.0
    assert diagnostics.summary()["identical_to_observed"] == 25
    if chung_lu_exact:  # the approximation ignores the missing diagonal, so only these are exact
        assert diagnostics.expected_distance == pytest.approx(0.0)


def test_unique_realisation_is_exact_on_small_cases():
    n = 5
    # a directed 3-cycle: no swap is possible, but reversing the cycle gives the other realisation
    assert not unique_realisation(edge_codes(np.array([0, 1, 2]), np.array([1, 2, 0]), n), n)
    # two disjoint edges 0->1, 2->3: swap to 0->3, 2->1
    assert not unique_realisation(edge_codes(np.array([0, 2]), np.array([1, 3]), n), n)
    # 0->1 and 1->0: the only way to give 0 and 1 one out- and one in-edge each
    assert unique_realisation(edge_codes(np.array([0, 1]), np.array([1, 0]), n), n)
    # undirected path 0-1-2 (both orientations): unique; two disjoint undirected edges: not
    path = edge_codes(np.array([0, 1, 1, 2]), np.array([1, 0, 2, 1]), n)
    assert unique_realisation(path, n, directed=False)
    matching = edge_codes(np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2]), n)
    assert not unique_realisation(matching, n, directed=False)


# ----------------------------------------------------------------------------------------------------------
# Known answer 2: every realisation is visited, uniformly


def enumerate_directed(out_degree: tuple[int, ...], in_degree: tuple[int, ...]) -> list[tuple[int, ...]]:
    """All simple digraphs without self loops with these degrees, as sorted code tuples (brute force)."""
    n = len(out_degree)
    options = [itertools.combinations([c for c in range(n) if c != r], out_degree[r]) for r in range(n)]
    found = []
    for rows in itertools.product(*map(list, options)):
        codes = [r * n + c for r, row in enumerate(rows) for c in row]
        if tuple(np.bincount(np.array(codes) % n, minlength=n)) == tuple(in_degree):
            found.append(tuple(sorted(codes)))
    return found


def enumerate_undirected(degree: tuple[int, ...]) -> list[tuple[int, ...]]:
    """All simple undirected graphs with these degrees, as sorted codes of both orientations."""
    n = len(degree)
    found = []
    for edges in itertools.combinations(list(itertools.combinations(range(n), 2)), sum(degree) // 2):
        if tuple(np.bincount(np.array(edges).ravel(), minlength=n)) == tuple(degree):
            found.append(tuple(sorted([a * n + b for a, b in edges] + [b * n + a for a, b in edges])))
    return found


def visit_counts(draws: null.NullDraws, realisations: list[tuple[int, ...]]) -> np.ndarray:
    counts = Counter(tuple(int(c) for c in row) for row in draws.codes)
    assert set(counts) <= set(realisations), "a draw is not a valid realisation"
    return np.array([counts[r] for r in realisations])


def test_directed_draws_visit_every_realisation_uniformly():
    realisations = enumerate_directed((2, 2, 2, 1, 1), (2, 2, 1, 2, 1))
    assert len(realisations) == 73
    observed = np.array(realisations[0])
    draws = draw_quietly(observed // 5, observed % 5, 5, n_draws=2920, seed=7, trades_per_draw=60)
    counts = visit_counts(draws, realisations)
    assert (counts > 0).all()
    assert stats.chisquare(counts).pvalue > 1e-3  # fixed seed: deterministic, far from the threshold


def test_directed_three_cycle_is_reoriented_half_of_the_time():
    # the two orientations of a 3-cycle differ by no swap: only the triangle move connects them
    realisations = enumerate_directed((1, 1, 1), (1, 1, 1))
    assert len(realisations) == 2
    observed = np.array(realisations[0])
    draws = draw_quietly(observed // 3, observed % 3, 3, n_draws=600, seed=8, trades_per_draw=40)
    counts = visit_counts(draws, realisations)
    assert stats.binomtest(int(counts[0]), 600).pvalue > 1e-3


def test_undirected_draws_visit_every_realisation_uniformly():
    realisations = enumerate_undirected((3, 3, 2, 2, 1, 1))
    assert len(realisations) == 17
    observed = np.array(realisations[0])
    draws = draw_quietly(
        observed // 6, observed % 6, 6, n_draws=1020, seed=9, directed=False, trades_per_draw=60
    )
    counts = visit_counts(draws, realisations)
    assert (counts > 0).all()
    assert stats.chisquare(counts).pvalue > 1e-3


# ----------------------------------------------------------------------------------------------------------
# Mixing


def test_a_random_network_mixes_to_the_expected_distance_and_the_curve_plateaus():
    sources, targets = random_network(10, 400, 50, 2000)
    draws = degree_preserving_null(sources, targets, 400, n_draws=64, seed=1)
    diagnostics = draws.diagnostics
    median = np.median(diagnostics.jaccard_distance)
    # Chung-Lu approximation of a random graph's distance, computed independently of the sampler
    assert median > 0.5
    assert median == pytest.approx(diagnostics.expected_distance, abs=0.03)
    assert not diagnostics.low_mixing and not diagnostics.unique_realisation
    curve = diagnostics.mixing_curve
    assert curve["trades"].iloc[0] == 0 and curve["mean_jaccard_distance"].iloc[0] == 0.0
    assert curve["trades"].iloc[-1] == 2 * draws.trades_per_draw  # recorded past the point of use
    distance = curve["mean_jaccard_distance"].to_numpy()
    assert (distance >= np.maximum.accumulate(distance) - 0.01).all()  # non-decreasing up to noise
    at_use = distance[curve["trades"].to_numpy() == draws.trades_per_draw][0]
    assert at_use >= 0.99 * distance[-len(distance) // 4 :].mean()  # plateau reached where draws are taken
    summary = draws.summary()
    assert summary["n_draws"] == 64 and summary["passed"] and summary["self_edges"] == 0
    assert summary["mixing_at_use_over_plateau"] >= 0.99
    assert summary["trades_per_draw"] == draws.trades_per_draw and summary["n_edges"] == sources.size


def test_draws_identical_to_the_observed_network_are_flagged():
    # the original study's failure: a rewiring that leaves the draws equal to the observed network
    sources, targets = random_network(10, 400, 50, 2000)
    with pytest.warns(NullMixingWarning, match="barely differ"):
        draws = degree_preserving_null(sources, targets, 400, n_draws=4, seed=1, trades_per_draw=0)
    assert draws.diagnostics.low_mixing and not draws.diagnostics.unique_realisation
    assert draws.diagnostics.summary()["identical_to_observed"] == 4


def test_expected_distance_of_a_star_is_zero_and_of_a_sparse_network_near_one():
    star = edge_codes(np.zeros(5, dtype=int), np.arange(1, 6), 6)
    assert expected_jaccard_distance(star, 6) == 0.0
    sources, targets = random_network(3, 2000, 100, 1000)
    assert expected_jaccard_distance(edge_codes(sources, targets, 2000), 2000) > 0.95


# ----------------------------------------------------------------------------------------------------------
# Statistics over draws


def test_permutation_p_value_by_hand_and_never_zero():
    null_values = np.array([0.1, 0.7, 0.9, 0.2])
    assert permutation_p_value(0.7, null_values) == pytest.approx(3 / 5)  # 0.7 and 0.9 reach it
    assert permutation_p_value(0.95, null_values) == pytest.approx(1 / 5)  # never 0
    assert permutation_p_value(0.0, null_values) == pytest.approx(1.0)
    assert permutation_p_value(0.1, null_values, alternative="less") == pytest.approx(2 / 5)
    assert permutation_p_value(0.5, np.array([])) == 1.0
    assert np.isnan(permutation_p_value(float("nan"), null_values))
    with pytest.raises(ValueError):
        permutation_p_value(0.5, null_values, alternative="two-sided")
    with pytest.raises(ValueError):
        permutation_p_value(0.5, np.array([0.1, np.nan]))


def test_null_z_score_by_hand():
    assert null_z_score(4.0, np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)  # mean 2, sd 1
    assert null_z_score(2.0, np.array([2.0, 2.0])) == 0.0
    assert null_z_score(3.0, np.array([2.0, 2.0])) == np.inf


def test_null_auroc_equals_per_draw_auroc_of_core_stats():
    n = 30
    sources, targets = random_network(5, n, 8, 60)
    draws = draw_quietly(sources, targets, n, n_draws=12, seed=2)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(n, n)).astype(float)  # heavy ties
    scores[rng.random((n, n)) < 0.05] = np.nan  # NaN ranks lowest, as in core.stats.auroc
    off_diagonal = ~np.eye(n, dtype=bool)
    expected = []
    for codes in draws.codes:
        membership = np.zeros(n * n, dtype=bool)
        membership[codes] = True
        expected.append(auroc(membership.reshape(n, n)[off_diagonal], scores[off_diagonal]))
    np.testing.assert_allclose(null_auroc(scores, draws), expected, atol=1e-12)
    assert null_auroc(scores, draws).shape == (12,)


def test_a_two_edge_network_whose_draws_are_half_the_observed_one_is_flagged_although_its_median_moves():
    # A -> B, C -> D has two realisations with its degrees (the other is A -> D, C -> B): about half of the
    # draws equal the observed network, so no permutation p can fall below ~0.5 even when the median
    # Jaccard distance is 1
    sources, targets = np.array([0, 2]), np.array([1, 3])
    with pytest.warns(NullMixingWarning, match=r"draws equal the observed network"):
        draws = degree_preserving_null(sources, targets, 4, n_draws=1000, seed=3)
    diagnostics = draws.diagnostics
    identical = diagnostics.identical_to_observed
    assert 400 < identical < 600 and not diagnostics.unique_realisation
    assert diagnostics.low_mixing and f"{identical} of 1000 draws equal the observed network" in diagnostics.mixing_problem
    lenient = verify_null(edge_codes(sources, targets, 4), draws.codes, 4, max_smallest_p=0.6,
                          min_median_distance=0.0)
    assert not lenient.low_mixing and lenient.mixing_problem == ""
