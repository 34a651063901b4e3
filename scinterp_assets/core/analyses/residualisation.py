"""Family R adjustments: what is left of a score's reference signal once gene-level covariates (A09) or
pairwise co-expression (A13) are accounted for.

A09, cross-fitted residualisation. Every ordered off-diagonal pair's score is regressed (float64) on the
gene-level covariates of both genes: intercept + source (mean, variance, detection rate) + target (mean,
variance, detection rate), standardised over genes; OLS by numpy lstsq, or a gradient-boosted regressor as
a sensitivity model. Cross-fitting: source genes are split into K folds (seeded shuffle); the residual of
pair (i, j) comes from a model fitted on the pairs whose source lies in another fold, so no pair's own
source row, and none of its TF's other pairs, trained the model that residualises it. The target's
covariates are learned from other sources' rows, which is exactly the target-only (gene-level) signal
the adjustment is meant to remove. The residual is scored against the reference (AUROC; undefined scores
stay undefined and rank lowest, as in A12) and the share of above-chance AUROC retained is
(residual - 0.5) / (raw - 0.5), NaN when raw <= 0.5. Its CI is the TF-block bootstrap of `per_tf` applied
to raw and residual AUROC together (the residuals are fitted once; the interval covers which TFs were
sampled, not the regression's fitting noise). Residuals are ranked, so a model that leaves a shrunken copy
of a signal it can fit (boosting stops after finitely many shrunken rounds) keeps that signal's AUROC: a
target-only score that the boosted model memorises (out-of-fold R^2 ~ 1) can keep most of its AUROC.
Read `covariate_r2` beside the boosted rows; OLS leaves no such copy of what is linear in the covariates.
These rows are descriptive: the study's statistic, and the share FRAMEWORK criterion 3 reads. They carry
no p-value, because ranking a residual cannot tell a score's information beyond the covariates from what
the regression failed to remove (a nonlinear function of the covariates keeps its association with a
reference that depends on them).

A09's confirmatory test asks the question directly, with the confirmatory incremental-value machinery of
A05 (`incremental_confirmatory`) applied to the reference instead of the DE calls: each TF of a directed
("regulates") reference is a "perturbation", every other gene a candidate target, membership the label.
A flexible gene-only arm (logistic on additive cubic B-splines of both genes' covariates) is compared with
the same arm plus the score, residualised on both genes' covariates by cross-fitted boosted trees, in folds
grouped by TF (held-out TFs), repeated over fold seeds; the metric is the mean per-TF AUROC, with a two-way
bootstrap of TFs x targets and a percentile interval and p that agree. A score that is any function of the
genes' covariates, or has gene-level structure of its own, adds nothing and is rejected at most at the
nominal rate; scores with pair-specific information are found (benchmarks/README.md, calibration). Row
"A09:<resource>:<score>:beyond_features"; a reference with fewer usable TFs than folds gets no row and a
warning.

A13, partial Spearman correlation of score and membership given co-expression: rank the score and the
co-expression (membership is 0/1 already), residualise both on the co-expression rank, correlate. The
p-value is the t test of a partial correlation with one controlling variable, df = n - 3.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import HistGradientBoostingRegressor

from scinterp_assets.core.analyses.incremental_confirmatory import (
    ConfirmatorySettings,
    confirmatory_incremental_value,
)
from scinterp_assets.core.analyses.incremental_value import DEFAULT_MODEL_SETTINGS, ModelSettings, build_design
from scinterp_assets.core.analyses.per_tf import (
    row_weighted_aurocs,
    score_seed,
    tf_block_weights,
)
from scinterp_assets.core.analyses.reference_battery import (
    ALL_NEGATIVES,
    ReferenceLabels,
    check_score_set,
    is_verdict_score,
    percentile_interval,
    reference_labels,
    registry_row,
    score_name,
    warn_if_constant,
)
from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.stats.auroc import auroc

COVARIATES: tuple[str, ...] = ("mean", "variance", "detection_rate")
Model = Literal["ols", "boosted"]


def gene_covariates(features: pd.DataFrame, genes: Sequence[str]) -> np.ndarray:
    """(G, 3) float64 covariates (COVARIATES order) of `genes` from a features frame (gene + COVARIATES).

    Extra genes in `features` are ignored; a gene without a row, a duplicated gene or a missing value is an
    error."""
    missing_columns = [column for column in ("gene", *COVARIATES) if column not in features.columns]
    if missing_columns:
        raise ValueError(f"gene features lack column(s) {missing_columns}; expected gene, {', '.join(COVARIATES)}")
    if features["gene"].duplicated().any():
        raise ValueError(f"gene features list genes more than once, e.g. {features['gene'][features['gene'].duplicated()].iloc[0]!r}")
    table = features.set_index("gene")
    absent = [gene for gene in genes if gene not in table.index]
    if absent:
        raise ValueError(f"gene features lack {len(absent)} of the score set's {len(genes)} genes, e.g. {absent[:5]}; "
                         "compute features and scores over the same gene list")
    values = table.loc[list(genes), list(COVARIATES)].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("gene features hold missing or infinite values")
    return values


def _pair_design(covariates: np.ndarray, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n_pairs, 1 + 2k): intercept, source covariates, target covariates."""
    return np.column_stack([np.ones(sources.size), covariates[sources], covariates[targets]])


