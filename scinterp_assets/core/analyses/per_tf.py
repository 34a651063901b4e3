"""Family R, A15: per-TF reference AUROC, and the TF-block bootstrap and leave-one-TF-out range of every
global reference AUROC (positives of one TF are not independent; FRAMEWORK section 7: bootstraps
resample TFs, never pairs).

A *block* is one source gene's row of ordered pairs (its outgoing pairs, positives and negatives). A TF is
a source with at least one positive (for undirected resources: every gene with a partner). The bootstrap
is stratified: TF blocks are resampled with replacement among the TFs and the remaining (all-negative)
source rows among themselves, so every draw holds as many TFs as the data; the global AUROC is recomputed
on the concatenated blocks, exactly (`row_weighted_aurocs`: AUROC is bilinear in the row multiplicities,
so no resampled pair list is ever materialised); leave-one-TF-out has a closed form.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

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
from scinterp_assets.core.stats.auroc import auroc, half_tie_counts
from scinterp_assets.core.stats.bootstrap import wald_p_value
from scinterp_assets.core.stats.paired import one_sample_wilcoxon

PER_TF_COLUMNS = ("tf", "auroc", "ci_low", "ci_high", "n_positives", "n_negatives")


def score_seed(seed: int, *names: str) -> np.random.SeedSequence:
    """A seed stream per (seed, names): adding a score set or resource leaves the others' draws unchanged."""
    return np.random.SeedSequence([seed, *(zlib.crc32(name.encode()) for name in names)])


# ----------------------------------------------------------------------------------------------------------
# TF-block machinery


def tf_block_weights(labels: ReferenceLabels, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, G) row multiplicities of a stratified TF-block bootstrap (TFs among TFs, other rows among others)."""
    tf_rows = labels.tf_rows
    n_tfs = tf_rows.size
    if n_tfs < 2:
        raise ValueError(
            f"reference {labels.resource!r} has positives from {n_tfs} TF only: a TF-block bootstrap needs >= 2 "
            "TFs (positives of one TF are not independent, so no interval can be estimated); use a larger "
            "reference or universe")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    n = len(labels.genes)
    others = np.setdiff1d(np.arange(n), tf_rows)
    weights = np.zeros((n_bootstrap, n))
    weights[:, tf_rows] = rng.multinomial(n_tfs, np.full(n_tfs, 1.0 / n_tfs), size=n_bootstrap)
    if others.size:
        weights[:, others] = rng.multinomial(others.size, np.full(others.size, 1.0 / others.size), size=n_bootstrap)
    return weights


@dataclass(frozen=True)
class _Pairs:
    """Row and score of every positive and negative pair of one score matrix (NaN scores -> -inf)."""

    pos_rows: np.ndarray
    pos_scores: np.ndarray
    neg_rows: np.ndarray
    neg_scores: np.ndarray
    negative: np.ndarray  # (G, G) bool
    scores: np.ndarray  # (G, G) with -inf for NaN


def _pairs(scores: np.ndarray, labels: ReferenceLabels) -> _Pairs:
    s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    negative = labels.off_diagonal & ~labels.membership
    pos_rows, pos_columns = np.nonzero(labels.membership)
    neg_rows, neg_columns = np.nonzero(negative)
    return _Pairs(pos_rows, s[pos_rows, pos_columns], neg_rows, s[neg_rows, neg_columns], negative, s)


def row_weighted_aurocs(scores: np.ndarray, labels: ReferenceLabels, row_weights: np.ndarray) -> np.ndarray:
    """(B,) reference AUROC when every source row (all its off-diagonal pairs) counts row_weights[b, row] times.

    scores (G, G), NaN ranking lowest; row_weights (B, G) non-negative (a (G,) input gives a (1,) result).
    Exact: U[t, c] = sum over positives p of TF t and negatives q of row c of [s_p > s_q] + 0.5 [s_p == s_q]
    is built once, row by row (a negative adds 1/2 to the sorted positives tied with it and 1 to those above
    it: a difference array and a cumulative sum, ~4 P operations per row); then every draw's numerator is the
    bilinear form sum_t,c w_t U[t, c] w_c and its denominator (w . positives)(w . negatives).
    """
    w = np.atleast_2d(np.asarray(row_weights, dtype=np.float64))
    pairs = _pairs(scores, labels)
    n, tf_rows = len(labels.genes), labels.tf_rows
    order = np.argsort(pairs.pos_scores, kind="stable")
    sorted_positives = pairs.pos_scores[order]
    sorted_block = np.searchsorted(tf_rows, pairs.pos_rows[order])
    n_pos = sorted_positives.size
    counts = np.zeros((tf_rows.size, n))
    for row in range(n):
        negatives = pairs.scores[row, pairs.negative[row]]
        if negatives.size == 0:
            continue
        tied_from = np.searchsorted(sorted_positives, negatives, side="left")
        above_from = np.searchsorted(sorted_positives, negatives, side="right")
        steps = 0.5 * (np.bincount(tied_from, minlength=n_pos + 1) + np.bincount(above_from, minlength=n_pos + 1))
        counts[:, row] = np.bincount(sorted_block, weights=np.cumsum(steps)[:n_pos], minlength=tf_rows.size)
    numerator = np.einsum("bc,bc->b", w[:, tf_rows] @ counts, w)
    row_positives = np.bincount(pairs.pos_rows, minlength=n)
    row_negatives = np.bincount(pairs.neg_rows, minlength=n)
    return numerator / ((w @ row_positives) * (w @ row_negatives))


def leave_one_tf_out_aurocs(scores: np.ndarray, labels: ReferenceLabels) -> np.ndarray:
    """(T,) reference AUROC with TF t's whole row (positives and negatives) left out, in labels.tf_rows order.

    Exact and O(G^2 log G): U_-t = U - A_t - B_t + C_t, where A_t counts TF t's positives against all
    negatives, B_t all positives against row t's negatives, C_t row t against itself."""
    pairs = _pairs(scores, labels)
    n = len(labels.genes)
    tf_rows = labels.tf_rows
    sorted_negatives = np.sort(pairs.neg_scores)
    per_positive = half_tie_counts(sorted_negatives, pairs.pos_scores)
    sorted_positives = np.sort(pairs.pos_scores)
    up_to = np.searchsorted(sorted_positives, pairs.neg_scores, side="right")
    above = sorted_positives.size - up_to  # positives above each negative; ties count half
    ties = up_to - np.searchsorted(sorted_positives, pairs.neg_scores, side="left")
    total = per_positive.sum()
    a = np.bincount(pairs.pos_rows, weights=per_positive, minlength=n)[tf_rows]
    b = np.bincount(pairs.neg_rows, weights=above + 0.5 * ties, minlength=n)[tf_rows]
    c = np.array([half_tie_counts(np.sort(pairs.scores[row, pairs.negative[row]]),
                                   pairs.scores[row, labels.membership[row]]).sum() for row in tf_rows])
    n_pos = np.bincount(pairs.pos_rows, minlength=n)[tf_rows]
    n_neg = np.bincount(pairs.neg_rows, minlength=n)[tf_rows]
    return (total - a - b + c) / ((pairs.pos_rows.size - n_pos) * (pairs.neg_rows.size - n_neg))


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


