"""Family P: incremental value of edge scores over gene-level features (A05, A06) and covariate R^2 (A07).

A05 asks whether an edge score adds anything to what the target gene's own properties already say about
being DE. The design has one row per (perturbation, candidate target) over the evaluable genes: the label
is_de, the target's gene-level features (mean, variance, detection rate by default) and the edge score
score(perturbation -> target). A model without the score (gene only) and one with it are fit on the same
folds (a paired comparison), logistic regression on standardised features and gradient-boosted trees.
Their out-of-fold predictions are compared by:

  auroc                   pooled AUROC over all test rows (the study's statistic; the confirmatory one)
  auroc_per_perturbation  mean over perturbations of the within-perturbation AUROC (the PF AUROC view:
                          how well targets are ranked inside each perturbation)
  auprc                   pooled average precision (sklearn's step-wise definition)
  recall_at_<k>           per perturbation, the share of its positives among its k top-ranked targets
                          (ties at the cut-off count by their expected share under random tie-breaking),
                          averaged over perturbations with at least one positive

Uncertainty comes from a bootstrap over perturbations, the independent unit (never over pairs): each
resample is a vector of perturbation multiplicities and re-weights the stored out-of-fold predictions (no
refits). Every metric above is an exact function of per-perturbation sufficient statistics under such
weights, so a resample costs a few matrix products instead of a pass over the rows (the pooled AUROC of a
resample is w' C w / (w.n_pos)(w.n_neg) with C[p, q] the correctly ordered (positive of p, negative of q)
pairs). Delta = with - without on the same resamples; percentile CI; one-sided bootstrap p-value of
delta <= 0: (1 + #{resampled deltas <= 0}) / (1 + B), never 0.

Splits (A05 perturbation_split, A06 target_split and joint_split): folds come from sklearn's GroupKFold
(shuffled, seeded) over perturbations and, independently, over target genes. The joint split has one test
per block (perturbation fold i, target fold j): the block's rows are tested by a model trained on the rows
whose perturbation is outside fold i and whose target is outside fold j (n_folds^2 fits; every row is
tested with neither of its genes seen in its role). "Unseen" is per role: a perturbed gene of a test row may appear as a target in training.

Missing edge scores (pairs the edge source does not cover) are imputed with the median of the same
perturbation's observed scores (the global median where a perturbation has none) and a missing-indicator
column is added to the with-score model whenever some but not all scores are missing; imputation uses no
labels, so it cannot leak. A score constant over the design (after imputation, indicator included) carries
no ranking information: DegenerateScoreWarning (as `auroc` does), no refit, and the with-score predictions
are the gene-only ones (delta exactly 0, p = 1).

A07: how much of an edge score the target's gene-level features explain: held-out R^2 of OLS and of
boosted trees, folds grouped by target gene (the target split's folds), mean over folds (sklearn's
cross_val_score convention). Grouping by target keeps a model from memorising per-target means it could
not know for an unseen gene.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import QuantileTransformer, SplineTransformer, StandardScaler

from scinterp_assets.core.analyses.perturbation_prediction import ATTENTION_METHODS, PerturbationFilter
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning, auroc
from scinterp_assets.core.stats.bootstrap import bootstrap_test, resample_counts

GENE_LEVEL_FEATURES = ("mean", "variance", "detection_rate")
SPLITS = ("perturbation_split", "target_split", "joint_split")
SPLIT_ANALYSIS = {"perturbation_split": "A05", "target_split": "A06", "joint_split": "A06"}
MODELS = ("logistic", "boosted")
R2_MODELS = ("ols", "boosted")
RECALL_AT = (10, 50, 100)
CONFIRMATORY_METHODS = (*ATTENTION_METHODS, "correlation")
NEGATIVES = "non-DE candidate targets of the same perturbation"
_STREAMS = ("perturbation_folds", "target_folds", "bootstrap", "models", "rows", "target_bootstrap")


def stream_seed(seed: int, stream: str, repeat: int = 0) -> int:
    """A reproducible seed for one independent random stream (fold assignments, bootstrap, models);
    `repeat` > 0 gives the streams of further cross-validation repeats (repeat 0 is the single-run stream)."""
    entropy = [seed, _STREAMS.index(stream)] + ([repeat] if repeat else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def score_set_name(score_set: ScoreSet) -> str:
    """Test-id name of a score set, e.g. attention_L3_head_mean, correlation."""
    return score_set.label.replace(" ", "_")


def check_score_sets(score_sets: Sequence[ScoreSet], n_genes: int) -> None:
    """Every score matrix must be (G, G) over the same evaluable gene list as the design."""
    for score_set in score_sets:
        if score_set.matrix.shape != (n_genes, n_genes):
            raise ValueError(
                f"score set {score_set.label!r} is {score_set.matrix.shape} but the evaluable gene list has "
                f"{n_genes} genes: its genes do not match; build every score set over the same gene list "
                "(score_sets_from_edges(edges, genes), gene_level_score_sets(features, genes))"
            )


# ----------------------------------------------------------------------------------------------------------
# Design table


@dataclass(frozen=True)
class DesignTable:
    """One row per (perturbation, candidate target), sorted by perturbation, then target gene index.

    perturbations: (P,) names, sorted; genes: (G,) the evaluable genes that score matrices index.
    perturbation: (n,) int64 index into perturbations; source: (n,) int64 index of the perturbed gene in
    genes (the score-matrix row); target: (n,) int64 index into genes (the column); is_de: (n,) bool;
    features: (n, F) float64 gene-level features of the target, named feature_names.
    """

    perturbations: tuple[str, ...]
    genes: tuple[str, ...]
    perturbation: np.ndarray
    source: np.ndarray
    target: np.ndarray
    is_de: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    source_features: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.is_de)
        for name in ("perturbation", "source", "target"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be ({n},), got {getattr(self, name).shape}")
        if self.is_de.dtype != bool:
            raise ValueError("is_de must be bool")
        for name in ("features", "source_features"):
            if getattr(self, name).shape != (n, len(self.feature_names)):
                raise ValueError(
                    f"{name} must be ({n}, {len(self.feature_names)}), got {getattr(self, name).shape}"
                )
        if n and (np.diff(self.perturbation) < 0).any():
            raise ValueError("rows must be sorted by perturbation")
        if not (np.isfinite(self.features).all() and np.isfinite(self.source_features).all()):
            raise ValueError("gene-level features must be finite")

    @property
    def n_rows(self) -> int:
        return len(self.is_de)

    @property
    def n_perturbations(self) -> int:
        return len(self.perturbations)

    @property
    def offsets(self) -> np.ndarray:
        """(P + 1,) row offsets: perturbation p owns rows offsets[p]:offsets[p + 1]."""
        return np.searchsorted(self.perturbation, np.arange(self.n_perturbations + 1))

    def subset(self, rows: np.ndarray) -> DesignTable:
        """The design restricted to `rows` (indices or a mask; repeated indices repeat rows); perturbations
        left without rows are dropped."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.sort(np.asarray(rows))
        kept, codes = np.unique(self.perturbation[rows], return_inverse=True)
        return DesignTable(
            perturbations=tuple(self.perturbations[p] for p in kept),
            genes=self.genes,
            perturbation=codes.astype(np.int64),
            source=self.source[rows],
            target=self.target[rows],
            is_de=self.is_de[rows],
            features=self.features[rows],
            feature_names=self.feature_names,
            source_features=self.source_features[rows],
        )


