"""Family P, A05/A06 in their confirmatory form: does an edge score add to what both genes' features say?

The study's form (kept as descriptive rows, incremental_value.py) compares a plain logistic model on the
target's features with the same model plus the raw edge score, by pooled AUROC with a bootstrap over
perturbations. It rejects far above its nominal rate on null worlds: a nonlinear function of the
features "adds" what the linear gene-only arm cannot express, pooled AUROC rewards a score that merely
tells perturbations apart, and a bootstrap over perturbations ignores that targets are shared. The
confirmatory form differs in four ways:

1. Both arms see both genes' features (target and perturbed gene) and are flexible: the logistic arm is
   additive in cubic B-splines of every feature (quantile scale), the boosted arm is gradient-boosted trees.
2. The edge score enters residualised: centred within its perturbation (a per-perturbation constant cannot
   rank targets), then cross-fitted on both genes' features with boosted regression trees (folds grouped by
   target gene, so a target's score is predicted from its features, never from itself; one
   residualisation, which uses no labels, serves every model, split and repeat). A score that is
   any function of the features leaves only fitting noise. A missing-score indicator is residualised the
   same way and enters linearly.
3. The metric is the per-perturbation AUROC (mean over perturbations of the within-perturbation AUROC of
   the out-of-fold predictions), the PF view of FRAMEWORK section 2.
4. Uncertainty: cross-validation is repeated over n_repeats fold seeds and a two-way bootstrap resamples
   perturbations and targets together (the within-perturbation AUROC is re-weighted by the target
   multiplicities, the mean over perturbations by the perturbation multiplicities; resample b uses repeat
   b mod n_repeats, so fold-assignment variance enters the interval). The point estimate is the mean delta
   over repeats; interval and two-sided p come from stats.bootstrap.bootstrap_test and agree by
   construction (p < alpha exactly when the interval excludes 0).

A score whose residual is constant (e.g. a function of the perturbed gene alone) is degenerate: the
with-score predictions are the gene-only ones, delta 0, p 1. Descriptive rows of the same models (pooled
AUROC, AUPRC, top-k recall on the first repeat, perturbation bootstrap) accompany each confirmatory row.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.incremental_value import (
    CONFIRMATORY_METHODS,
    DEFAULT_MODEL_SETTINGS,
    GENE_LEVEL_FEATURES,
    MODELS,
    NEGATIVES,
    RECALL_AT,
    SPLIT_ANALYSIS,
    SPLITS,
    DesignTable,
    EdgeColumns,
    IncrementalValueResult,
    ModelSettings,
    build_design,
    check_choices,
    check_score_sets,
    compare_metrics,
    edge_score_columns,
    evaluate_predictions,
    folds_of_split,
    incremental_value,
    incremental_value_rows,
    make_folds,
    make_regressor,
    out_of_fold_scores,
    result_identity,
    spline_basis,
    stream_seed,
)
from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.progress import Progress, no_progress
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning, resampled_auroc
from scinterp_assets.core.stats.bootstrap import BootstrapTest, bootstrap_test, resample_counts

CONFIRMATORY_METRIC = "auroc_per_perturbation"
DESCRIPTIVE_METRICS = ("auroc", "auprc")  # with recall_at_<k>; per-perturbation AUROC is the confirmatory one


@dataclass(frozen=True)
class ConfirmatorySettings:
    """Cross-validation and bootstrap of the confirmatory form (analyses.incremental_value_* in the
    configuration)."""

    n_folds: int = 5
    joint_folds: int = 3  # per axis: the joint split fits joint_folds^2 blocks
    n_repeats: int = 3
    n_bootstrap: int = 200
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if min(self.n_folds, self.joint_folds) < 2 or self.n_repeats < 1:
            raise ValueError("n_folds and joint_folds must be >= 2 and n_repeats >= 1")
        if self.n_bootstrap < self.n_repeats:
            raise ValueError("n_bootstrap must be at least n_repeats (each repeat needs resamples)")


# ----------------------------------------------------------------------------------------------------------
# Two-way resampling of the per-perturbation AUROC


@dataclass(frozen=True)
class TwoWayResamples:
    """Multiplicities of perturbations (B, P) and target genes (B, T) per resample; target_code: (n,) the
    design row's target in 0..T-1; repeat: (B,) the cross-validation repeat each resample evaluates."""

    perturbation_counts: np.ndarray
    target_counts: np.ndarray
    target_code: np.ndarray
    repeat: np.ndarray

    def __post_init__(self) -> None:
        b = len(self.repeat)
        if self.perturbation_counts.shape[0] != b or self.target_counts.shape[0] != b:
            raise ValueError("perturbation_counts, target_counts and repeat must have one row per resample")


