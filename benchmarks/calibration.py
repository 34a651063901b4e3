"""Calibration of the confirmatory incremental-value tests (A05/A06): false-positive rate on null worlds and
power on planted-signal worlds, each with a Clopper-Pearson 95% interval.

    .venv/bin/python -m benchmarks.calibration                    # 200 worlds, 2 processes (make calibrate)
    .venv/bin/python -m benchmarks.calibration --worlds 20        # a quick look
    .venv/bin/python -m benchmarks.calibration --study            # also the study's form (descriptive rows)
    .venv/bin/python -m benchmarks.calibration --a01              # A01 on exchangeable halves of control cells

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
simulated screen whose control cells are split into exchangeable halves (run_a01_world): A01's paired
Wilcoxon of one half's co-expression against the other's must reject at most at its nominal rate.
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

from scinterp_assets.core.analyses.calibration_worlds import NULL_CLASSES, SIGNAL_CLASSES, WorldShape, calibration_world
from scinterp_assets.core.analyses.incremental_confirmatory import (
    ConfirmatorySettings,
    confirmatory_incremental_value,
)
from scinterp_assets.core.analyses.incremental_value import ModelSettings, build_design, incremental_value
from scinterp_assets.core.analyses.perturbation_prediction import (
    PerturbationFilter,
    per_perturbation_auroc,
    perturbation_prediction_tests,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet
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
                        help="A01 (paired Wilcoxon of PF AUROC) on exchangeable halves of simulated control cells "
                             "instead of the A05/A06 worlds")
    return parser.parse_args(argv)


def run_world(job: tuple[int, argparse.Namespace]) -> list[dict]:
    """Every (form, score class, model, split) outcome of one world."""
    seed, args = job
    warnings.simplefilter("ignore", DegenerateScoreWarning)
    if args.a01:
        row = run_a01_world(seed)
        # "claims": the first half's score is better than the second's (as A01 would claim attention is)
        return [{"world": seed, "form": "confirmatory", "score_class": "exchangeable_halves", "model": "A01 Wilcoxon",
                 "split": "perturbations", "delta": row["effect"], "p_value": row["p_value"],
                 "claims": bool(row["p_value"] < args.alpha and row["effect"] > 0),
                 "rejects": bool(row["p_value"] < args.alpha)}]
    world = calibration_world(seed, WorldShape(n_perturbations=args.perturbations, n_genes=args.genes))
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


def run_a01_world(seed: int) -> dict:
    """A01 on exchangeable halves: a synthetic screen (core/datasets/synthetic.py, demo spec, wiring and
    cells from the seed), its control cells split at random into two halves, |Spearman| of each half as two
    edge scores, PF AUROC per perturbation and the registry's paired Wilcoxon of one against the other.
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
    pf = per_perturbation_auroc(
        labels, genes, [ScoreSet("attention", 0, "head_mean", halves[0]), ScoreSet("correlation", NO_LAYER, "none",
                                                                                   halves[1])], RULE
    )
    (row,) = [r for r in perturbation_prediction_tests(pf) if r["analysis_id"] == "A01" and r["confirmatory"]]
    return row


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
    lines = ["| form | score class | kind | model | split | worlds | claims (A05/A06: ci_low > 0; A01: better, p < 0.05) "
             "| rejects (p < 0.05) |",
             "|---|---|---|---|---|---|---|---|"]
    calibrated = True
    order = {name: i for i, name in enumerate((*NULL_CLASSES, "exchangeable_halves", *SIGNAL_CLASSES))}
    for key in sorted(groups, key=lambda k: (k[0], order[k[1]], k[2], k[3])):
        rows = groups[key]
        n = len(rows)
        claims, rejects = sum(r["claims"] for r in rows), sum(r["rejects"] for r in rows)
        kind = "signal" if key[1] in SIGNAL_CLASSES else "null"
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
              f"exchangeable halves, alpha {args.alpha}, {args.processes} processes", flush=True)
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