def build_design(
    labels: pd.DataFrame,
    features: pd.DataFrame,
    genes: Sequence[str],
    rule: PerturbationFilter,
    feature_names: Sequence[str] = GENE_LEVEL_FEATURES,
) -> DesignTable:
    """The A05 design from DE labels (perturbation, target, is_de) and gene-level features (gene, ...).

    Pairs whose perturbation or target is outside `genes` or whose target is the perturbed gene are
    dropped; a perturbation is kept with >= rule.min_positives positives and >= rule.min_negatives
    negatives among its candidate targets (as PF AUROC).
    """
    index = pd.Index(list(genes))
    if not index.is_unique:
        raise ValueError("the evaluable gene list has duplicates; deduplicate it before building the design")
    missing_columns = {"perturbation", "target", "is_de"} - set(labels.columns)
    if missing_columns:
        raise ValueError(f"labels lack columns {sorted(missing_columns)}; expected the DE label table")
    feature_names = tuple(feature_names)
    absent = [name for name in ("gene", *feature_names) if name not in features.columns]
    if absent:
        raise ValueError(f"features lack columns {absent}; pass gene_level_features(...) or name its columns")
    source = index.get_indexer(labels["perturbation"])
    target = index.get_indexer(labels["target"])
    keep = (source >= 0) & (target >= 0) & (source != target)
    source, target = source[keep], target[keep]
    is_de = labels["is_de"].to_numpy(dtype=bool)[keep]
    if len(is_de) == 0:
        raise ValueError(
            "no label pairs inside the evaluable genes: check that labels and genes use one naming"
        )
    if not is_de.any():
        raise ValueError(
            f"all {len(is_de)} evaluable labels are negative (no is_de pair): nothing to predict; "
            "check the DE "
            "label rule (q threshold, |dlog1p| minimum, cells per perturbation) and the screen"
        )
    pair_codes = source.astype(np.int64) * len(index) + target
    if len(np.unique(pair_codes)) != len(pair_codes):
        raise ValueError("labels hold duplicate (perturbation, target) pairs; keep one label per pair")
    n_pos = np.bincount(source[is_de], minlength=len(index))
    n_neg = np.bincount(source[~is_de], minlength=len(index))
    passing = (n_pos >= rule.min_positives) & (n_neg >= rule.min_negatives)
    keep = passing[source]
    if not keep.any():
        raise ValueError(
            f"no perturbation has >= {rule.min_positives} positives and >= {rule.min_negatives} negatives "
            "among its evaluable targets: relax the perturbation filter or the DE label rule"
        )
    source, target, is_de = source[keep], target[keep], is_de[keep]
    table = features.drop_duplicates("gene").set_index("gene")
    needed = index[np.unique(np.concatenate([source, target]))]
    unknown = needed.difference(table.index)
    if len(unknown):
        raise ValueError(
            f"features lack {len(unknown)} perturbed or target genes, e.g. {list(unknown[:5])}; compute "
            "gene-level features over the whole evaluable gene list"
        )
    gene_features = table.reindex(index)[list(feature_names)].to_numpy(dtype=np.float64)
    if not np.isfinite(gene_features[np.unique(np.concatenate([source, target]))]).all():
        raise ValueError(
            "gene-level features hold NaN or infinite values for some perturbed or target genes; fix or drop them"
        )
    names = index.to_numpy()[source]
    perturbations, codes = np.unique(names, return_inverse=True)
    order = np.lexsort((target, codes))
    return DesignTable(
        perturbations=tuple(str(p) for p in perturbations),
        genes=tuple(str(g) for g in index),
        perturbation=codes[order].astype(np.int64),
        source=source[order].astype(np.int64),
        target=target[order].astype(np.int64),
        is_de=is_de[order],
        features=gene_features[target[order]],
        feature_names=feature_names,
        source_features=gene_features[source[order]],
    )


