"""Family R, A15: per-TF reference AUROC, and the TF-block bootstrap and leave-one-TF-out range of every
global reference AUROC (positives of one TF are not independent; FRAMEWORK section 7: bootstraps
resample TFs, never pairs).

A *block* is one source gene's row of ordered pairs (its outgoing pairs, positives and negatives). A TF is
a source with at least one positive (for undirected resources: every gene with a partner). The bootstrap
is stratified: TF blocks are resampled with replacement among the TFs and the remaining (all-negative)
source rows among themselves, so every draw holds as many TFs as the data; the global AUROC is recomputed
on the concatenated blocks. `BlockCounts` makes each draw cheap: AUROC is bilinear in the block
multiplicities (numerator = sum over TF block t and block c of w_t w_c U[t, c]).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from scinterp_assets.core.analyses.reference_battery import (
    ALL_NEGATIVES,
    ReferenceLabels,
    check_score_set,
    percentile_interval,
    reference_labels,
    registry_row,
    score_name,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.stats.auroc import auroc
from scinterp_assets.core.stats.paired import one_sample_wilcoxon

PER_TF_COLUMNS = ("tf", "auroc", "ci_low", "ci_high", "n_positives", "n_negatives")


def score_seed(seed: int, *names: str) -> np.random.SeedSequence:
    """A seed stream per (seed, names): adding a score set or resource leaves the others' draws unchanged."""
    return np.random.SeedSequence([seed, *(zlib.crc32(name.encode()) for name in names)])


# ----------------------------------------------------------------------------------------------------------
# TF-block machinery


@dataclass(frozen=True)
class BlockCounts:
    """Sufficient statistics of a reference AUROC under reweighting of source rows (blocks).

    tf_rows      (T,) row index of each TF (rows with >= 1 positive among the included pairs)
    pair_counts  (T, G) float64, U[t, c] = sum over positives p in row tf_rows[t] and negatives q in row c of
                 [s_p > s_q] + 0.5 [s_p == s_q] (NaN scores rank lowest)
    n_positives  (G,) positives per row; n_negatives (G,) negatives per row
    """

    tf_rows: np.ndarray
    pair_counts: np.ndarray
    n_positives: np.ndarray
    n_negatives: np.ndarray

    def auroc(self, row_weights: np.ndarray) -> np.ndarray:
        """(B,) AUROC for (B, G) row multiplicities (a 1-D (G,) input gives a (1,) result)."""
        w = np.atleast_2d(np.asarray(row_weights, dtype=np.float64))
        numerator = np.einsum("bc,bc->b", w[:, self.tf_rows] @ self.pair_counts, w)
        return numerator / ((w @ self.n_positives) * (w @ self.n_negatives))


def block_counts(scores: np.ndarray, labels: ReferenceLabels, include: np.ndarray | None = None) -> BlockCounts:
    """BlockCounts of a (G, G) score matrix; `include` (G, G) bool restricts the compared pairs (default: all
    off-diagonal pairs). Cost: one sort per row and one binary search per (positive, row)."""
    include = labels.off_diagonal if include is None else include & labels.off_diagonal
    s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    positive = labels.membership & include
    negative = ~labels.membership & include
    tf_rows = np.flatnonzero(positive.any(axis=1))
    pos_rows, pos_columns = np.nonzero(positive)
    pos_scores = s[pos_rows, pos_columns]
    pos_block = np.searchsorted(tf_rows, pos_rows)
    n = s.shape[0]
    counts = np.zeros((tf_rows.size, n))
    for row in range(n):
        negatives = np.sort(s[row, negative[row]])
        if negatives.size == 0:
            continue
        below = np.searchsorted(negatives, pos_scores, side="left")
        up_to = np.searchsorted(negatives, pos_scores, side="right")
        counts[:, row] = np.bincount(pos_block, weights=below + 0.5 * (up_to - below), minlength=tf_rows.size)
    return BlockCounts(tf_rows, counts, positive.sum(axis=1).astype(np.float64),
                       negative.sum(axis=1).astype(np.float64))


def tf_block_weights(counts: BlockCounts, n_bootstrap: int, rng: np.random.Generator,
                     resource: str = "reference") -> np.ndarray:
    """(B, G) row multiplicities of a stratified TF-block bootstrap (TFs among TFs, other rows among others)."""
    n_tfs = counts.tf_rows.size
    if n_tfs < 2:
        raise ValueError(
            f"reference {resource!r} has positives from {n_tfs} TF only: a TF-block bootstrap needs >= 2 TFs "
            "(positives of one TF are not independent, so no interval can be estimated); use a larger "
            "reference or universe")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    n = counts.n_positives.size
    others = np.setdiff1d(np.arange(n), counts.tf_rows)
    weights = np.zeros((n_bootstrap, n))
    weights[:, counts.tf_rows] = rng.multinomial(n_tfs, np.full(n_tfs, 1.0 / n_tfs), size=n_bootstrap)
    if others.size:
        weights[:, others] = rng.multinomial(others.size, np.full(others.size, 1.0 / others.size), size=n_bootstrap)
    return weights