def two_way_resamples(design: DesignTable, n_bootstrap: int, n_repeats: int, seed: int) -> TwoWayResamples:
    targets, target_code = np.unique(design.target, return_inverse=True)
    return TwoWayResamples(
        perturbation_counts=resample_counts(design.n_perturbations, n_bootstrap, stream_seed(seed, "bootstrap")),
        target_counts=resample_counts(len(targets), n_bootstrap, stream_seed(seed, "target_bootstrap")),
        target_code=target_code.astype(np.int64),
        repeat=np.arange(n_bootstrap) % n_repeats,
    )


def mean_per_perturbation_auroc(
    design: DesignTable, scores: np.ndarray, resamples: TwoWayResamples, which: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean within-perturbation AUROC of `scores` (n,) on the observed data, and on the resamples `which`
    (indices into resamples): (point, (len(which),)). Rows with a NaN score (never tested) are left out;
    a perturbation enters where its (weighted) rows hold both classes."""
    offsets = design.offsets
    target_counts = resamples.target_counts[which]
    perturbation_counts = resamples.perturbation_counts[which]
    point_sum, point_n = 0.0, 0
    weighted_sum = np.zeros(len(which))
    weight_total = np.zeros(len(which))
    for p in range(design.n_perturbations):
        rows = np.arange(offsets[p], offsets[p + 1])
        rows = rows[np.isfinite(scores[rows])]
        labels = design.is_de[rows]
        if labels.all() or not labels.any():
            continue
        area = resampled_auroc(labels, scores[rows], np.ones((1, len(rows))))[0]
        point_sum, point_n = point_sum + area, point_n + 1
        areas = resampled_auroc(labels, scores[rows], target_counts[:, resamples.target_code[rows]])
        defined = np.isfinite(areas)
        weighted_sum += np.where(defined, perturbation_counts[:, p] * np.nan_to_num(areas), 0.0)
        weight_total += np.where(defined, perturbation_counts[:, p], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = np.where(weight_total > 0, weighted_sum / weight_total, np.nan)
    return (point_sum / point_n if point_n else np.nan), replicates


# ----------------------------------------------------------------------------------------------------------
# Features and the residualised score


def pair_features(design: DesignTable) -> np.ndarray:
    """(n, 2F): the target's gene-level features, then the perturbed gene's."""
    return np.hstack([design.features, design.source_features])


def residualised_edge_columns(
    design: DesignTable, edges: EdgeColumns, n_folds: int, seed: int, settings: ModelSettings
) -> np.ndarray:
    """(n, k) the edge columns (score, and missing indicator when present), each centred within its
    perturbation and replaced by its cross-fitted residual on both genes' features (boosted regression,
    the target-grouped folds of the first repeat). It uses no labels, so one residualisation serves every
    model, split and repeat."""
    x = pair_features(design)
    folds = make_folds(design, "target_split", n_folds, seed)
    offsets = design.offsets
    counts = np.diff(offsets)
    residuals = np.empty_like(edges.values)
    for column in range(edges.values.shape[1]):
        values = edges.values[:, column]
        centred = values - np.repeat(np.add.reduceat(values, offsets[:-1]) / counts, counts)
        for fold in range(n_folds):
            test = folds.test(fold)
            regressor = make_regressor("boosted", settings, stream_seed(seed, "models"))
            regressor.fit(x[~test], centred[~test])
            residuals[test, column] = centred[test] - regressor.predict(x[test])
    return residuals


def is_constant(values: np.ndarray, reference: np.ndarray) -> bool:
    """True when `values` vary by less than float64 rounding of `reference`'s scale (nothing left)."""
    scale = max(float(np.ptp(reference)), float(np.abs(reference).max(initial=0.0)), 1.0)
    return bool(np.ptp(values) <= 1e-9 * scale)


# ----------------------------------------------------------------------------------------------------------
# The confirmatory comparison


@dataclass(frozen=True)
class ConfirmatoryResult:
    """One (score set, model, split): the confirmatory per-perturbation AUROC comparison, and `descriptive`,
    the same models' descriptive comparisons (first repeat), which also names the result.

    gene_only / with_score / delta: means over repeats; test: bootstrap_test of the delta resamples;
    gene_only_test: the gene-only value's interval (its p-value is meaningless and not reported).
    """

    descriptive: IncrementalValueResult
    gene_only: float
    with_score: float
    delta: float
    test: BootstrapTest
    gene_only_test: BootstrapTest
    n_perturbations: int
    n_positives: int
    n_repeats: int

    def __getattr__(self, name: str):
        if name in ("score_set", "method", "layer", "aggregation", "model", "split", "degenerate"):
            return getattr(self.descriptive, name)
        raise AttributeError(name)


