"""Calibration of the confirmatory tests: false-positive rate on null worlds and power on planted-signal
worlds, each with a Clopper-Pearson 95% interval.

    .venv/bin/python -m benchmarks.calibration                    # A05/A06, 200 worlds, 2 processes
    .venv/bin/python -m benchmarks.calibration --worlds 20        # a quick look
    .venv/bin/python -m benchmarks.calibration --study            # also the study's form (descriptive rows)
    .venv/bin/python -m benchmarks.calibration --a01              # A01 on exchangeable halves of control cells
    .venv/bin/python -m benchmarks.calibration --comparisons      # A01, A02, A04 on exchangeable score pairs
    .venv/bin/python -m benchmarks.calibration --references       # A09, A10, A12 on reference-network worlds
    .venv/bin/python -m benchmarks.calibration --cssi             # A21's CSSI test on state-wired screens

Each world (core/analyses/calibration_worlds.py) has DE labels driven by nonlinear gene-level effects, a
perturbation x target interaction, a target effect no feature explains and pair-specific regulation;
every score class of the world runs through the same test the platform reports
(incremental_confirmatory.confirmatory_incremental_value). For every (score class, model, split) the
benchmark prints how often the test

  claims    the score adds information: lower bound of the 95% interval > 0 (FRAMEWORK criterion 2)
  rejects   delta = 0 at two-sided p < 0.05 (equivalently, the interval excludes 0)

Under a null class both rates must be at most 5% (the interval of the rate includes 5% or lies below);
under the planted class "claims" is the power. Model settings are sized for the worlds (a few thousand rows:
`--boosted-iter`, `--boosted-leaves`); fold counts, repeats and resamples are the configuration's defaults
unless given. With --study the study's form (plain logistic on the target's features, raw score, pooled
AUROC, perturbation bootstrap) is measured on the same worlds for comparison. With --a01 each world is a
simulated screen whose control cells are split into exchangeable halves (run_a01_world): A01's test of one
half's co-expression against the other's must reject at most at its nominal rate. With --comparisons the
A05/A06 worlds' labels are ranked by pairs of equally good scores (calibration_worlds.comparison_score_sets:
target-level components shared by every perturbation, with and without pair noise, six exchangeable layers)
and by a planted layer: A01 (attention vs correlation), A02 (nested-CV layer vs correlation) and A04
(baseline vs correlation) run as the platform runs them (two-way bootstrap), and the study's paired
Wilcoxon over perturbations beside them (form "study"). With --references each world is a directed TF ->
target reference whose membership depends on the genes' features and on pair-specific regulation
(calibration_worlds.reference_world): A12 (reference AUROC = 0.5 by gene relabelling; the study's
Mann-Whitney as form "study"), A09's confirmatory beyond-features test (residualisation.beyond_features_tests,
with the A05/A06 settings above) and, as form "descriptive", A10 (degree-preserving null; "claims" is the
verdict's z > 3, "rejects" the permutation p < 0.05) run as the platform runs them. A12's nulls are the
scores independent of the reference (noise and the independent gene-level classes); the feature classes
are associated with the reference through the features, so for A12 they are not nulls (reported as
"associated"), while for A09 and A10, which ask for signal beyond gene-level structure, they are. With
--cssi each world is a simulated screen with state-specific wiring (calibration_worlds.cssi_world); its cells
are stratified as the platform does by default (Leiden on 20 expression PCs, K = 5) and A21's pre-specified
test (CSSI-max AUROC gain over pooled against random strata of the same sizes, scaling.cssi_evaluation) runs on
per-cell scores of known content (calibration_worlds.cssi_cell_scores): nulls "noise", "target_level" and
co-expression on shuffled strata, signal "coexpression".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import defaultdict
from multiprocessing import get_context
from pathlib import Path

from scipy.stats import binomtest
from threadpoolctl import threadpool_limits

import numpy as np

from scinterp_assets.core.analyses.calibration_worlds import (
    COMPARISON_NULL_CLASSES,
    COMPARISON_SIGNAL_CLASSES,
    CSSI_NULL_CLASSES,
    CSSI_SIGNAL_CLASSES,
    NULL_CLASSES,
    PLANTED_LAYER,
    REFERENCE_FEATURE_CLASSES,
    REFERENCE_INDEPENDENT_CLASSES,
    REFERENCE_RESOURCE,
    REFERENCE_SIGNAL_CLASSES,
    SIGNAL_CLASSES,
    WorldShape,
    calibration_world,
    comparison_score_sets,
    cssi_cell_scores,
    cssi_world,
    grouped_cell_scores,
    reference_world,
)
from scinterp_assets.core.analyses.incremental_confirmatory import (
    ConfirmatorySettings,
    confirmatory_incremental_value,
)
from scinterp_assets.core.analyses.incremental_value import ModelSettings, build_design, incremental_value
from scinterp_assets.core.analyses.layer_selection import layer_selection_tests
from scinterp_assets.core.analyses.perturbation_prediction import (
    PerturbationFilter,
    per_perturbation_auroc,
    perturbation_prediction_tests,
    resampled_pf_auroc,
)
from scinterp_assets.core.analyses.reference_nulls_analysis import degree_null_tests
from scinterp_assets.core.analyses.reference_structure import reference_auroc_tests, reference_membership
from scinterp_assets.core.analyses.residualisation import beyond_features_tests
from scinterp_assets.core.analyses.scaling import (
    CellSetScores,
    CssiSettings,
    cssi_evaluation,
    reference_rows,
    scaling_groups,
    scored_pairs,
)
from scinterp_assets.core.analyses.strata import Stratification, expression_pcs, leiden_strata
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.networks.reference_nulls import reference_nulls
from scinterp_assets.core.stats.auroc import auroc_mann_whitney_p
from scinterp_assets.core.datasets.de_labels import DELabelRule, compute_de_labels
from scinterp_assets.core.datasets.preprocessing import LOG_LAYER, sample_control_cells, spearman_matrix
from scinterp_assets.core.datasets.synthetic import SyntheticWorldSpec, simulate_world
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning

RULE = PerturbationFilter(min_positives=3, min_negatives=3)
TARGET_SUM = 1e4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ConfirmatorySettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--folds", type=int, default=defaults.n_folds)
    parser.add_argument("--joint-folds", type=int, default=defaults.joint_folds)
    parser.add_argument("--repeats", type=int, default=defaults.n_repeats)
    parser.add_argument("--bootstrap", type=int, default=defaults.n_bootstrap)
    parser.add_argument("--alpha", type=float, default=defaults.alpha)
    parser.add_argument("--boosted-iter", type=int, default=30)
    parser.add_argument("--boosted-leaves", type=int, default=7)
    parser.add_argument("--perturbations", type=int, default=WorldShape().n_perturbations)
    parser.add_argument("--genes", type=int, default=WorldShape().n_genes)
    parser.add_argument("--study", action="store_true", help="also measure the study's form")
    parser.add_argument("--out", type=Path, default=None, help="write per-world outcomes as JSON lines")
    parser.add_argument("--a01", action="store_true",
                        help="A01 on exchangeable halves of simulated control cells instead of the A05/A06 worlds")
    parser.add_argument("--comparisons", action="store_true",
                        help="A01, A02 and A04 on exchangeable score pairs and a planted layer")
    parser.add_argument("--references", action="store_true",
                        help="A09, A10 and A12 on reference-network worlds")
    parser.add_argument("--cssi", action="store_true",
                        help="A21's CSSI test on simulated screens with state-specific wiring")
    parser.add_argument("--cssi-draws", type=int, default=100, help="random stratifications per CSSI test")
    parser.add_argument("--null-draws", type=int, default=1000,
                        help="A10 degree-preserving draws and A12 gene relabellings per world")
    parser.add_argument("--pf-bootstrap", type=int, default=200,
                        help="two-way bootstrap resamples of A01/A02/A04 (the configuration's default)")
    return parser.parse_args(argv)


def run_world(job: tuple[int, argparse.Namespace]) -> list[dict]:
    """Every (form, score class, model, split) outcome of one world."""
    seed, args = job
    warnings.simplefilter("ignore", DegenerateScoreWarning)
    if args.a01:
        return run_a01_world(seed, args)
    if args.cssi:
        with threadpool_limits(1):
            return run_cssi_world(seed, args)
    if args.references:
        with threadpool_limits(1):  # OpenMP threads spinning against the other worker slow boosting ~100x
            return run_reference_world(seed, args)
    world = calibration_world(seed, WorldShape(n_perturbations=args.perturbations, n_genes=args.genes))
    if args.comparisons:
        return run_comparison_world(seed, world, args)
    design = build_design(world.labels, world.features, list(world.genes), RULE)
    model_settings = ModelSettings(boosted_max_iter=args.boosted_iter, boosted_max_leaf_nodes=args.boosted_leaves)
    settings = ConfirmatorySettings(args.folds, args.joint_folds, args.repeats, args.bootstrap, args.alpha)
    score_sets = [world.score_set(name) for name in (*NULL_CLASSES, *SIGNAL_CLASSES)]
    outcomes = []
    with threadpool_limits(1):
        for result in confirmatory_incremental_value(
            design, score_sets, settings=settings, model_settings=model_settings, seed=seed
        ):
            outcomes.append(_outcome(seed, "confirmatory", result.aggregation, result.model, result.split,
                                     result.delta, result.test.ci_low, result.test.ci_high, result.test.p_value,
                                     args.alpha))
        if args.study:
            for result in incremental_value(
                design, score_sets, n_folds=args.folds, n_bootstrap=args.bootstrap, seed=seed,
                settings=model_settings, confidence=1 - args.alpha, joint_folds=args.joint_folds,
            ):
                c = result.comparison("auroc")
                outcomes.append(_outcome(seed, "study", result.aggregation, result.model, result.split, c.delta,
                                         c.ci_low, c.ci_high, c.p_value, args.alpha))
    return outcomes


def run_a01_world(seed: int, args: argparse.Namespace) -> list[dict]:
    """A01 on exchangeable halves: a synthetic screen (core/datasets/synthetic.py, demo spec, wiring and
    cells from the seed), its control cells split at random into two halves, |Spearman| of each half as two
    edge scores, and A01 of one against the other as the platform runs it (and the study's Wilcoxon).
    The halves are exchangeable, so neither score is better: a rejection is a false positive."""
    screen = simulate_world(SyntheticWorldSpec(wiring_seed=seed, seed=seed))
    controls = sample_control_cells(screen, screen.n_obs, seed, TARGET_SUM)
    genes = list(controls.var_names)
    labels = compute_de_labels(screen, controls, genes, DELabelRule(0.05, 0.5, 30), TARGET_SUM).labels
    first_half = np.random.default_rng(seed).permutation(controls.n_obs) < controls.n_obs // 2
    log_values = np.asarray(controls.layers[LOG_LAYER])
    halves = []
    for cells in (first_half, ~first_half):
        matrix = np.abs(spearman_matrix(log_values[cells]))
        np.fill_diagonal(matrix, np.nan)
        halves.append(matrix)
    score_sets = [ScoreSet("attention", 0, "head_mean", halves[0]), ScoreSet("correlation", NO_LAYER, "none", halves[1])]
    return _comparison_outcomes(seed, "exchangeable_halves", labels, genes, score_sets, args,
                                wanted=("A01:attention_L0_head_mean_vs_correlation",))


def run_cssi_world(seed: int, args: argparse.Namespace) -> list[dict]:
    """A21's pre-specified test for every CSSI score class of one world (module docstring): the CSSI-max AUROC
    gain over pooled on the planted network, against random strata of the same sizes; "claims": p < alpha."""
    world = cssi_world(seed)
    primary = leiden_strata(expression_pcs(world.expression, 20, seed), 5, seed)
    shuffled = Stratification("shuffled", "shuffled", None, np.random.default_rng([seed, 1]).permutation(primary.labels))
    design = scaling_groups(primary, [primary, shuffled], world.rows, 0, rung_sizes=[], heterogeneity_cells=1,
                            seeds=[], n_null_blocks=100, null_seed=seed)
    reference = {"planted": reference_rows(world.truth_edges[["source", "target"]], world.genes, world.rows)}
    valid = scored_pairs(world.rows, world.genes)
    outcomes = []
    for name in (*CSSI_NULL_CLASSES, *CSSI_SIGNAL_CLASSES):
        grouped = grouped_cell_scores(design.groups, world.genes, cssi_cell_scores(world, name.split(",")[0], seed))
        strata = "shuffled" if name.endswith("shuffled strata") else primary.name
        for form, pair_specific_only in (("exploratory", False), ("confirmatory", True)):
            scores = CellSetScores(grouped, world.expression, pair_specific_only)
            table = cssi_evaluation(design, scores, reference, valid, CssiSettings(30, args.cssi_draws, seed),
                                    score_names=["attention"])
            row = table[(table["stratification"] == strata) & (table["aggregation"] == "max")].iloc[0]
            significant = bool(row["p_value"] < args.alpha)
            outcomes.append({"world": seed, "form": form, "score_class": name,
                             "model": "A21 CSSI-max gain" + (", pair-specific" if pair_specific_only else ""),
                             "split": f"leiden_k{primary.requested_k}", "delta": float(row["auroc_gain"]),
                             "p_value": float(row["p_value"]), "claims": significant and row["auroc_gain"] > 0,
                             "rejects": significant})
    return outcomes


def run_comparison_world(seed: int, world, args: argparse.Namespace) -> list[dict]:
    """A01/A02/A04 on every comparison class of one world (module docstring)."""
    wanted = {
        "exchangeable_target_level": ("A04:baseline_variance_vs_correlation",),
        "exchangeable_target_and_pair": ("A01:attention_L0_head_mean_vs_correlation",),
        "exchangeable_layers": ("A01:attention_L0_head_mean_vs_correlation",
                                "A02:attention_head_mean_nested_cv_vs_correlation"),
        "planted_layer": (f"A01:attention_L{PLANTED_LAYER}_head_mean_vs_correlation",
                          "A02:attention_head_mean_nested_cv_vs_correlation",
                          "A04:baseline_variance_vs_correlation"),
    }
    outcomes = []
    for offset, name in enumerate((*COMPARISON_NULL_CLASSES, *COMPARISON_SIGNAL_CLASSES)):
        score_sets = comparison_score_sets(world, name, seed=1_000_003 * (offset + 1) + seed)
        outcomes += _comparison_outcomes(seed, name, world.labels, list(world.genes), score_sets, args, wanted[name])
    return outcomes


def run_reference_world(seed: int, args: argparse.Namespace) -> list[dict]:
    """A12, A09 (beyond features) and A10 for every score class of one reference world (module docstring)."""
    world = reference_world(seed)
    genes, names = list(world.genes), list(world.scores)
    score_sets = list(world.scores.values())
    outcomes = []

    def add(form, name, test, row, claims, rejects, null):
        outcomes.append({"world": seed, "form": form, "score_class": name if null else f"{name} (associated)",
                         "model": test, "split": "reference", "delta": row.get("effect"),
                         "p_value": row["p_value"], "claims": bool(claims), "rejects": bool(rejects)})

    membership = reference_membership(world.reference, genes)
    off_diagonal = ~np.eye(len(genes), dtype=bool)
    a12 = reference_auroc_tests(world.reference, REFERENCE_RESOURCE, genes, score_sets,
                                n_permutations=args.null_draws, seed=seed)
    for name, score_set, row in zip(names, score_sets, a12):
        null = name not in (*REFERENCE_FEATURE_CLASSES[1:], *REFERENCE_SIGNAL_CLASSES)
        significant = row["p_value"] < args.alpha
        add("confirmatory", name, "A12 gene permutation", row, significant and row["effect"] > 0, significant, null)
        area, mann_whitney = auroc_mann_whitney_p(membership[off_diagonal], score_set.matrix[off_diagonal])
        add("study", name, "A12 Mann-Whitney", {"effect": area - 0.5, "p_value": mann_whitney},
            mann_whitney < args.alpha and area > 0.5, mann_whitney < args.alpha, null)
    settings = ConfirmatorySettings(args.folds, args.joint_folds, args.repeats, args.bootstrap, args.alpha)
    model_settings = ModelSettings(boosted_max_iter=args.boosted_iter, boosted_max_leaf_nodes=args.boosted_leaves)
    for name, row in zip(names, beyond_features_tests(world.reference, REFERENCE_RESOURCE, genes, score_sets,
                                                      world.features, min_targets=3, settings=settings,
                                                      model_settings=model_settings, seed=seed)):
        add("confirmatory", name, "A09 beyond features", row, row["ci_low"] > 0, row["p_value"] < args.alpha, True)
    nulls = reference_nulls(world.reference, genes, n_draws=args.null_draws, seed=seed, relations=["regulates"])
    for name, row in zip(names, degree_null_tests(world.reference, genes, score_sets, nulls)):
        add("descriptive", name, "A10 degree null (claims: z > 3)", row, row["statistic"] > 3,
            row["p_value"] < args.alpha, True)
    return outcomes


def _comparison_outcomes(seed, name, labels, genes, score_sets, args, wanted) -> list[dict]:
    """The wanted A01/A02/A04 rows (and their study forms) of one class as outcomes; "claims": a is better
    than b (interval above 0; the study form: p < alpha with a positive effect)."""
    pf = per_perturbation_auroc(labels, genes, score_sets, RULE)
    rows = perturbation_prediction_tests(
        pf, resampled_pf_auroc(labels, genes, score_sets, RULE, n_bootstrap=args.pf_bootstrap, seed=seed),
        alpha=args.alpha)
    if sum(s.method == "attention" for s in score_sets) > 1:
        folds = args.folds
        rows += layer_selection_tests(pf, resampled_pf_auroc(labels, genes, score_sets, RULE, n_bootstrap=args.pf_bootstrap,
                                                             seed=seed, n_target_folds=folds), seed=seed, alpha=args.alpha)
    by_id = {row["test_id"]: row for row in rows}
    outcomes = []
    for test_id in wanted:
        row = by_id[test_id]
        kind = test_id.split(":")[0] + " " + test_id.split(":")[1].split("_vs_")[0].split("_")[0]
        outcomes.append(_outcome(seed, "confirmatory", name, kind, "two-way", row["effect"], row["ci_low"],
                                 row["ci_high"], row["p_value"], args.alpha))
        study = by_id.get(f"{test_id}:study_wilcoxon")
        if study is not None:
            significant = bool(study["p_value"] < args.alpha)
            outcomes.append({"world": seed, "form": "study", "score_class": name, "model": kind,
                             "split": "Wilcoxon", "delta": study["effect"], "p_value": study["p_value"],
                             "claims": significant and study["effect"] > 0, "rejects": significant})
    return outcomes


def _outcome(seed, form, score_class, model, split, delta, ci_low, ci_high, p_value, alpha) -> dict:
    return {"world": seed, "form": form, "score_class": score_class, "model": model, "split": split,
            "delta": delta, "ci_low": ci_low, "ci_high": ci_high, "p_value": p_value,
            "claims": bool(ci_low > 0), "rejects": bool(p_value < alpha)}


def rate(k: int, n: int) -> str:
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return f"{k / n:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def summary_table(outcomes: list[dict], alpha: float) -> tuple[str, bool]:
    """Markdown table of claim and rejection rates; whether every null rate is compatible with <= alpha."""
    groups = defaultdict(list)
    for o in outcomes:
        groups[(o["form"], o["score_class"], o["model"], o["split"])].append(o)
    lines = ["| form | score class | kind | model / test | split | worlds | claims (ci_low > 0; study: better, p < 0.05) "
             "| rejects (p < 0.05) |",
             "|---|---|---|---|---|---|---|---|"]
    calibrated = True
    order = {name: i for i, name in enumerate((
        *NULL_CLASSES, "exchangeable_halves", *COMPARISON_NULL_CLASSES, *REFERENCE_INDEPENDENT_CLASSES,
        *CSSI_NULL_CLASSES, *CSSI_SIGNAL_CLASSES,
        *(f"{name} (associated)" for name in REFERENCE_FEATURE_CLASSES), *SIGNAL_CLASSES,
        *COMPARISON_SIGNAL_CLASSES, *(f"{name} (associated)" for name in REFERENCE_SIGNAL_CLASSES)))}
    for key in sorted(groups, key=lambda k: (k[0], order[k[1]], k[2], k[3])):
        rows = groups[key]
        n = len(rows)
        claims, rejects = sum(r["claims"] for r in rows), sum(r["rejects"] for r in rows)
        kind = ("signal" if key[1].split(" ")[0] in (*SIGNAL_CLASSES, *COMPARISON_SIGNAL_CLASSES, *CSSI_SIGNAL_CLASSES)
                else "associated" if key[1].endswith("(associated)") else "null")
        if kind == "null" and key[0] == "confirmatory":
            for k in (claims, rejects):
                calibrated &= binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact").low <= alpha
        lines.append(f"| {key[0]} | {key[1]} | {kind} | {key[2]} | {key[3]} | {n} | {rate(claims, n)} | "
                     f"{rate(rejects, n)} |")
    return "\n".join(lines), calibrated


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.a01:
        print(f"calibration of A01: {args.worlds} simulated screens (demo spec), control cells split into "
              f"exchangeable halves, two-way bootstrap {args.pf_bootstrap}, alpha {args.alpha}, "
              f"{args.processes} processes", flush=True)
    elif args.cssi:
        print(f"calibration of A21: {args.worlds} simulated screens with state-specific wiring (500 control cells), "
              f"Leiden K = 5 on 20 expression PCs, {args.cssi_draws} random stratifications from 100 blocks, alpha "
              f"{args.alpha}, {args.processes} processes", flush=True)
    elif args.references:
        print(f"calibration of A09/A10/A12: {args.worlds} reference worlds, {args.null_draws} degree-preserving "
              f"draws, alpha {args.alpha}, {args.processes} processes", flush=True)
    elif args.comparisons:
        print(f"calibration of A01/A02/A04: {args.worlds} worlds ({args.perturbations} perturbations x {args.genes} "
              f"genes), two-way bootstrap {args.pf_bootstrap}, A02 {args.folds} x {args.folds} folds, alpha "
              f"{args.alpha}, {args.processes} processes", flush=True)
    else:
        print(f"calibration of A05/A06: {args.worlds} worlds ({args.perturbations} perturbations x {args.genes} "
              f"genes), folds {args.folds} (joint {args.joint_folds}x{args.joint_folds}), repeats {args.repeats}, "
              f"bootstrap {args.bootstrap}, alpha {args.alpha}, boosted {args.boosted_iter} iterations / "
              f"{args.boosted_leaves} leaves, {args.processes} processes", flush=True)
    jobs = [(args.first_seed + i, args) for i in range(args.worlds)]
    outcomes: list[dict] = []
    started = time.perf_counter()
    sink = args.out.open("w") if args.out else None
    with get_context("spawn").Pool(args.processes) as pool:
        for done, world in enumerate(pool.imap_unordered(run_world, jobs), start=1):
            outcomes += world
            if sink:
                sink.writelines(json.dumps(o) + "\n" for o in world)
                sink.flush()
            if done % 10 == 0 or done == args.worlds:
                print(f"  {done}/{args.worlds} worlds, {time.perf_counter() - started:.0f} s", flush=True)
    if sink:
        sink.close()
    table, calibrated = summary_table(outcomes, args.alpha)
    print(table)
    print(f"every confirmatory null rate compatible with <= {args.alpha}: {'yes' if calibrated else 'NO'}")
    return 0 if calibrated else 1


if __name__ == "__main__":
    sys.exit(main())