@dataclass(frozen=True)
class EdgeColumns:
    """The with-score model's extra columns for one score set.

    values: (n, 1) imputed score, or (n, 2) imputed score and missing indicator; n_missing: pairs without a
    score; degenerate: the columns are constant (no information); score_auroc: pooled AUROC of the raw
    score alone (missing ranked lowest), 0.5 for a degenerate score.
    """

    values: np.ndarray
    names: tuple[str, ...]
    n_missing: int
    degenerate: bool
    score_auroc: float


def edge_score_columns(design: DesignTable, score_set: ScoreSet) -> EdgeColumns:
    """score(perturbation -> target) per design row, imputed (see the module docstring)."""
    check_score_sets([score_set], len(design.genes))
    raw = score_set.matrix[design.source, design.target].astype(np.float64)
    missing = ~np.isfinite(raw)
    if missing.all():
        values, names = np.zeros((design.n_rows, 1)), ("edge_score",)
    else:
        medians = pd.Series(np.where(missing, np.nan, raw)).groupby(design.perturbation).transform("median")
        fill = medians.to_numpy().copy()
        fill[np.isnan(fill)] = np.median(raw[~missing])
        imputed = np.where(missing, fill, raw)
        if missing.any():
            values, names = (
                np.column_stack([imputed, missing.astype(np.float64)]),
                ("edge_score", "edge_missing"),
            )
        else:
            values, names = imputed[:, None], ("edge_score",)
    degenerate = bool((values == values[:1]).all())
    with warnings.catch_warnings():
        # auroc warns exactly when the score is degenerate (missing ranks lowest); warn once, by name, below
        warnings.simplefilter("ignore", DegenerateScoreWarning)
        score_auroc = float(auroc(design.is_de, np.where(missing, np.nan, raw)))
    if degenerate:
        warnings.warn(
            f"score set {score_set.label!r} is constant over the {design.n_rows} design pairs: no ranking "
            "information; its AUROC is 0.5 and the with-score model equals the gene-only model (delta 0)",
            DegenerateScoreWarning,
            stacklevel=2,
        )
    return EdgeColumns(values, names, int(missing.sum()), degenerate, score_auroc)


# ----------------------------------------------------------------------------------------------------------
# Folds and models


@dataclass(frozen=True)
class Folds:
    """Fold assignment of every design row for one split.

    row_folds: (n, a) int: the fold of each row's perturbation (a = 1, perturbation_split), of its target
    (a = 1, target_split), or of both (a = 2, joint_split). One-way splits have n_folds tests: test k holds
    the rows in fold k and trains on the others. The joint split has n_folds^2 tests, one per block
    (perturbation fold i, target fold j): it tests the rows of that block and trains on the rows whose
    perturbation is outside fold i and whose target is outside fold j, so every row is tested by a model
    that saw neither its perturbation nor its target.
    """

    split: str
    n_folds: int
    row_folds: np.ndarray

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.row_folds.ndim != 2 or self.row_folds.shape[1] != (2 if self.split == "joint_split" else 1):
            raise ValueError("row_folds must be (n, 2) for the joint split and (n, 1) otherwise")

    @property
    def n_tests(self) -> int:
        return self.n_folds ** self.row_folds.shape[1]

    def _blocks(self, test: int) -> np.ndarray:
        return np.array(np.unravel_index(test, (self.n_folds,) * self.row_folds.shape[1]))

    def train(self, test: int) -> np.ndarray:
        return (self.row_folds != self._blocks(test)[None, :]).all(axis=1)

    def test(self, test: int) -> np.ndarray:
        return (self.row_folds == self._blocks(test)[None, :]).all(axis=1)


