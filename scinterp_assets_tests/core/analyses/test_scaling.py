"""A20 scaling and A21 CSSI on a synthetic world with state-specific wiring: the planted scaling failure, the
oracle strata's gain, the calibration of shuffled strata against the random-strata null, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scinterp_assets.core.analyses.calibration_worlds import cssi_cell_scores, cssi_world, grouped_cell_scores
from scinterp_assets.core.analyses.scaling import (
    CellSetScores,
    CssiSettings,
    cssi_evaluation,
    cssi_tests,
    ladder_rungs,
    pair_specific_cssi,
    reference_rows,
    scaling_curves,
    scaling_groups,
    scaling_tests,
    scored_pairs,
    top_k_f1,
)
from scinterp_assets.core.analyses.strata import (
    Stratification,
    by_size,
    checked_representation,
    expression_pcs,
    kmeans_strata,
    leiden_strata,
)

N_CELLS = 500


@pytest.fixture(scope="module")
def world():
    """Three states, each with 40 edges of its own, and strong state offsets of TF activity; 500 control cells."""
    world = cssi_world(seed=0, n_cells=N_CELLS)
    references = {name: reference_rows(table[["source", "target"]], world.genes, world.rows)
                  for name, table in (("planted", world.truth_edges), ("state_specific", world.state_edges))}
    return {"expression": world.expression, "genes": list(world.genes), "rows": world.rows, "world": world,
            "references": references, "valid": scored_pairs(world.rows, world.genes),
            "oracle": Stratification("oracle", "oracle", None, by_size(world.states))}


def evaluate(world, primary, stratifications, *, seeds=range(5), null_draws=99, null_seed=0):
    design = scaling_groups(primary, stratifications, world["rows"], 0, rung_sizes=[100, 200, 300, N_CELLS],
                            heterogeneity_cells=150, seeds=seeds, n_null_blocks=100, null_seed=null_seed)
    grouped = grouped_cell_scores(design.groups, tuple(world["genes"]),
                                  cssi_cell_scores(world["world"], "coexpression", seed=0))
    scores = CellSetScores(grouped, world["expression"])
    return design, scores


def test_the_planted_scaling_failure_appears_when_heterogeneity_grows_with_n(world):
    design, scores = evaluate(world, world["oracle"], [world["oracle"]])
    curves = scaling_curves(design, scores, world["references"], world["valid"])
    rows = {row["test_id"]: row for row in scaling_tests(curves, layer=0)}
    # cells added state by state: every seed's pooled co-expression F1 falls while its AUROC rises
    accrual = rows["A20:state_specific:correlation:accrual:f1_drops_while_auroc_rises"]
    assert accrual["statistic"] == accrual["n"] == 5
    assert rows["A20:state_specific:correlation:accrual:f1_change"]["statistic"] < -0.05
    # the same N at fixed composition: F1 does not fall in every seed; more states at fixed N: it does
    assert rows["A20:state_specific:correlation:fixed_composition:f1_change"]["effect"] < 5
    assert rows["A20:state_specific:correlation:growing_heterogeneity:f1_change"]["statistic"] < 0
    axis = curves[curves["ladder"] == "growing_heterogeneity"]["n_strata"]
    assert sorted(axis.unique()) == [1, 2, 3]


def test_oracle_strata_recover_state_specific_edges_better_than_pooling(world):
    design, scores = evaluate(world, world["oracle"], [world["oracle"]])
    table = cssi_evaluation(design, scores, world["references"], world["valid"], CssiSettings(30, 99, 0))
    best = table.set_index(["score", "aggregation", "reference"])
    for score in ("correlation", "attention"):
        row = best.loc[(score, "max", "state_specific")]
        assert row["auroc_gain"] > row["null_high"] and row["p_value"] <= 0.01
    assert best.loc[("correlation", "max", "state_specific"), "f1_gain"] > 0
    tests = cssi_tests(table, layer=0)
    assert not any(row["confirmatory"] for row in tests)  # oracle strata are never the primary row
    assert all(row["note"].startswith("oracle strata") for row in tests)


def test_estimated_strata_are_measured_against_the_same_null(world):
    """Whether estimated strata help is reported either way: here k-means and Leiden find the three states, and
    the confirmatory (pair-specific) test finds the state-specific edges."""
    pcs = expression_pcs(world["expression"], 20, seed=0)
    estimated = [kmeans_strata(pcs, 3, seed=0), leiden_strata(pcs, 3, seed=0)]
    assert [s.k for s in estimated] == [3, 3]
    design, scores = evaluate(world, estimated[1], estimated, seeds=[0])
    settings = CssiSettings(30, 49, 0)
    table = pd.concat([
        cssi_evaluation(design, scores, world["references"], world["valid"], settings),
        pair_specific_cssi(design, scores.grouped, scores.expression, world["references"], world["valid"], settings,
                           "leiden_k3")], ignore_index=True)
    rows = cssi_tests(table, layer=0)
    confirmatory = {row["test_id"]: row for row in rows if row["confirmatory"]}
    assert set(confirmatory) == {"A21:planted:attention:leiden_k3:max_pair_specific",
                                 "A21:state_specific:attention:leiden_k3:max_pair_specific"}
    assert all(np.isfinite(row["effect"]) and 0 < row["p_value"] <= 1 for row in confirmatory.values())
    assert confirmatory["A21:state_specific:attention:leiden_k3:max_pair_specific"]["p_value"] <= 0.05
    assert all("gene-level null" in row["note"] for row in rows if row["test_id"].endswith(":max"))


def test_a_gene_level_score_gains_from_strata_unless_made_pair_specific(world):
    """The target's expression level, the same for every source, carries no pair signal, yet CSSI of the raw
    score beats random strata (its level differs between states); the pair-specific test does not."""
    primary = leiden_strata(expression_pcs(world["expression"], 20, seed=0), 3, seed=0)
    design = scaling_groups(primary, [primary], world["rows"], 0, rung_sizes=[], heterogeneity_cells=1, seeds=[],
                            n_null_blocks=100, null_seed=0)
    grouped = grouped_cell_scores(design.groups, tuple(world["genes"]),
                                  cssi_cell_scores(world["world"], "target_level", seed=0))
    reference, settings = {"planted": world["references"]["planted"]}, CssiSettings(30, 49, 0)
    raw = cssi_evaluation(design, CellSetScores(grouped, world["expression"]), reference, world["valid"], settings,
                          score_names=["attention"])
    pair = pair_specific_cssi(design, grouped, world["expression"], reference, world["valid"], settings, primary.name)
    assert raw.set_index("aggregation").loc["max", "p_value"] <= 0.05
    assert pair["p_value"].item() > 0.05


def test_shuffled_strata_do_not_beat_pooling_beyond_their_null(world):
    """Labels permuted over cells are exchangeable with the null's random strata: over seeds, CSSI-max on them
    rejects at about the nominal rate (at most 3 of 16 at 0.05, P = 0.04 under a correct 5% test)."""
    rejections, tests = 0, 0
    for seed in range(8):
        shuffled = Stratification("shuffled", "shuffled", None,
                                  np.random.default_rng(seed).permutation(world["oracle"].labels))
        design, scores = evaluate(world, shuffled, [shuffled], seeds=[0], null_seed=seed)
        table = cssi_evaluation(design, scores, {"planted": world["references"]["planted"]}, world["valid"],
                                CssiSettings(30, 39, seed))
        chosen = table[table["aggregation"] == "max"]
        rejections += int((chosen["p_value"] <= 0.05).sum())
        tests += len(chosen)
    assert tests == 16 and rejections <= 3


def test_strata_below_the_minimum_size_or_a_single_state_are_not_evaluable(world):
    tiny = Stratification("kmeans_k2", "kmeans", 2, np.array([0] * (N_CELLS - 5) + [1] * 5))
    single = Stratification("oracle", "oracle", None, np.zeros(N_CELLS, dtype=np.int64))
    design, scores = evaluate(world, single, [tiny, single], seeds=[0])
    table = cssi_evaluation(design, scores, world["references"], world["valid"], CssiSettings(30, 9, 0))
    assert not table["evaluable"].any()
    assert table["note"].str.contains("strata hold at least 30 cells").all()
    rows = cssi_tests(table, layer=0)
    assert rows and all(np.isnan(row["p_value"]) for row in rows)
    assert all("not evaluable" in row["note"] for row in rows if not row["test_id"].endswith(":oracle:max"))


def test_bad_strata_input_is_refused_with_the_fix():
    representation = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(ValueError, match="K=25 strata exceeds the 20 cells.*scaling.k_values"):
        kmeans_strata(representation, 25, seed=0)
    with pytest.raises(ValueError, match="K=21 strata exceeds"):
        leiden_strata(representation, 21, seed=0)
    broken = representation.copy()
    broken[[3, 7], 1] = np.nan
    with pytest.raises(ValueError, match=r"2 of 20 cells have NaN.*\[3, 7\].*expression_pcs"):
        checked_representation(broken, "cell_strata of x")
    labels = Stratification("p", "kmeans", 2, np.array([0] * 10 + [1] * 10))
    with pytest.raises(ValueError, match="null_blocks must lie in"):
        scaling_groups(labels, [labels], ("A",), 0, rung_sizes=[10], heterogeneity_cells=5, seeds=[0],
                       n_null_blocks=40, null_seed=0)


def test_ladder_rungs_keep_composition_and_say_what_they_left_out():
    rungs, skipped = ladder_rungs([300, 150, 50], [100, 500, 900], heterogeneity_cells=120, seed=0)
    fixed = {r.n_cells: r.prefix for r in rungs if r.ladder == "fixed_composition"}
    assert fixed == {100: (60, 30, 10), 500: (300, 150, 50)}
    accrual = {r.n_cells: r.prefix for r in rungs if r.ladder == "accrual"}
    assert accrual == {100: (100, 0, 0), 500: (300, 150, 50)}
    heterogeneity = {r.n_strata: r.prefix for r in rungs if r.ladder == "growing_heterogeneity"}
    assert heterogeneity == {1: (120, 0, 0), 2: (60, 60, 0), 3: (40, 40, 40)}
    _, too_few = ladder_rungs([300, 150, 50], [100], heterogeneity_cells=180, seed=0)
    assert too_few == ["180 cells over 3 strata: stratum too small"]
    assert any("900 cells" in reason for reason in skipped)


def test_top_k_f1_counts_ties_at_the_cut_off_by_their_expected_share():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1, np.nan])
    positive = np.array([True, True, False, False, False, True])
    # K = 3: 0.9 is in; two of the three tied 0.5 pairs are, holding 1/3 positive each; NaN ranks last
    assert top_k_f1(scores, positive) == pytest.approx((1 + 2 / 3) / 3)