def confirmatory_incremental_value(
    design: DesignTable,
    score_sets: Sequence[ScoreSet],
    *,
    splits: Sequence[str] = SPLITS,
    models: Sequence[str] = MODELS,
    settings: ConfirmatorySettings = ConfirmatorySettings(),
    model_settings: ModelSettings = DEFAULT_MODEL_SETTINGS,
    seed: int = 0,
    recall_at: Sequence[int] = RECALL_AT,
    progress: Progress = no_progress,
) -> tuple[ConfirmatoryResult, ...]:
    """Flexible gene-only arm vs the same plus the residualised edge score, for every score set, model and
    split, on shared folds (per repeat) and shared two-way resamples (module docstring); `progress` after
    each score set."""
    check_choices(splits, SPLITS, "split")
    check_choices(models, MODELS, "model")
    check_score_sets(score_sets, len(design.genes))
    repeats = range(settings.n_repeats)
    folds = {
        (split, r): make_folds(design, split, folds_of_split(split, settings.n_folds, settings.joint_folds), seed, r)
        for split in splits
        for r in repeats
    }
    resamples = two_way_resamples(design, settings.n_bootstrap, settings.n_repeats, seed)
    which = {r: np.flatnonzero(resamples.repeat == r) for r in repeats}
    descriptive_weights = resamples.perturbation_counts
    x_genes = pair_features(design)
    inputs = {"logistic": spline_basis(x_genes, model_settings), "boosted": x_genes}

    def predict(x: dict[str, np.ndarray], split: str, model: str, r: int) -> np.ndarray:
        return out_of_fold_scores(
            x[model], design.is_de, folds[(split, r)], model, model_settings, stream_seed(seed, "models", r)
        )

    def evaluate(predictions: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(R,) points and (B,) replicates, each resample evaluated on its repeat's predictions."""
        points = np.empty(settings.n_repeats)
        replicates = np.empty(settings.n_bootstrap)
        for r in repeats:
            points[r], replicates[which[r]] = mean_per_perturbation_auroc(
                design, predictions[r], resamples, which[r]
            )
        return points, replicates

    def describe(scores: np.ndarray):
        return evaluate_predictions(
            design.is_de, scores, design.perturbation, design.n_perturbations, descriptive_weights, recall_at
        )

    baseline = {}
    for split in splits:
        for model in models:
            predictions = {r: predict(inputs, split, model, r) for r in repeats}
            baseline[(split, model)] = (*evaluate(predictions), describe(predictions[0]))
    results = []
    for index, score_set in enumerate(score_sets, start=1):
        edges = edge_score_columns(design, score_set)
        residuals = residualised_edge_columns(design, edges, settings.n_folds, seed, model_settings)
        degenerate = edges.degenerate or is_constant(residuals[:, 0], edges.values[:, 0])
        if degenerate and not edges.degenerate:
            warnings.warn(
                f"score set {score_set.label!r} has no within-perturbation variation left after removing both "
                "genes' features: it cannot add anything (delta 0, p 1)",
                DegenerateScoreWarning,
                stacklevel=2,
            )
        # logistic: splines of the residual score, the residualised missing indicator (if any) linearly
        x_score = None if degenerate else {
            "logistic": np.hstack(
                [inputs["logistic"], spline_basis(residuals[:, :1], model_settings), residuals[:, 1:]]
            ),
            "boosted": np.hstack([x_genes, residuals]),
        }
        for split in splits:
            for model in models:
                gene_points, gene_replicates, gene_described = baseline[(split, model)]
                if degenerate:
                    points, replicates, described = gene_points, gene_replicates, gene_described
                else:
                    predictions = {r: predict(x_score, split, model, r) for r in repeats}
                    points, replicates, described = (*evaluate(predictions), describe(predictions[0]))
                descriptive = IncrementalValueResult(
                    **result_identity(score_set, model, split),
                    comparisons=tuple(
                        c
                        for c in compare_metrics(gene_described, described, 1 - settings.alpha)
                        if c.metric != CONFIRMATORY_METRIC
                    ),
                    degenerate=degenerate,
                    n_missing=edges.n_missing,
                )
                results.append(
                    ConfirmatoryResult(
                        descriptive=descriptive,
                        gene_only=float(np.nanmean(gene_points)),
                        with_score=float(np.nanmean(points)),
                        delta=float(np.nanmean(points - gene_points)),
                        test=bootstrap_test(replicates - gene_replicates, settings.alpha),
                        gene_only_test=bootstrap_test(gene_replicates, settings.alpha),
                        n_perturbations=design.n_perturbations,
                        n_positives=int(design.is_de.sum()),
                        n_repeats=settings.n_repeats,
                    )
                )
        progress(index, len(score_sets), f"score set {score_set.label}")
    return tuple(results)


def confirmatory_rows(
    results: Sequence[ConfirmatoryResult],
    *,
    confirmatory_methods: Sequence[str] = CONFIRMATORY_METHODS,
    negatives: str = NEGATIVES,
    label_rule: str | None = None,
    seed: int | None = None,
) -> list[dict]:
    """Registry rows: per (score set, model, split) "<A>:<model>:<split>:<score set>" (confirmatory for
    attention-derived and correlation scores), per (model, split) a descriptive gene-only row
    "<A>:<model>:<split>:gene_only", and the descriptive "flexible" rows of the same models."""
    extra = ({} if label_rule is None else {"label_rule": label_rule}) | ({} if seed is None else {"seed": seed})
    rows: list[dict] = []
    seen_baselines: set[tuple[str, str]] = set()
    for result in results:
        analysis = SPLIT_ANALYSIS[result.split]
        prefix = f"{analysis}:{result.model}:{result.split}"
        shared = {"analysis_id": analysis, "family": "P", "negatives": negatives, "n": result.n_perturbations,
                  "n_positives": result.n_positives, **extra}
        if (result.model, result.split) not in seen_baselines:
            seen_baselines.add((result.model, result.split))
            rows.append({
                **shared, "test_id": f"{prefix}:gene_only", "layer": None, "aggregation": "none",
                "statistic_name": f"{CONFIRMATORY_METRIC}_gene_only(both genes' features, flexible)",
                "statistic": result.gene_only, "effect_name": CONFIRMATORY_METRIC, "effect": result.gene_only,
                "ci_low": result.gene_only_test.ci_low, "ci_high": result.gene_only_test.ci_high,
                "p_value": None, "confirmatory": False,
            })
        rows.append({
            **shared, "test_id": f"{prefix}:{result.score_set}",
            "layer": result.layer if result.layer != NO_LAYER else None, "aggregation": result.aggregation,
            "statistic_name": f"{CONFIRMATORY_METRIC}_with_residualised_score",
            "statistic": result.with_score,
            "effect_name": f"delta_{CONFIRMATORY_METRIC}(with_score - gene_only; {result.n_repeats} CV repeats, "
                           "two-way bootstrap)",
            "effect": result.delta, "ci_low": result.test.ci_low, "ci_high": result.test.ci_high,
            "p_value": result.test.p_value,
            "confirmatory": result.method in confirmatory_methods,
        })
    rows += incremental_value_rows([result.descriptive for result in results], variant="flexible",
                                   negatives=negatives, label_rule=label_rule, seed=seed)
    return rows


def incremental_value_tests(
    labels: pd.DataFrame,
    features: pd.DataFrame,
    genes: Sequence[str],
    score_sets: Sequence[ScoreSet],
    *,
    rule: PerturbationFilter,
    settings: ConfirmatorySettings = ConfirmatorySettings(),
    seed: int = 0,
    splits: Sequence[str] = SPLITS,
    models: Sequence[str] = MODELS,
    recall_at: Sequence[int] = RECALL_AT,
    feature_names: Sequence[str] = GENE_LEVEL_FEATURES,
    model_settings: ModelSettings = DEFAULT_MODEL_SETTINGS,
    label_rule: str | None = None,
    progress: Progress = no_progress,
) -> list[dict]:
    """A05 (perturbation split) and A06 (target and joint splits) registry rows from the DE label table,
    gene-level features and score sets over `genes` (the one call an asset makes): the confirmatory form
    with its descriptive companions, and the study's form as descriptive "study" rows. `progress` counts
    the confirmatory score sets."""
    check_score_sets(score_sets, len(genes))
    design = build_design(labels, features, genes, rule, feature_names)
    confirmatory = confirmatory_incremental_value(
        design, score_sets, splits=splits, models=models, settings=settings, model_settings=model_settings,
        seed=seed, recall_at=recall_at, progress=progress,
    )

    study = incremental_value(
        design, score_sets, splits=splits, models=models, n_folds=settings.n_folds,
        n_bootstrap=settings.n_bootstrap, seed=seed, recall_at=recall_at, settings=model_settings,
        confidence=1 - settings.alpha, joint_folds=settings.joint_folds,
    )
    return confirmatory_rows(confirmatory, label_rule=label_rule, seed=seed) + incremental_value_rows(
        study, variant="study", label_rule=label_rule, seed=seed
    )