def group_folds(n_groups: int, n_folds: int, seed: int, what: str) -> np.ndarray:
    """(n_groups,) fold of each group from sklearn's shuffled GroupKFold."""
    if n_groups < n_folds:
        raise ValueError(
            f"only {n_groups} {what} in the design but n_folds={n_folds} needs at least {n_folds} "
            "(every fold "
            f"holds out at least one): lower n_folds, or keep more {what} (relax min_positives/min_negatives)"
        )
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    fold_of = np.empty(n_groups, dtype=np.int64)
    codes = np.arange(n_groups)
    splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(codes, groups=codes)):
        fold_of[test] = fold
    return fold_of


def folds_of_split(split: str, n_folds: int, joint_folds: int | None) -> int:
    """Folds per gene axis: n_folds, except joint_folds (when given) for the joint split, whose n_folds^2
    blocks each cost a fit."""
    return joint_folds if split == "joint_split" and joint_folds is not None else n_folds


def make_folds(design: DesignTable, split: str, n_folds: int, seed: int, repeat: int = 0) -> Folds:
    """Folds of one split; perturbation and target fold assignments come from independent seeded streams,
    so every split of one seed and repeat shares them (the joint split combines the other two)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    columns = []
    if split in ("perturbation_split", "joint_split"):
        fold_of = group_folds(
            design.n_perturbations, n_folds, stream_seed(seed, "perturbation_folds", repeat), "perturbations"
        )
        columns.append(fold_of[design.perturbation])
    if split in ("target_split", "joint_split"):
        targets, codes = np.unique(design.target, return_inverse=True)
        fold_of = group_folds(len(targets), n_folds, stream_seed(seed, "target_folds", repeat), "target genes")
        columns.append(fold_of[codes])
    return Folds(split, n_folds, np.column_stack(columns))


@dataclass(frozen=True)
class ModelSettings:
    """Hyper-parameters of the classifiers and regressors (sized so 560k rows x 5 folds fit minutes)."""

    logistic_c: float = 1.0
    logistic_max_iter: int = 1000
    boosted_max_iter: int = 100
    boosted_learning_rate: float = 0.1
    boosted_max_leaf_nodes: int = 15
    boosted_min_samples_leaf: int = 20
    spline_knots: int = 5  # flexible logistic arm: cubic B-splines with knots at feature quantiles
    spline_degree: int = 3

    def __post_init__(self) -> None:
        if self.logistic_c <= 0 or self.boosted_learning_rate <= 0:
            raise ValueError("logistic_c and boosted_learning_rate must be positive")
        if min(self.logistic_max_iter, self.boosted_max_iter, self.boosted_min_samples_leaf) < 1:
            raise ValueError("iteration counts and min_samples_leaf must be >= 1")
        if self.boosted_max_leaf_nodes < 2:
            raise ValueError("boosted_max_leaf_nodes must be >= 2")
        if self.spline_knots < 2 or self.spline_degree < 1:
            raise ValueError("spline_knots must be >= 2 and spline_degree >= 1")


DEFAULT_MODEL_SETTINGS = ModelSettings()


def make_classifier(model: str, settings: ModelSettings, seed: int):
    """Logistic regression on standardised features, or gradient-boosted trees (no early stopping, so the
    fit uses every training row and is deterministic)."""
    if model == "logistic":
        return make_pipeline(
            StandardScaler(),
            # Newton steps on the Cholesky-factored Hessian: a few iterations for tens of columns and many rows
            LogisticRegression(C=settings.logistic_c, max_iter=settings.logistic_max_iter, solver="newton-cholesky"),
        )
    if model == "boosted":
        return HistGradientBoostingClassifier(**_boosted_options(settings, seed))
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def spline_basis(x: np.ndarray, settings: ModelSettings) -> np.ndarray:
    """(n, k (spline_knots + spline_degree - 2)) additive B-spline basis of each column of x (n, k), on the
    column's quantile scale (ties and heavy tails are harmless; knots uniform on that scale). The logistic
    model on this basis is additive in smooth functions of every column, so a nonlinear function of those
    columns cannot add anything a second time. The expansion uses no labels, so it is fit on all rows."""
    quantiles = QuantileTransformer(n_quantiles=min(1000, len(x)), subsample=None).fit_transform(x)
    # no per-column bias function: the basis functions of a column sum to one, which the intercept carries
    return SplineTransformer(
        n_knots=settings.spline_knots, degree=settings.spline_degree, include_bias=False
    ).fit_transform(quantiles)


def _boosted_options(settings: ModelSettings, seed: int) -> dict:
    return {
        "max_iter": settings.boosted_max_iter,
        "learning_rate": settings.boosted_learning_rate,
        "max_leaf_nodes": settings.boosted_max_leaf_nodes,
        "min_samples_leaf": settings.boosted_min_samples_leaf,
        "early_stopping": False,
        "random_state": seed,
    }


def make_regressor(model: str, settings: ModelSettings, seed: int):
    if model == "ols":
        return LinearRegression()
    if model == "boosted":
        return HistGradientBoostingRegressor(**_boosted_options(settings, seed))
    raise ValueError(f"R^2 model must be one of {R2_MODELS}, got {model!r}")


def out_of_fold_scores(
    x: np.ndarray,
    is_de: np.ndarray,
    folds: Folds,
    model: str,
    settings: ModelSettings,
    seed: int,
) -> np.ndarray:
    """(n,) out-of-fold decision values (log-odds scale); NaN for rows no fold tests."""
    scores = np.full(len(is_de), np.nan)
    for fold in range(folds.n_tests):
        test = folds.test(fold)
        if not test.any():
            continue
        train = folds.train(fold)
        y = is_de[train]
        if y.all() or not y.any():
            raise ValueError(
                f"{folds.split} fold {fold}: the training rows hold only one class ({int(y.sum())} positives "
                f"of {len(y)}); use fewer folds or keep more perturbations"
            )
        estimator = make_classifier(model, settings, seed).fit(x[train], y)
        scores[test] = estimator.decision_function(x[test])
    return scores


# ----------------------------------------------------------------------------------------------------------
# Metrics under perturbation weights (the bootstrap)


def metric_names(recall_at: Sequence[int] = RECALL_AT) -> tuple[str, ...]:
    return ("auroc", "auroc_per_perturbation", "auprc", *(f"recall_at_{k}" for k in recall_at))


@dataclass(frozen=True)
class PredictionMetrics:
    """Every metric of one prediction vector, on the observed perturbations and on each resample.

    names: (M,); point: (M,); replicates: (M, B), NaN where a resample leaves a metric undefined;
    n_perturbations: (M,) perturbations the metric is defined on; n_positives: positive test rows.
    """

    names: tuple[str, ...]
    point: np.ndarray
    replicates: np.ndarray
    n_perturbations: np.ndarray
    n_positives: int

    def __post_init__(self) -> None:
        m = len(self.names)
        if self.point.shape != (m,) or self.replicates.ndim != 2 or self.replicates.shape[0] != m:
            raise ValueError(f"point must be ({m},) and replicates ({m}, B)")


def evaluate_predictions(
    is_de: np.ndarray,
    scores: np.ndarray,
    perturbation: np.ndarray,
    n_perturbations: int,
    weights: np.ndarray,
    recall_at: Sequence[int] = RECALL_AT,
    block_rows: int = 4096,
) -> PredictionMetrics:
    """All metrics of `scores` (n,) against `is_de` (n,) for the observed perturbations and every row of
    `weights` (B, P). Rows with a NaN score (never tested) are left out.

    Cost: one sort, P searchsorted calls per block of positive rows, and matrix products with the weights;
    no pass over all rows per resample.
    """
    tested = np.isfinite(scores)
    y, s, g = is_de[tested], scores[tested], perturbation[tested]
    order = np.lexsort((s, g))  # by perturbation, then score ascending
    y, s, g = y[order], s[order], g[order]
    n_groups = n_perturbations
    w_all = np.vstack([np.ones((1, n_groups)), np.asarray(weights, dtype=np.float64).reshape(-1, n_groups)])
    n_pos = np.bincount(g[y], minlength=n_groups).astype(np.float64)
    n_neg = np.bincount(g[~y], minlength=n_groups).astype(np.float64)
    neg_scores, pos_scores, pos_groups = s[~y], s[y], g[y]
    neg_offsets = np.concatenate([[0], np.cumsum(n_neg)]).astype(np.int64)
    pos_offsets = np.concatenate([[0], np.cumsum(n_pos)]).astype(np.int64)

    pair_counts = np.zeros((n_groups, n_groups))  # [p, q]: ordered (positive of p, negative of q) pairs
    ap_sum = np.zeros(len(w_all))
    for start in range(0, len(pos_scores), block_rows):
        block = pos_scores[start : start + block_rows]
        block_groups = pos_groups[start : start + block_rows]
        below = np.empty((len(block), n_groups))  # negatives of q scored below the positive
        tied = np.empty((len(block), n_groups))  # negatives of q tied with it
        positives_at_or_above = np.empty((len(block), n_groups))
        for q in range(n_groups):
            negatives = neg_scores[neg_offsets[q] : neg_offsets[q + 1]]
            low = np.searchsorted(negatives, block, "left")
            below[:, q] = low
            tied[:, q] = np.searchsorted(negatives, block, "right") - low
            positives = pos_scores[pos_offsets[q] : pos_offsets[q + 1]]
            positives_at_or_above[:, q] = len(positives) - np.searchsorted(positives, block, "left")
        runs = np.flatnonzero(np.r_[True, block_groups[1:] != block_groups[:-1]])
        pair_counts[block_groups[runs]] += np.add.reduceat(below + 0.5 * tied, runs, axis=0)
        # average precision: each positive adds its weight x the precision at its score (ties included)
        true_pos = positives_at_or_above @ w_all.T
        false_pos = (n_neg[None, :] - below) @ w_all.T
        precision = np.divide(
            true_pos, true_pos + false_pos, out=np.zeros_like(true_pos), where=true_pos + false_pos > 0
        )
        ap_sum += (w_all[:, block_groups].T * precision).sum(axis=0)

    weighted_pos, weighted_neg = w_all @ n_pos, w_all @ n_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled_auroc = np.einsum("bp,pq,bq->b", w_all, pair_counts, w_all) / (weighted_pos * weighted_neg)
        auprc = ap_sum / weighted_pos
        has_both = (n_pos > 0) & (n_neg > 0)
        within = np.where(has_both, np.diag(pair_counts) / np.maximum(n_pos * n_neg, 1), 0.0)
        group_offsets = np.concatenate([[0], np.cumsum(n_pos + n_neg)]).astype(np.int64)
        per_perturbation = [(within, has_both)] + [
            (_recall_at_k(y, s, group_offsets, n_pos, k), n_pos > 0) for k in recall_at
        ]
        means = [_weighted_mean(w_all, value, defined) for value, defined in per_perturbation]
    names = metric_names(recall_at)
    stacked = np.vstack([pooled_auroc, means[0], auprc, *means[1:]])
    n_present = int((n_pos + n_neg > 0).sum())  # perturbations with a test row: all enter the pooled metrics
    n_defined = np.array(
        [
            n_present,
            int(has_both.sum()),
            n_present,
            *[int(defined.sum()) for _, defined in per_perturbation[1:]],
        ]
    )
    return PredictionMetrics(names, stacked[:, 0].copy(), stacked[:, 1:].copy(), n_defined, int(n_pos.sum()))


def _weighted_mean(weights: np.ndarray, values: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """(B,) weighted mean of per-perturbation values over the perturbations where they are defined."""
    total = weights[:, defined].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights[:, defined] @ values[defined] / total, np.nan)


def _recall_at_k(y: np.ndarray, s: np.ndarray, offsets: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    """(P,) share of each perturbation's positives among its k highest scores (rows sorted by perturbation,
    then score ascending); ties at the cut-off count by their expected share; 0 where it has no positive."""
    recall = np.zeros(len(n_pos))
    for p in np.flatnonzero(n_pos > 0):
        scores, labels = s[offsets[p] : offsets[p + 1]], y[offsets[p] : offsets[p + 1]]
        n = len(scores)
        if k >= n:
            recall[p] = 1.0
            continue
        cut = scores[n - k]
        low, high = np.searchsorted(scores, cut, "left"), np.searchsorted(scores, cut, "right")
        above = n - high
        hits = labels[high:].sum() + (k - above) * labels[low:high].sum() / (high - low)
        recall[p] = hits / n_pos[p]
    return recall


@dataclass(frozen=True)
class MetricComparison:
    """One metric, gene-only vs with the edge score, with its bootstrap uncertainty.

    delta = with_score - gene_only; ci_low/ci_high and p_value: bootstrap_test of the resampled deltas
    (two-sided; p < 1 - confidence exactly when the interval excludes 0); gene_only_ci: the same interval
    of the gene-only value. n_bootstrap counts the resamples where the metric is defined.
    """

    metric: str
    gene_only: float
    with_score: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    gene_only_ci: tuple[float, float]
    n_perturbations: int
    n_positives: int
    n_bootstrap: int


def compare_metrics(
    gene_only: PredictionMetrics, with_score: PredictionMetrics, confidence: float = 0.95
) -> tuple[MetricComparison, ...]:
    """Paired comparison metric by metric on the same resamples."""
    if gene_only.names != with_score.names or gene_only.replicates.shape != with_score.replicates.shape:
        raise ValueError("both prediction sets must be evaluated with the same metrics and resamples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    comparisons = []
    for m, name in enumerate(gene_only.names):
        test = bootstrap_test(with_score.replicates[m] - gene_only.replicates[m], 1 - confidence)
        base = bootstrap_test(gene_only.replicates[m], 1 - confidence)
        comparisons.append(
            MetricComparison(
                metric=name,
                gene_only=float(gene_only.point[m]),
                with_score=float(with_score.point[m]),
                delta=float(with_score.point[m] - gene_only.point[m]),
                ci_low=test.ci_low,
                ci_high=test.ci_high,
                p_value=test.p_value,
                gene_only_ci=(base.ci_low, base.ci_high),
                n_perturbations=int(gene_only.n_perturbations[m]),
                n_positives=gene_only.n_positives,
                n_bootstrap=test.n_resamples,
            )
        )
    return tuple(comparisons)


# ----------------------------------------------------------------------------------------------------------
# A05 / A06


@dataclass(frozen=True)
class IncrementalValueResult:
    """One (score set, model, split): every metric's gene-only vs with-score comparison."""

    score_set: str
    method: str
    layer: int
    aggregation: str
    model: str
    split: str
    comparisons: tuple[MetricComparison, ...]
    degenerate: bool
    n_missing: int

    def comparison(self, metric: str) -> MetricComparison:
        return next(c for c in self.comparisons if c.metric == metric)