def leave_one_tf_out_weights(counts: BlockCounts) -> np.ndarray:
    """(T, G) weights: row t leaves TF t's block (its positives and its negatives) out."""
    weights = np.ones((counts.tf_rows.size, counts.n_positives.size))
    weights[np.arange(counts.tf_rows.size), counts.tf_rows] = 0.0
    return weights


@dataclass(frozen=True)
class TFBlockAuroc:
    """Global reference AUROC with its TF-block bootstrap percentile CI, bootstrap SE and p-value (Wald,
    H0: AUROC = 0.5, with the bootstrap SE) and the leave-one-TF-out AUROCs (loto, (T,), in tf order)."""

    score: str
    resource: str
    auroc: float
    ci_low: float
    ci_high: float
    standard_error: float
    p_value: float
    loto: np.ndarray
    tfs: tuple[str, ...]
    bootstrap: np.ndarray
    n_pairs: int
    n_positives: int

    @property
    def loto_min(self) -> float:
        return float(self.loto.min())

    @property
    def loto_max(self) -> float:
        return float(self.loto.max())


def wald_p_value(estimate: float, null_value: float, standard_error: float) -> float:
    """Two-sided normal p of (estimate - null_value) / standard_error; 1 when both are 0, 0 when only the SE is."""
    difference = estimate - null_value
    if not np.isfinite(difference) or not np.isfinite(standard_error):
        return float("nan")
    if standard_error == 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * stats.norm.sf(abs(difference) / standard_error))


def tf_block_auroc(score_set: ScoreSet, labels: ReferenceLabels, *, n_bootstrap: int, seed: int,
                   confidence: float = 0.95) -> TFBlockAuroc:
    """A15 global part: the reference AUROC (as A12), its TF-block bootstrap and leave-one-TF-out range."""
    scores = check_score_set(score_set, labels.genes)
    off = labels.off_diagonal
    area = float(auroc(labels.membership[off], scores[off]))  # warns DegenerateScoreWarning when constant
    counts = block_counts(scores, labels)
    rng = np.random.default_rng(score_seed(seed, labels.resource, score_set.label))
    boot = counts.auroc(tf_block_weights(counts, n_bootstrap, rng, labels.resource))
    low, high = percentile_interval(boot, confidence)
    se = float(np.std(boot, ddof=1))
    loto = counts.auroc(leave_one_tf_out_weights(counts))
    return TFBlockAuroc(score_set.label, labels.resource, area, low, high, se, wald_p_value(area, 0.5, se), loto,
                        tuple(labels.genes[row] for row in counts.tf_rows), boot, int(off.sum()), labels.n_positives)


# ----------------------------------------------------------------------------------------------------------
# Per-TF AUROC


def per_tf_auroc(score_set: ScoreSet, labels: ReferenceLabels, *, min_positives: int, min_negatives: int,
                 n_bootstrap: int, seed: int, confidence: float = 0.95) -> pd.DataFrame:
    """AUROC of each TF's outgoing pairs (PER_TF_COLUMNS), for TFs with enough positives and negatives.

    Inside one TF the targets are the only unit left, so its CI is a stratified bootstrap of targets
    (positives and negatives resampled separately, percentile interval). NaN scores rank lowest.
    """
    scores = np.where(np.isnan(check_score_set(score_set, labels.genes)), -np.inf, score_set.matrix)
    rng = np.random.default_rng(score_seed(seed, labels.resource, score_set.label, "per_tf"))
    rows = []
    for row in labels.tf_rows:
        keep = labels.off_diagonal[row]
        y, s = labels.membership[row, keep], scores[row, keep]
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos < min_positives or n_neg < min_negatives:
            continue
        negatives = np.sort(s[~y])
        positives = s[y]
        below = np.searchsorted(negatives, positives, side="left")
        up_to = np.searchsorted(negatives, positives, side="right")
        point = float((below + 0.5 * (up_to - below)).sum() / (n_pos * n_neg))
        w_pos = rng.multinomial(n_pos, np.full(n_pos, 1.0 / n_pos), size=n_bootstrap)
        w_neg = rng.multinomial(n_neg, np.full(n_neg, 1.0 / n_neg), size=n_bootstrap)
        cumulative = np.concatenate([np.zeros((n_bootstrap, 1)), np.cumsum(w_neg, axis=1)], axis=1)
        ranked = cumulative[:, below] + 0.5 * (cumulative[:, up_to] - cumulative[:, below])
        boot = (w_pos * ranked).sum(axis=1) / (n_pos * n_neg)
        low, high = percentile_interval(boot, confidence)
        rows.append((labels.genes[row], point, low, high, n_pos, n_neg))
    return pd.DataFrame(rows, columns=list(PER_TF_COLUMNS)).astype(
        {"tf": object, "auroc": np.float64, "ci_low": np.float64, "ci_high": np.float64,
         "n_positives": np.int64, "n_negatives": np.int64})