def tf_block_auroc(score_set: ScoreSet, labels: ReferenceLabels, *, n_bootstrap: int, seed: int,
                   confidence: float = 0.95) -> TFBlockAuroc:
    """A15 global part: the reference AUROC (as A12), its TF-block bootstrap and leave-one-TF-out range."""
    scores = check_score_set(score_set, labels.genes)
    off = labels.off_diagonal
    area = float(auroc(labels.membership[off], scores[off]))  # warns DegenerateScoreWarning when constant
    rng = np.random.default_rng(score_seed(seed, labels.resource, score_set.label))
    boot = row_weighted_aurocs(scores, labels, tf_block_weights(labels, n_bootstrap, rng))
    low, high = percentile_interval(boot, confidence)
    se = float(np.std(boot, ddof=1))
    loto = leave_one_tf_out_aurocs(scores, labels)
    return TFBlockAuroc(score_set.label, labels.resource, area, low, high, se, wald_p_value(area, 0.5, se), loto,
                        tuple(labels.genes[row] for row in labels.tf_rows), boot, int(off.sum()), labels.n_positives)


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
        boot = _per_tf_bootstrap(s[y], s[~y], n_bootstrap, rng)
        point = float(half_tie_counts(np.sort(s[~y]), s[y]).sum() / (n_pos * n_neg))
        low, high = percentile_interval(boot, confidence)
        rows.append((labels.genes[row], point, low, high, n_pos, n_neg))
    return pd.DataFrame(rows, columns=list(PER_TF_COLUMNS)).astype(
        {"tf": object, "auroc": np.float64, "ci_low": np.float64, "ci_high": np.float64,
         "n_positives": np.int64, "n_negatives": np.int64})


def _per_tf_bootstrap(positives: np.ndarray, negatives: np.ndarray, n_bootstrap: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(B,) AUROCs of a stratified bootstrap of one TF's targets, exact and O(B P) per TF.

    Only how many resampled negatives fall below or on each positive score matters, so the negatives are
    drawn as multinomial counts over the 2k + 1 cells that the k distinct positive scores cut the line into
    (below the first, tied with it, between the first and the second, ...), which has the distribution of
    resampling the negatives themselves."""
    n_pos, n_neg = positives.size, negatives.size
    levels = np.unique(positives)
    negatives = np.sort(negatives)
    below = np.searchsorted(negatives, levels, side="left")
    up_to = np.searchsorted(negatives, levels, side="right")
    edges = np.concatenate([[0], np.column_stack([below, up_to]).ravel(), [n_neg]])
    cells = rng.multinomial(n_neg, np.diff(edges) / n_neg, size=n_bootstrap)  # (B, 2k + 1)
    cumulative = np.concatenate([np.zeros((n_bootstrap, 1)), np.cumsum(cells, axis=1)], axis=1)
    level = np.searchsorted(levels, positives)
    ranked = cumulative[:, 2 * level + 1] + 0.5 * cells[:, 2 * level + 1]  # below + half of the tied cell
    w_pos = rng.multinomial(n_pos, np.full(n_pos, 1.0 / n_pos), size=n_bootstrap)
    return (w_pos * ranked).sum(axis=1) / (n_pos * n_neg)


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
        shared = {"n": g.n_pairs, "n_positives": g.n_positives, "negatives": ALL_NEGATIVES, "seed": seed}
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
            n=len(per_tf), n_positives=int(per_tf["n_positives"].sum()), negatives=ALL_NEGATIVES, seed=seed))
    return rows
