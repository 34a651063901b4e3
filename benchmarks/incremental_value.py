"""Incremental value (A05) at the study's size: the perturbation-bootstrap engine against naive references.

    python -m benchmarks.incremental_value [--perturbations 280] [--genes 2000] [--bootstrap 200] [--quick]

A seeded synthetic screen of the study's shape: 280 perturbations of a 2,000-gene universe, each ranking the
other 1,999 genes, 559,720 (perturbation, target) rows. Target features (mean, variance, detection rate)
come from a gamma model; P(DE) = sigmoid(intercept + 1.5 z(log variance) + 0.5 e) with e ~ N(0, 1) per
pair (about 5% positives); the edge score is 0.3 e + N(0, 1) noise with 2% of pairs missing, so the
score carries a little information beyond the features and the imputation path runs.

  engine   `incremental_value_tests`, timed end to end for the perturbation split: design; the confirmatory
           form (flexible logistic and boosted models with and without the residualised edge score, 5-fold
           GroupKFold by perturbation repeated over 3 fold seeds, the score's cross-fitted residualisation,
           200 two-way resamples of perturbations x targets); the study's form (plain models, 20 fits, 200
           perturbation resamples); registry rows. The speed target: under 3 minutes on 2 cores.
  naive    the straightforward metric bootstrap: per resample, the resampled perturbations' rows written
           out and scored with sklearn (roc_auc_score, average_precision_score, and a Python loop over
           perturbations for per-perturbation roc_auc_score and top-k recall), for the gene-only and the
           with-score predictions. Timed on a few resamples of the logistic model's out-of-fold predictions
           (fit here once more, outside the engine's time) and reported per resample; its values are
           checked against the engine's on the same resamples.
  refit    a bootstrap that refits every model per resample costs at least one end-to-end fit set per
           resample; extrapolated from the engine's measured time, not run.

The share of the CPUs other processes took during each measurement is printed; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks.contention import contention_warning, timed
from scinterp_assets.core.analyses.incremental_confirmatory import ConfirmatorySettings, incremental_value_tests
from scinterp_assets.core.analyses.incremental_value import (
    ModelSettings,
    build_design,
    edge_score_columns,
    evaluate_predictions,
    make_folds,
    out_of_fold_scores,
    stream_seed,
)
from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.stats.bootstrap import resample_counts

TARGET_SECONDS = 180.0  # A05, both models, 560k rows, 5 folds, 200 resamples: under 3 minutes
PARITY_TOLERANCE = 1e-9  # max |engine - naive| of any metric on the resamples both computed
RECALL_AT = (10, 50, 100)
LABEL = 52  # width of the step column


@dataclass(frozen=True)
class Setup:
    perturbations: int = 280
    genes: int = 2000
    bootstrap: int = 200
    folds: int = 5
    repeats: int = 3
    naive_resamples: int = 3
    missing_share: float = 0.02
    seed: int = 0
    threads: int | None = None  # OpenMP threads of the boosted model; None: the library's default


def make_screen(setup: Setup) -> tuple[pd.DataFrame, pd.DataFrame, list[str], ScoreSet]:
    """Seeded labels (perturbation, target, is_de), gene-level features, genes and one edge score set."""
    rng = np.random.default_rng(setup.seed)
    g = setup.genes
    genes = [f"G{i:05d}" for i in range(g)]
    mean = rng.gamma(1.5, 0.8, g)
    variance = mean * rng.lognormal(0.0, 0.4, g)
    features = pd.DataFrame(
        {"gene": genes, "mean": mean, "variance": variance, "detection_rate": 1 - np.exp(-1.2 * mean)}
    )
    log_variance = np.log(variance)
    z = (log_variance - log_variance.mean()) / log_variance.std()
    latent = rng.normal(size=(setup.perturbations, g))
    logit = -3.9 + 1.5 * z[None, :] + 0.5 * latent
    is_de = rng.random((setup.perturbations, g)) < 1 / (1 + np.exp(-logit))
    matrix = np.full((g, g), np.nan)
    matrix[: setup.perturbations] = 0.3 * latent + rng.normal(size=(setup.perturbations, g))
    matrix[rng.random((g, g)) < setup.missing_share] = np.nan
    source, target = np.nonzero(~np.eye(setup.perturbations, g, dtype=bool))
    names = np.asarray(genes, dtype=object)
    labels = pd.DataFrame(
        {"perturbation": names[source], "target": names[target], "is_de": is_de[source, target]}
    )
    return labels, features, genes, ScoreSet("attention", 3, "head_mean", matrix)


# ----------------------------------------------------------------------------------------------------------
# Naive reference


def naive_bootstrap(
    is_de: np.ndarray,
    predictions: Sequence[np.ndarray],
    perturbation: np.ndarray,
    weights: np.ndarray,
    recall_at: Sequence[int] = RECALL_AT,
) -> np.ndarray:
    """(resamples, predictions, metrics) with sklearn on each resample written out row by row; metrics
    in the engine's order (auroc, auroc_per_perturbation, auprc, recall_at_k...)."""
    segments = np.searchsorted(perturbation, np.arange(perturbation.max() + 2))
    values = []
    for w in weights:
        chosen = np.repeat(np.arange(len(w)), w.astype(int))
        rows = np.concatenate([np.arange(segments[p], segments[p + 1]) for p in chosen])
        y = is_de[rows]
        per_resample = []
        for scores in predictions:
            s = scores[rows]
            pooled = [roc_auc_score(y, s), average_precision_score(y, s)]
            per_auroc, per_recall = [], [[] for _ in recall_at]
            for p in chosen:
                yp, sp = is_de[segments[p] : segments[p + 1]], scores[segments[p] : segments[p + 1]]
                per_auroc.append(roc_auc_score(yp, sp))
                order = np.argsort(-sp, kind="stable")
                for j, k in enumerate(recall_at):
                    per_recall[j].append(_expected_hits(yp, sp, order, k) / yp.sum())
            per_resample.append([pooled[0], np.mean(per_auroc), pooled[1], *map(np.mean, per_recall)])
        values.append(per_resample)
    return np.asarray(values)