@dataclass(frozen=True)
class PerTFAnalysis:
    """A15 for one score set and resource: the global AUROC's TF-block summary, the per-TF table, and a
    one-sample Wilcoxon of per-TF AUROCs against 0.5 (the TF as the unit)."""

    global_auroc: TFBlockAuroc
    per_tf: pd.DataFrame
    wilcoxon_statistic: float
    wilcoxon_p: float


def per_tf_analysis(score_set: ScoreSet, labels: ReferenceLabels, *, n_bootstrap: int, seed: int,
                    min_positives: int = 3, min_negatives: int = 3, confidence: float = 0.95) -> PerTFAnalysis:
    """A15 for one score set (see `tf_block_auroc` and `per_tf_auroc`)."""
    global_auroc = tf_block_auroc(score_set, labels, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
    table = per_tf_auroc(score_set, labels, min_positives=min_positives, min_negatives=min_negatives,
                         n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
    test = one_sample_wilcoxon(table["auroc"].to_numpy(), 0.5)
    return PerTFAnalysis(global_auroc, table, test.statistic, test.p_value)


def per_tf_tests(reference: pd.DataFrame, resource: str, genes: Sequence[str], score_sets: Sequence[ScoreSet], *,
                 n_bootstrap: int, seed: int, min_positives: int = 3, min_negatives: int = 3,
                 confidence: float = 0.95) -> list[dict]:
    """A15 registry rows (descriptive), three per score set:
    "A15:<resource>:<score>:tf_block"          AUROC, CI = TF-block bootstrap percentile interval,
                                               p = Wald with the bootstrap SE (H0: AUROC = 0.5)
    "A15:<resource>:<score>:leave_one_tf_out"  AUROC; ci_low / ci_high = the leave-one-TF-out minimum / maximum
    "A15:<resource>:<score>:per_tf"            one-sample Wilcoxon of per-TF AUROCs vs 0.5 (n = TFs),
                                               effect = median per-TF AUROC
    """
    labels = reference_labels(reference, genes, resource)
    rows = []
    for score_set in score_sets:
        result = per_tf_analysis(score_set, labels, n_bootstrap=n_bootstrap, seed=seed, min_positives=min_positives,
                                 min_negatives=min_negatives, confidence=confidence)
        g, name = result.global_auroc, score_name(score_set)
        shared = {"n": g.n_pairs, "n_positives": g.n_positives, "negatives": ALL_NEGATIVES}
        rows.append(registry_row(
            "A15", f"A15:{resource}:{name}:tf_block", score_set, statistic_name="auroc", statistic=g.auroc,
            effect_name="auroc_minus_0.5", effect=g.auroc - 0.5, ci_low=g.ci_low, ci_high=g.ci_high,
            p_value=g.p_value, **shared))
        rows.append(registry_row(
            "A15", f"A15:{resource}:{name}:leave_one_tf_out", score_set, statistic_name="auroc", statistic=g.auroc,
            effect_name="leave_one_tf_out_max_abs_change(ci = leave-one-TF-out min, max)",
            effect=float(np.max(np.abs(g.loto - g.auroc))), ci_low=g.loto_min, ci_high=g.loto_max, **shared))
        per_tf = result.per_tf
        rows.append(registry_row(
            "A15", f"A15:{resource}:{name}:per_tf", score_set, statistic_name="wilcoxon_W_per_tf_auroc_vs_0.5",
            statistic=result.wilcoxon_statistic, effect_name="median_per_tf_auroc",
            effect=float(per_tf["auroc"].median()) if len(per_tf) else float("nan"), p_value=result.wilcoxon_p,
            n=len(per_tf), n_positives=int(per_tf["n_positives"].sum()), negatives=ALL_NEGATIVES))
    return rows