def result_identity(score_set: ScoreSet, model: str, split: str) -> dict:
    """The fields that name one (score set, model, split) result."""
    return {"score_set": score_set_name(score_set), "method": score_set.method, "layer": score_set.layer,
            "aggregation": score_set.aggregation, "model": model, "split": split}


def incremental_value(
    design: DesignTable,
    score_sets: Sequence[ScoreSet],
    *,
    splits: Sequence[str] = SPLITS,
    models: Sequence[str] = MODELS,
    n_folds: int = 5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    recall_at: Sequence[int] = RECALL_AT,
    settings: ModelSettings = DEFAULT_MODEL_SETTINGS,
    confidence: float = 0.95,
    joint_folds: int | None = None,
) -> tuple[IncrementalValueResult, ...]:
    """Gene-only vs gene + edge score for every score set, model and split, on shared folds and resamples.

    The gene-only model of a (split, model) is fit once and shared by every score set; with-score models
    use the same folds, and every comparison uses the same bootstrap resamples of perturbations. The joint
    split uses joint_folds per axis when given (n_folds otherwise).
    """
    check_choices(splits, SPLITS, "split")
    check_choices(models, MODELS, "model")
    check_score_sets(score_sets, len(design.genes))
    folds = {split: make_folds(design, split, folds_of_split(split, n_folds, joint_folds), seed) for split in splits}
    weights = resample_counts(design.n_perturbations, n_bootstrap, stream_seed(seed, "bootstrap"))
    model_seed = stream_seed(seed, "models")

    def evaluate(scores: np.ndarray) -> PredictionMetrics:
        return evaluate_predictions(
            design.is_de, scores, design.perturbation, design.n_perturbations, weights, recall_at
        )

    baseline = {
        (split, model): evaluate(
            out_of_fold_scores(design.features, design.is_de, folds[split], model, settings, model_seed)
        )
        for split in splits
        for model in models
    }
    results = []
    for score_set in score_sets:
        edges = edge_score_columns(design, score_set)
        x = np.hstack([design.features, edges.values])
        for split in splits:
            for model in models:
                gene_only = baseline[(split, model)]
                with_score = (
                    gene_only
                    if edges.degenerate
                    else evaluate(
                        out_of_fold_scores(x, design.is_de, folds[split], model, settings, model_seed)
                    )
                )
                results.append(
                    IncrementalValueResult(
                        **result_identity(score_set, model, split),
                        comparisons=compare_metrics(gene_only, with_score, confidence),
                        degenerate=edges.degenerate,
                        n_missing=edges.n_missing,
                    )
                )
    return tuple(results)