def _expected_hits(y: np.ndarray, s: np.ndarray, order: np.ndarray, k: int) -> float:
    if k >= len(s):
        return float(y.sum())
    cut = s[order[k - 1]]
    above, tied = s > cut, s == cut
    return float(y[above].sum() + (k - above.sum()) * y[tied].sum() / tied.sum())


# ----------------------------------------------------------------------------------------------------------
# Measurement


def run_benchmark(setup: Setup) -> dict:
    (labels, features, genes, score_set), build = timed(make_screen, setup)
    rule = PerturbationFilter(min_positives=3, min_negatives=3)
    rows, engine = timed(
        incremental_value_tests,
        labels,
        features,
        genes,
        [score_set],
        rule=rule,
        settings=ConfirmatorySettings(n_folds=setup.folds, n_repeats=setup.repeats, n_bootstrap=setup.bootstrap),
        seed=setup.seed,
        splits=("perturbation_split",),
        models=("logistic", "boosted"),
        recall_at=RECALL_AT,
    )
    results = {
        row["test_id"]: {key: row[key] for key in ("statistic", "effect", "ci_low", "ci_high", "p_value")}
        for row in rows
        if row["test_id"].endswith(("attention_L3_head_mean", ":gene_only", "study:gene_only:auroc",
                                    "study:attention_L3_head_mean:auroc"))
    }

    # the same out-of-fold logistic predictions and resamples the engine used, rebuilt outside its time
    design = build_design(labels, features, genes, rule)
    folds = make_folds(design, "perturbation_split", setup.folds, setup.seed)
    model_seed = stream_seed(setup.seed, "models")
    x = np.hstack([design.features, edge_score_columns(design, score_set).values])
    settings = ModelSettings()
    predictions = [
        out_of_fold_scores(design.features, design.is_de, folds, "logistic", settings, model_seed),
        out_of_fold_scores(x, design.is_de, folds, "logistic", settings, model_seed),
    ]
    weights = resample_counts(design.n_perturbations, setup.bootstrap, stream_seed(setup.seed, "bootstrap"))

    def engine_metrics():
        return [
            evaluate_predictions(
                design.is_de, p, design.perturbation, design.n_perturbations, weights, RECALL_AT
            )
            for p in predictions
        ]

    metrics, engine_bootstrap = timed(engine_metrics)
    naive_values, naive = timed(
        naive_bootstrap, design.is_de, predictions, design.perturbation, weights[: setup.naive_resamples]
    )
    engine_values = np.stack([m.replicates[:, : setup.naive_resamples] for m in metrics], axis=1).transpose(
        2, 1, 0
    )
    engine_bootstrap.update(
        resamples=setup.bootstrap, per_resample=engine_bootstrap["seconds"] / setup.bootstrap
    )
    naive.update(resamples=setup.naive_resamples, per_resample=naive["seconds"] / setup.naive_resamples)
    return {
        "setup": asdict(setup),
        "screen": {
            "rows": design.n_rows,
            "perturbations": design.n_perturbations,
            "positives": int(design.is_de.sum()),
            "positive_share": float(design.is_de.mean()),
            "missing_scores": int(np.isnan(score_set.matrix[design.source, design.target]).sum()),
            "build_seconds": build["seconds"],
        },
        "engine": engine,
        "engine_bootstrap": engine_bootstrap,
        "naive": naive,
        "parity_max_abs_diff": float(np.max(np.abs(engine_values - naive_values))),
        "results": results,
    }


# ----------------------------------------------------------------------------------------------------------
# Report


def _share(record: dict) -> str:
    share = record["others_cpu_share"]
    return "n/a" if share is None else f"{share:.0%}"