def cross_fitted_residuals(scores: np.ndarray, covariates: np.ndarray, *, n_folds: int, seed: int,
                           model: Model = "ols") -> tuple[np.ndarray, np.ndarray]:
    """Residuals of a (G, G) score matrix after cross-fitted regression on both genes' covariates.

    covariates: (G, k) gene-level values (standardised here). Folds split the source genes (seeded).
    Returns (residuals, fold): residuals (G, G) float64, NaN on the diagonal and where the score is NaN;
    fold (G,) the fold of each source gene.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if covariates.shape[0] != n:
        raise ValueError(f"covariates have {covariates.shape[0]} genes, scores {n}")
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must lie in [2, {n}], got {n_folds}")
    if model not in ("ols", "boosted"):
        raise ValueError(f"model must be 'ols' or 'boosted', got {model!r}")
    spread = covariates.std(axis=0)
    standardised = (covariates - covariates.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    sources, targets = np.nonzero(~np.eye(n, dtype=bool) & np.isfinite(scores))
    y = scores[sources, targets]
    design = _pair_design(standardised, sources, targets)
    residuals = np.full((n, n), np.nan)
    for k in range(n_folds):
        held_out = fold[sources] == k
        if model == "ols":
            beta, *_ = np.linalg.lstsq(design[~held_out], y[~held_out], rcond=None)
            fitted = design[held_out] @ beta
        else:
            regressor = HistGradientBoostingRegressor(max_iter=100, early_stopping=False, random_state=seed)
            fitted = regressor.fit(design[~held_out, 1:], y[~held_out]).predict(design[held_out, 1:])
        residuals[sources[held_out], targets[held_out]] = y[held_out] - fitted
    return residuals, fold


def retained_share(raw: float | np.ndarray, residual: float | np.ndarray) -> float | np.ndarray:
    """(residual - 0.5) / (raw - 0.5): the share of above-chance AUROC kept; NaN where raw <= 0.5 or NaN."""
    raw_a, residual_a = np.asarray(raw, dtype=np.float64), np.asarray(residual, dtype=np.float64)
    above = raw_a > 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(above, (residual_a - 0.5) / np.where(above, raw_a - 0.5, 1.0), np.nan)
    return float(share) if share.ndim == 0 else share


@dataclass(frozen=True)
class Residualisation:
    """A09 for one score set, resource and model.

    raw_auroc, residual_auroc   reference AUROC of the score and of its cross-fitted residual
    retained_share, ci_low/high share of above-chance AUROC kept, TF-block bootstrap percentile CI
    covariate_r2                out-of-fold R^2 of the score on the covariates (how much they explain)
    residuals                   (G, G) residual matrix (NaN on the diagonal and where the score is NaN)
    """

    score: str
    resource: str
    model: str
    raw_auroc: float
    residual_auroc: float
    retained_share: float
    ci_low: float
    ci_high: float
    covariate_r2: float
    n_pairs: int
    n_positives: int
    n_folds: int
    residuals: np.ndarray


def residualisation(score_set: ScoreSet, labels: ReferenceLabels, features: pd.DataFrame, *, n_folds: int,
                    n_bootstrap: int, seed: int, model: Model = "ols", confidence: float = 0.95) -> Residualisation:
    """A09 for one score set: cross-fitted residual AUROC and the retained share with a TF-block CI."""
    scores = check_score_set(score_set, labels.genes)
    covariates = gene_covariates(features, labels.genes)
    residuals, _ = cross_fitted_residuals(scores, covariates, n_folds=n_folds, seed=seed, model=model)
    off = labels.off_diagonal
    y = labels.membership[off]
    raw = float(auroc(y, scores[off]))  # DegenerateScoreWarning (and 0.5) for a constant score
    residual = float(auroc(y, residuals[off]))
    rng = np.random.default_rng(score_seed(seed, labels.resource, score_set.label, "A09"))
    weights = tf_block_weights(labels, n_bootstrap, rng)
    raw_boot = row_weighted_aurocs(scores, labels, weights)
    residual_boot = row_weighted_aurocs(residuals, labels, weights)
    share = retained_share(raw, residual)
    low, high = percentile_interval(retained_share(raw_boot, residual_boot), confidence) if np.isfinite(share) \
        else (float("nan"), float("nan"))
    defined = np.isfinite(residuals)
    total = float(((scores[defined] - scores[defined].mean()) ** 2).sum())
    r2 = 1.0 - float((residuals[defined] ** 2).sum()) / total if total > 0 else float("nan")
    return Residualisation(score_set.label, labels.resource, model, raw, residual, share, low, high, r2,
                           int(off.sum()), labels.n_positives, n_folds, residuals)


def residualisation_tests(reference: pd.DataFrame, resource: str, genes: Sequence[str],
                          score_sets: Sequence[ScoreSet], features: pd.DataFrame, *, n_folds: int, n_bootstrap: int,
                          seed: int, models: Sequence[Model] = ("ols",), confidence: float = 0.95) -> list[dict]:
    """A09 descriptive registry rows, one per score set and model ("A09:<resource>:<score>:<model>"):
    statistic = residual AUROC, effect = retained share with its TF-block CI, no p-value (module docstring;
    the OLS share is what FRAMEWORK criterion 3 reads, boosted rows are a sensitivity analysis)."""
    labels = reference_labels(reference, genes, resource)
    rows = []
    for score_set in score_sets:
        for model in models:
            result = residualisation(score_set, labels, features, n_folds=n_folds, n_bootstrap=n_bootstrap, seed=seed,
                                     model=model, confidence=confidence)
            rows.append(registry_row(
                "A09", f"A09:{resource}:{score_name(score_set)}:{model}", score_set, statistic_name="residual_auroc",
                statistic=result.residual_auroc, effect_name="retained_share((residual - 0.5) / (raw - 0.5))",
                effect=result.retained_share, ci_low=result.ci_low, ci_high=result.ci_high,
                n=result.n_pairs, n_positives=result.n_positives, seed=seed, confirmatory=False,
                negatives=f"{ALL_NEGATIVES}; covariates: {', '.join(COVARIATES)} of source and target"))
    return rows


def reference_label_table(labels: ReferenceLabels) -> pd.DataFrame:
    """The reference as a label table of `incremental_confirmatory`: one row per (TF, other gene) with
    perturbation = the TF (a source with at least one reference pair), target, is_de = membership."""
    genes = np.asarray(labels.genes)
    sources = np.repeat(labels.tf_rows, len(genes))
    targets = np.tile(np.arange(len(genes)), labels.tf_rows.size)
    keep = sources != targets
    return pd.DataFrame({"perturbation": genes[sources[keep]], "target": genes[targets[keep]],
                         "is_de": labels.membership[sources[keep], targets[keep]]})


def beyond_features_tests(reference: pd.DataFrame, resource: str, genes: Sequence[str],
                          score_sets: Sequence[ScoreSet], features: pd.DataFrame, *, min_targets: int,
                          settings: ConfirmatorySettings, model_settings: ModelSettings = DEFAULT_MODEL_SETTINGS,
                          seed: int) -> list[dict]:
    """A09 confirmatory rows "A09:<resource>:<score>:beyond_features" of a directed reference (module
    docstring): statistic = mean per-TF AUROC with the residualised score, effect = its difference from the
    gene-only arm (mean over CV repeats), percentile interval and p of the two-way bootstrap (agreeing by
    construction). TFs with fewer than `min_targets` targets among `genes` are left out; with fewer such TFs
    than cross-validation folds there is nothing to test: no rows and a UserWarning saying why.
    Confirmatory for attention and correlation scores."""
    labels = reference_labels(reference, genes, resource)
    if not labels.directed:
        raise ValueError(f"A09 beyond-features needs a directed (TF -> target) reference; {resource!r} is undirected")
    usable = int((labels.membership.sum(axis=1) >= min_targets).sum())
    if usable < settings.n_folds:
        warnings.warn(f"A09 beyond-features skipped for {resource!r}: {usable} TF(s) with >= {min_targets} targets "
                      f"among the {len(genes)} genes, fewer than the {settings.n_folds} folds over TFs", stacklevel=2)
        return []
    covariates = features.loc[:, ["gene", *COVARIATES]]
    design = build_design(reference_label_table(labels), covariates, list(genes),
                          PerturbationFilter(min_targets, 1), COVARIATES)
    results = confirmatory_incremental_value(design, score_sets, splits=("perturbation_split",),
                                             models=("logistic",), settings=settings,
                                             model_settings=model_settings, seed=seed)
    rows = []
    for score_set, result in zip(score_sets, results):
        rows.append(registry_row(
            "A09", f"A09:{resource}:{score_name(score_set)}:beyond_features", score_set,
            statistic_name="mean_per_tf_auroc_with_residualised_score",
            statistic=result.with_score,
            effect_name=(f"delta_mean_per_tf_auroc(with_score - gene_only; both genes' {', '.join(COVARIATES)}; "
                         f"{result.n_repeats} CV repeats over TFs, two-way bootstrap of TFs x targets)"),
            effect=result.delta, ci_low=result.test.ci_low, ci_high=result.test.ci_high,
            p_value=result.test.p_value, n=result.n_perturbations, n_positives=result.n_positives, seed=seed,
            confirmatory=is_verdict_score(score_set),
            negatives=f"non-reference targets of each TF with >= {min_targets} targets"))
    return rows


# ----------------------------------------------------------------------------------------------------------
# A13: partial correlation given co-expression


@dataclass(frozen=True)
class PartialCorrelation:
    """A13 for one score set: Spearman of score and membership, raw and partial on co-expression (complete
    pairs). retained_share = partial / raw, NaN when raw <= 0. df = n - 3 for the partial t test."""

    score: str
    resource: str
    raw_rho: float
    raw_p: float
    partial_rho: float
    partial_p: float
    retained_share: float
    n_pairs: int
    n_positives: int

    @property
    def df(self) -> int:
        return self.n_pairs - 3


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """Partial Spearman correlation of x and y given z and its two-sided p-value (t, df = n - 3).

    x, y, z: (n,) finite. Ranks (average for ties), residualises rank(x) and rank(y) on [1, rank(z)], then
    correlates the residuals. A degenerate side (constant, or fully explained by z) gives (0, 1) after a
    DegenerateScoreWarning from the caller."""
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones(rz.size), rz])
    residual_x = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    residual_y = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    ss_x, ss_y = (residual_x ** 2).sum(), (residual_y ** 2).sum()
    if ss_x <= 1e-12 * ((rx - rx.mean()) ** 2).sum() or ss_y <= 1e-12 * ((ry - ry.mean()) ** 2).sum():
        return 0.0, 1.0
    r = float(np.clip((residual_x * residual_y).sum() / np.sqrt(ss_x * ss_y), -1.0, 1.0))
    df = rx.size - 3
    if abs(r) == 1.0:
        return r, 0.0
    t = r * np.sqrt(df / (1.0 - r * r))
    return r, float(2 * stats.t.sf(abs(t), df))


def partial_correlation(score_set: ScoreSet, labels: ReferenceLabels, coexpression: ScoreSet) -> PartialCorrelation:
    """A13 for one score set over the off-diagonal pairs where score and co-expression are defined."""
    scores = check_score_set(score_set, labels.genes)
    coexpr = check_score_set(coexpression, labels.genes)
    both = labels.off_diagonal & np.isfinite(scores) & np.isfinite(coexpr)
    x, y, z = scores[both], labels.membership[both].astype(np.float64), coexpr[both]
    if y.all() or not y.any():
        raise ValueError(f"{score_set.label}: the pairs with a defined score and co-expression hold only one class "
                         f"of reference {labels.resource!r}")
    if warn_if_constant(x, score_set.label):
        raw_rho, raw_p, partial_rho, partial_p = 0.0, 1.0, 0.0, 1.0
    else:
        raw_rho, raw_p = (float(v) for v in stats.spearmanr(x, y))
        partial_rho, partial_p = partial_spearman(x, y, z)
    share = partial_rho / raw_rho if raw_rho > 0 else float("nan")
    return PartialCorrelation(score_set.label, labels.resource, raw_rho, raw_p, partial_rho, partial_p, share,
                              int(both.sum()), int(y.sum()))


def partial_correlation_tests(reference: pd.DataFrame, resource: str, genes: Sequence[str],
                              score_sets: Sequence[ScoreSet], coexpression: ScoreSet) -> list[dict]:
    """A13 registry rows (descriptive), "A13:<resource>:<score>": statistic = partial Spearman rho given
    co-expression, effect = share of the raw Spearman rho retained, p = partial-correlation t test
    (df = n - 3). The co-expression score set itself is skipped (nothing is left once it is controlled)."""
    labels = reference_labels(reference, genes, resource)
    rows = []
    for score_set in score_sets:
        if np.array_equal(score_set.matrix, coexpression.matrix, equal_nan=True):
            continue
        result = partial_correlation(score_set, labels, coexpression)
        rows.append(registry_row(
            "A13", f"A13:{resource}:{score_name(score_set)}", score_set,
            statistic_name="partial_spearman_rho_given_coexpression", statistic=result.partial_rho,
            effect_name="retained_share(partial / raw spearman rho)", effect=result.retained_share,
            p_value=result.partial_p, n=result.n_pairs, n_positives=result.n_positives, negatives=ALL_NEGATIVES))
    return rows