def incremental_value_rows(
    results: Sequence[IncrementalValueResult],
    *,
    variant: str,
    analysis_id: str | None = None,
    negatives: str = NEGATIVES,
    label_rule: str | None = None,
    seed: int | None = None,
) -> list[dict]:
    """Descriptive registry rows (without shared fields) for A05/A06 results (or A08's, with
    analysis_id="A08"); the confirmatory A05/A06 rows come from incremental_confirmatory.

    Per (score set, model, split, metric) a delta row "<A>:<model>:<split>:<variant>:<score set>:<metric>":
    statistic = the with-score value, effect = delta, CI and two-sided p from the perturbation bootstrap.
    Per (model, split, metric) one gene-only row "<A>:<model>:<split>:<variant>:gene_only:<metric>" with
    its bootstrap interval. `variant` names the model form ("study": the study's plain models on target
    features and the raw score; "flexible": the confirmatory form's models).
    """
    rows: list[dict] = []
    seen_baselines: set[tuple[str, str]] = set()
    extra = ({} if label_rule is None else {"label_rule": label_rule}) | (
        {} if seed is None else {"seed": seed}
    )
    for result in results:
        analysis = analysis_id or SPLIT_ANALYSIS[result.split]
        prefix = f"{analysis}:{result.model}:{result.split}:{variant}"
        shared = {"analysis_id": analysis, "family": "P", "negatives": negatives, "confirmatory": False, **extra}
        if (result.model, result.split) not in seen_baselines:
            seen_baselines.add((result.model, result.split))
            rows += [
                {
                    **shared,
                    "test_id": f"{prefix}:gene_only:{c.metric}",
                    "layer": None,
                    "aggregation": "none",
                    "statistic_name": f"{c.metric}_gene_only",
                    "statistic": c.gene_only,
                    "effect_name": c.metric,
                    "effect": c.gene_only,
                    "ci_low": c.gene_only_ci[0],
                    "ci_high": c.gene_only_ci[1],
                    "p_value": None,
                    "n": c.n_perturbations,
                    "n_positives": c.n_positives,
                }
                for c in result.comparisons
            ]
        rows += [
            {
                **shared,
                "test_id": f"{prefix}:{result.score_set}:{c.metric}",
                "layer": result.layer if result.layer != NO_LAYER else None,
                "aggregation": result.aggregation,
                "statistic_name": f"{c.metric}_with_score",
                "statistic": c.with_score,
                "effect_name": f"delta_{c.metric}(with_score - gene_only)",
                "effect": c.delta,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "p_value": c.p_value,
                "n": c.n_perturbations,
                "n_positives": c.n_positives,
            }
            for c in result.comparisons
        ]
    return rows