def format_report(result: dict) -> str:
    setup, screen = result["setup"], result["screen"]
    engine, boot, naive = result["engine"], result["engine_bootstrap"], result["naive"]
    resamples = setup["bootstrap"]
    naive_full = naive["per_resample"] * resamples
    # confirmatory: 2 models x with/without x folds x repeats + the score's residualisation (folds x repeats);
    # the study's form: 2 models x with/without x folds
    fits = 4 * setup["folds"] * setup["repeats"] + setup["folds"] * setup["repeats"] + 4 * setup["folds"]
    engine_label = f"engine: A05 end to end ({fits} fits, {resamples} resamples)"
    speed_up = naive["per_resample"] / boot["per_resample"]
    speed = "ok" if engine["seconds"] < TARGET_SECONDS else "MISS"
    parity = "ok" if result["parity_max_abs_diff"] <= PARITY_TOLERANCE else "MISMATCH"
    lines = [
        "",
        (
            f"screen: {screen['rows']:,} rows = {screen['perturbations']} perturbations x "
            f"{setup['genes'] - 1:,} targets; {screen['positives']:,} positives "
            f"({screen['positive_share']:.1%}); {screen['missing_scores']:,} missing scores (imputed)"
        ),
        "",
        f"{'step':<{LABEL}} | {'seconds':>8} | {'per resample':>12} | others' CPU",
        f"{engine_label:<{LABEL}} | {engine['seconds']:8.1f} | {'':>12} | {_share(engine)}",
        (
            f"{'engine: metric bootstrap, one prediction pair':<{LABEL}} | {boot['seconds']:8.2f} | "
            f"{boot['per_resample']:12.5f} | {_share(boot)}"
        ),
        (
            f"{'naive:  sklearn on written-out resamples, one pair':<{LABEL}} | {naive['seconds']:8.2f} | "
            f"{naive['per_resample']:12.3f} | {_share(naive)}"
        ),
        f"(the naive reference timed on {naive['resamples']} resamples; seconds per resample are comparable)",
        "",
        f"A05 end to end: {engine['seconds']:.1f} s (target < {TARGET_SECONDS:.0f} s: {speed}), {fits} fits",
        (
            f"metric bootstrap, engine/naive speed-up per resample: {speed_up:.0f}x (naive, extrapolated to "
            f"{resamples} resamples: {naive_full:.0f} s per prediction pair, "
            f"{2 * naive_full:.0f} s for 2 models)"
        ),
        (
            f"refit bootstrap (extrapolated, not run): every fit once per resample, "
            f">= {engine['seconds']:.0f} s per resample, "
            f">= {engine['seconds'] * resamples / 60:.0f} min for {resamples}"
        ),
        (
            f"parity engine vs naive on {naive['resamples']} resamples: max |difference| "
            f"{result['parity_max_abs_diff']:.2e} ({parity})"
        ),
        "",
        "results (confirmatory: per-perturbation AUROC, two-way bootstrap; study: pooled AUROC, bootstrap over "
        "perturbations; delta = with edge score - gene only, 95% interval):",
    ]
    for test_id, row in sorted(result["results"].items()):
        if test_id.endswith(("gene_only", "gene_only:auroc")):
            lines.append(
                f"  {test_id:<55} AUROC {row['statistic']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
            )
        else:
            lines.append(
                f"  {test_id:<55} delta {row['effect']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
                f" p = {row['p_value']:.4f}"
            )
    warning = contention_warning({"engine": engine, "engine bootstrap": boot, "naive": naive})
    if warning:
        lines.append(warning)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.incremental_value",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--perturbations", type=int, default=None, help="default 280 (--quick 40)")
    parser.add_argument("--genes", type=int, default=None, help="default 2000 (--quick 300)")
    parser.add_argument("--bootstrap", type=int, default=None, help="resamples (default 200; --quick 50)")
    parser.add_argument(
        "--naive-resamples", type=int, default=None, help="naive resamples timed (default 3; --quick 2)"
    )
    parser.add_argument("--folds", type=int, default=Setup.folds)
    parser.add_argument("--repeats", type=int, default=Setup.repeats, help="confirmatory CV repeats (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: the library's)")
    parser.add_argument("--quick", action="store_true", help="a small screen: 40 x 300, 50 resamples")
    parser.add_argument("--seed", type=int, default=Setup.seed)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print its report and return the measurements (with the report text)."""
    args = parse_args(argv)
    setup = Setup(
        perturbations=args.perturbations or (40 if args.quick else Setup.perturbations),
        genes=args.genes or (300 if args.quick else Setup.genes),
        bootstrap=args.bootstrap or (50 if args.quick else Setup.bootstrap),
        naive_resamples=args.naive_resamples or (2 if args.quick else Setup.naive_resamples),
        folds=args.folds,
        repeats=args.repeats,
        seed=args.seed,
        threads=args.threads,
    )
    print(
        f"incremental value (A05): {setup.perturbations} perturbations x {setup.genes - 1} targets, "
        f"{setup.folds} folds, {setup.bootstrap} resamples, seed {setup.seed}, {os.cpu_count()} CPUs",
        flush=True,
    )
    if setup.threads is None:
        result = run_benchmark(setup)
    else:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        with threadpool_limits(setup.threads):
            result = run_benchmark(setup)
    report = format_report(result)
    print(report, flush=True)
    return {**result, "report": report}


if __name__ == "__main__":
    main()
