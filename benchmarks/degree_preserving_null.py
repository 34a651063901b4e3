"""Degree-preserving null: the vectorised curveball sampler against a naive per-trade reference.

    python -m benchmarks.degree_preserving_null [--draws 1000] [--quick] [--naive-draws 20]

Both methods rewire the same seeded TF -> target network (default: 200 TFs with log-normal, heavy-tailed
out-degree over 2,000 genes, targets drawn with log-normal popularity, 10,000 edges), keeping every node's
out- and in-degree, each draw an independent chain of the same number of trades started at the observed
network:

  engine  `core.networks.null.degree_preserving_null`: global curveball rounds (every row traded once per
          round), numpy-vectorised over all pairs of a round and over a block of chains, plus 3-cycle
          reorientations, every draw verified
  naive   the textbook per-trade curveball (Strona et al. 2014) with Python sets: one random pair of rows per
          trade, the directed no-self-loop rule, no 3-cycle moves; timed on a few draws and reported per draw

The naive reference runs in the same process right after the engine, so the ratio compares the two on the
same machine state; the share of the CPUs other processes took during each measurement is printed. Both
methods' draws go through `verify_null`, and their median Jaccard distances from the observed network are
printed side by side: similar medians show the two did comparable work. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from benchmarks.contention import contention_warning, timed
from scinterp_assets.core.networks.null import (
    DEFAULT_TRADES_PER_ROW,
    degree_preserving_null,
    edge_codes,
    verify_null,
)

TARGET_SECONDS = 60.0  # the speed target: 1,000 draws of a 10,000-edge network in under a minute
TARGET_DRAWS = 1000
HEADER = (
    "method | draws | seconds | s/draw | per 1,000 draws | median Jaccard distance | verified "
    "| others' CPU"
)
TARGET_LINE = "engine, {draws:,} draws: {seconds:.1f} s (target < {target:.0f} s: {verdict})"
PLATEAU_TOLERANCE = 0.01  # mean distance where draws are taken, relative to the curve's last quarter


@dataclass(frozen=True)
class Setup:
    genes: int = 2000
    tfs: int = 200
    edges: int = 10_000
    out_degree_sigma: float = 1.2  # log-normal spread of TF out-degrees
    max_out_share: float = 0.25  # no TF regulates more than this share of the genes
    popularity_sigma: float = 1.0  # log-normal spread of how often a gene is a target
    draws: int = TARGET_DRAWS
    naive_draws: int = 20
    trades_per_draw: int | None = None  # None: the engine's default (DEFAULT_TRADES_PER_ROW x TFs)
    seed: int = 0


def make_network(setup: Setup) -> tuple[np.ndarray, np.ndarray]:
    """A seeded TF -> target network: (sources, targets) node indices, no self pairs or duplicates.

    Out-degrees are log-normal (sigma `out_degree_sigma`) scaled to about `edges` in total, at least 3 (the
    FRAMEWORK's minimum targets per TF) and at most `max_out_share` of the genes; targets are drawn without
    replacement with log-normal gene popularity, so in-degrees are heavy-tailed too.
    """
    rng = np.random.default_rng(setup.seed)
    weights = rng.lognormal(0.0, setup.out_degree_sigma, setup.tfs)
    cap = max(3, int(setup.max_out_share * setup.genes))
    scaled = np.round(weights / weights.sum() * setup.edges)
    out_degree = np.clip(scaled, 3, min(cap, setup.genes - 1)).astype(int)
    tfs = rng.choice(setup.genes, setup.tfs, replace=False)
    popularity = rng.lognormal(0.0, setup.popularity_sigma, setup.genes)
    sources, targets = [], []
    for tf, degree in zip(tfs, out_degree):
        p = popularity.copy()
        p[tf] = 0.0
        sources.append(np.full(degree, tf))
        targets.append(rng.choice(setup.genes, degree, replace=False, p=p / p.sum()))
    return np.concatenate(sources), np.concatenate(targets)


def naive_curveball(
    sources: np.ndarray, targets: np.ndarray, n_nodes: int, *, n_draws: int, trades_per_draw: int, seed: int
) -> np.ndarray:
    """(n_draws, n_edges) sorted edge codes: independent per-trade curveball chains with Python sets."""
    rng = random.Random(seed)
    observed: dict[int, set[int]] = {}
    for s, t in zip(sources.tolist(), targets.tolist()):
        observed.setdefault(s, set()).add(t)
    rows = sorted(observed)
    draws = []
    for _ in range(n_draws):
        lists = {row: set(members) for row, members in observed.items()}
        for _ in range(trades_per_draw):
            i, j = rng.sample(rows, 2)
            a, b = lists[i], lists[j]
            only_a, only_b = a - b - {j}, b - a - {i}  # j may not enter i's list, nor i j's
            if not only_a or not only_b:
                continue
            pool = list(only_a | only_b)
            rng.shuffle(pool)
            lists[i] = (a - only_a) | set(pool[: len(only_a)])
            lists[j] = (b - only_b) | set(pool[len(only_a) :])
        draws.append(sorted(row * n_nodes + t for row, members in lists.items() for t in members))
    return np.array(draws, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# Measurement


def run_benchmark(setup: Setup) -> dict:
    sources, targets = make_network(setup)
    observed = edge_codes(sources, targets, setup.genes)
    out_degree = np.bincount(sources, minlength=setup.genes)
    in_degree = np.bincount(targets, minlength=setup.genes)
    network = {
        "edges": int(observed.size),
        "tfs": int((out_degree > 0).sum()),
        "genes": setup.genes,
        "out_degree_median": float(np.median(out_degree[out_degree > 0])),
        "out_degree_max": int(out_degree.max()),
        "in_degree_max": int(in_degree.max()),
    }
    trades = setup.trades_per_draw
    draws, engine = timed(
        degree_preserving_null, sources, targets, setup.genes, n_draws=setup.draws, seed=setup.seed,
        trades_per_draw=trades,
    )
    diagnostics = draws.diagnostics
    curve = diagnostics.mixing_curve
    distance = curve["mean_jaccard_distance"].to_numpy()
    plateau = float(distance[-max(1, len(distance) // 4) :].mean())
    at_use = float(distance[curve["trades"].to_numpy() == draws.trades_per_draw][0])
    engine.update(
        draws=setup.draws,
        seconds_per_draw=engine["seconds"] / setup.draws,
        trades_per_draw=draws.trades_per_draw,
        median_jaccard_distance=diagnostics.median_distance,
        expected_jaccard_distance=diagnostics.expected_distance,
        distance_at_use=at_use,
        plateau_distance=plateau,
        passed=diagnostics.passed,
        summary=diagnostics.summary(),
    )
    naive_codes, naive = timed(
        naive_curveball, sources, targets, setup.genes, n_draws=setup.naive_draws,
        trades_per_draw=draws.trades_per_draw, seed=setup.seed,
    )
    naive_check = verify_null(observed, naive_codes, setup.genes)
    naive.update(
        draws=setup.naive_draws,
        seconds_per_draw=naive["seconds"] / setup.naive_draws,
        median_jaccard_distance=naive_check.median_distance,
        passed=naive_check.passed,
    )
    return {"setup": asdict(setup), "network": network, "engine": engine, "naive": naive}


# ----------------------------------------------------------------------------------------------------------
# Report


def _share(record: dict) -> str:
    share = record["others_cpu_share"]
    return "n/a" if share is None else f"{share:.0%}"


def _row(name: str, record: dict, per_target: float, extrapolated: bool) -> str:
    return (
        f"{name:<6} | {record['draws']:>5} | {record['seconds']:7.1f} | {record['seconds_per_draw']:.4f} | "
        f"{per_target:>11.1f} s{'*' if extrapolated else ' '} | {record['median_jaccard_distance']:23.4f} | "
        f"{'yes' if record['passed'] else 'NO':>8} | {_share(record)}"
    )


def format_report(result: dict) -> str:
    network, engine, naive = result["network"], result["engine"], result["naive"]
    engine_per_target = engine["seconds_per_draw"] * TARGET_DRAWS
    naive_per_target = naive["seconds_per_draw"] * TARGET_DRAWS
    ratio = naive["seconds_per_draw"] / engine["seconds_per_draw"]
    plateau_ok = engine["distance_at_use"] >= (1 - PLATEAU_TOLERANCE) * engine["plateau_distance"]
    speed = "ok" if engine_per_target < TARGET_SECONDS else "MISS"
    shape = (
        f"network: {network['edges']:,} edges, {network['tfs']} TFs over {network['genes']:,} genes; "
        f"TF out-degree median {network['out_degree_median']:.0f}, max {network['out_degree_max']}; "
        f"gene in-degree max {network['in_degree_max']}"
    )
    mixing = (
        f"mixing: mean distance where draws are taken {engine['distance_at_use']:.4f}, plateau (last quarter "
        f"of the curve, run to 2x the trades) {engine['plateau_distance']:.4f}: "
        f"{'ok' if plateau_ok else 'NOT PLATEAUED'}"
    )
    lines = [
        "",
        shape,
        f"trades per draw: {engine['trades_per_draw']:,} (independent chains from the observed network)",
        "",
        HEADER,
        _row("engine", engine, engine_per_target, engine["draws"] != TARGET_DRAWS),
        _row("naive", naive, naive_per_target, naive["draws"] != TARGET_DRAWS),
        "(* extrapolated per draw from the draws measured)",
        "",
        TARGET_LINE.format(
            draws=TARGET_DRAWS, seconds=engine_per_target, target=TARGET_SECONDS, verdict=speed
        ),
        f"engine/naive speed-up per draw: {ratio:.1f}x",
        mixing,
        f"Chung-Lu approximation of a random graph's distance: {engine['expected_jaccard_distance']:.4f}",
    ]
    warning = contention_warning({"engine": engine, "naive": naive})
    if warning:
        lines.append(warning)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.degree_preserving_null", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=None, help="engine draws (default 1000; --quick 100)")
    parser.add_argument(
        "--naive-draws", type=int, default=None, help="naive draws timed (default 20; --quick 3)"
    )
    parser.add_argument("--quick", action="store_true", help="100 engine draws, 3 naive draws")
    parser.add_argument("--genes", type=int, default=Setup.genes)
    parser.add_argument("--tfs", type=int, default=Setup.tfs)
    parser.add_argument("--edges", type=int, default=Setup.edges)
    parser.add_argument("--trades-per-draw", type=int, default=None,
                        help=f"default: the engine's ({DEFAULT_TRADES_PER_ROW} x TFs)")
    parser.add_argument("--seed", type=int, default=Setup.seed)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print its report and return the measurements (with the report text)."""
    args = parse_args(argv)
    setup = Setup(
        genes=args.genes,
        tfs=args.tfs,
        edges=args.edges,
        draws=args.draws or (100 if args.quick else TARGET_DRAWS),
        naive_draws=args.naive_draws or (3 if args.quick else Setup.naive_draws),
        trades_per_draw=args.trades_per_draw,
        seed=args.seed,
    )
    print(
        f"degree-preserving null: {setup.draws} engine draws, {setup.naive_draws} naive draws, "
        f"{setup.edges:,} edges requested, seed {setup.seed}",
        flush=True,
    )
    result = run_benchmark(setup)
    report = format_report(result)
    print(report, flush=True)
    return {**result, "report": report}


if __name__ == "__main__":
    main()