def check_choices(chosen: Sequence[str], allowed: Sequence[str], what: str) -> None:
    unknown = [name for name in chosen if name not in allowed]
    if unknown or not chosen:
        raise ValueError(f"{what}s must be a non-empty subset of {tuple(allowed)}, got {tuple(chosen)}")


# ----------------------------------------------------------------------------------------------------------
# A07: covariate R^2


@dataclass(frozen=True)
class CovariateR2:
    """Held-out R^2 of one score set on the target's gene-level features.

    fold_r2: (n_folds,) R^2 on each held-out fold (NaN for a degenerate score); r2: their mean;
    n_pairs: design pairs with an observed score that entered the regression.
    """

    score_set: str
    method: str
    layer: int
    aggregation: str
    model: str
    fold_r2: np.ndarray = field(repr=False)
    n_pairs: int

    @property
    def r2(self) -> float:
        return float(np.mean(self.fold_r2))


def covariate_r2(
    design: DesignTable,
    score_set: ScoreSet,
    *,
    n_folds: int = 5,
    seed: int = 0,
    models: Sequence[str] = R2_MODELS,
    settings: ModelSettings = DEFAULT_MODEL_SETTINGS,
    max_pairs: int | None = None,
) -> tuple[CovariateR2, ...]:
    """A07 for one score set: pairs with an observed score, folds grouped by target (the target split's
    folds for this seed); `max_pairs` caps the pairs with a seeded subsample (None: all)."""
    check_choices(models, R2_MODELS, "R^2 model")
    check_score_sets([score_set], len(design.genes))
    folds = make_folds(design, "target_split", n_folds, seed).row_folds[:, 0]
    values = score_set.matrix[design.source, design.target].astype(np.float64)
    rows = np.flatnonzero(np.isfinite(values))
    if max_pairs is not None and len(rows) > max_pairs:
        rows = np.sort(
            np.random.default_rng(stream_seed(seed, "rows")).choice(rows, max_pairs, replace=False)
        )
    x, y, row_folds = design.features[rows], values[rows], folds[rows]
    degenerate = len(y) == 0 or bool((y == y[0]).all())
    if degenerate:
        warnings.warn(
            f"score set {score_set.label!r} is constant (or missing) over the design pairs: "
            "R^2 is undefined and reported as NaN",
            DegenerateScoreWarning,
            stacklevel=2,
        )
    results = []
    for model in models:
        fold_r2 = np.full(n_folds, np.nan)
        if not degenerate:
            for fold in range(n_folds):
                test = row_folds == fold
                if not test.any():
                    continue
                estimator = make_regressor(model, settings, stream_seed(seed, "models"))
                estimator.fit(x[~test], y[~test])
                fold_r2[fold] = r2_score(y[test], estimator.predict(x[test]))
        results.append(
            CovariateR2(
                score_set_name(score_set),
                score_set.method,
                score_set.layer,
                score_set.aggregation,
                model,
                fold_r2,
                len(y),
            )
        )
    return tuple(results)


def covariate_r2_rows(
    results: Sequence[CovariateR2],
    *,
    n_perturbations: int,
    n_positives: int,
    label_rule: str | None = None,
    seed: int | None = None,
) -> list[dict]:
    """Descriptive A07 rows: statistic = mean held-out R^2; ci_low/ci_high = the lowest and highest fold."""
    rows = []
    for result in results:
        finite = result.fold_r2[np.isfinite(result.fold_r2)]
        rows.append(
            {
                "analysis_id": "A07",
                "test_id": f"A07:{result.model}:{result.score_set}",
                "family": "P",
                "layer": result.layer if result.layer != NO_LAYER else None,
                "aggregation": result.aggregation,
                "statistic_name": "cv_r2_mean_over_folds",
                "statistic": result.r2,
                "effect_name": "share_of_edge_score_variance_explained_by_target_features",
                "effect": result.r2,
                "ci_low": float(finite.min()) if len(finite) else None,
                "ci_high": float(finite.max()) if len(finite) else None,
                "p_value": None,
                "n": n_perturbations,
                "n_positives": n_positives,
                "confirmatory": False,
                "negatives": "not applicable (regression of the edge score on target features)",
                **({} if label_rule is None else {"label_rule": label_rule}),
                **({} if seed is None else {"seed": seed}),
            }
        )
    return rows


def covariate_r2_tests(
    labels: pd.DataFrame,
    features: pd.DataFrame,
    genes: Sequence[str],
    score_sets: Sequence[ScoreSet],
    *,
    rule: PerturbationFilter,
    n_folds: int = 5,
    seed: int = 0,
    models: Sequence[str] = R2_MODELS,
    feature_names: Sequence[str] = GENE_LEVEL_FEATURES,
    settings: ModelSettings = DEFAULT_MODEL_SETTINGS,
    max_pairs: int | None = None,
    label_rule: str | None = None,
) -> list[dict]:
    """A07 registry rows for every score set over the A05 design pairs."""
    check_score_sets(score_sets, len(genes))
    design = build_design(labels, features, genes, rule, feature_names)
    results = [
        result
        for score_set in score_sets
        for result in covariate_r2(
            design,
            score_set,
            n_folds=n_folds,
            seed=seed,
            models=models,
            settings=settings,
            max_pairs=max_pairs,
        )
    ]
    return covariate_r2_rows(
        results,
        n_perturbations=design.n_perturbations,
        n_positives=int(design.is_de.sum()),
        label_rule=label_rule,
        seed=seed,
    )
