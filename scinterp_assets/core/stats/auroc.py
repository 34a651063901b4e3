"""Area under the ROC curve by ranks, vectorised over many score columns.

AUROC = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with average ranks for ties,
which equals the Mann-Whitney U statistic scaled to [0, 1] and sklearn's roc_auc_score.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats


class DegenerateScoreWarning(UserWarning):
    """A score column is constant: its AUROC is exactly 0.5 (no ranking information)."""


def auroc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray | float:
    """AUROC of each score column against binary labels.

    labels: (n,) bool. scores: (n,) or (n, k) float; NaN scores are ranked lowest (a pair without a
    score is never a confident prediction). Returns a float for 1-D scores, else (k,) float64.
    NaN when labels hold no positive or no negative.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    one_column = s.ndim == 1
    s = s.reshape(len(s), -1)
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"labels have {y.shape[0]} rows, scores {s.shape[0]}")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        result = np.full(s.shape[1], np.nan)
        return float(result[0]) if one_column else result
    s = np.where(np.isnan(s), -np.inf, s)
    constant = (s == s[:1]).all(axis=0)
    if constant.any():
        warnings.warn(
            f"{int(constant.sum())} score column(s) are constant; AUROC set to 0.5", DegenerateScoreWarning, stacklevel=2
        )
    ranks = stats.rankdata(s, axis=0, method="average")
    result = (ranks[y].sum(axis=0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    result[constant] = 0.5
    return float(result[0]) if one_column else result


def auroc_mann_whitney_p(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUROC and its two-sided Mann-Whitney U p-value (H0: AUROC = 0.5), tie-corrected normal approximation."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    area = auroc(y, s)
    if np.isnan(area) or np.all(s == s[0]):
        return area, float("nan") if np.isnan(area) else 1.0
    result = stats.mannwhitneyu(s[y], s[~y], alternative="two-sided", method="asymptotic")
    return area, float(result.pvalue)


def resampled_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one score vector under many row weightings (bootstrap multiplicities).

    labels: (n,) bool; scores: (n,) finite float; weights: (B, n) non-negative. Returns (B,):
    sum over (positive i, negative j) of w_i w_j ([s_j < s_i] + [s_j == s_i] / 2), divided by
    (sum of positive weights) (sum of negative weights), as sklearn's roc_auc_score with sample_weight;
    NaN where a weighting leaves no positive or no negative. Cost O(B n) after one sort.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if s.shape != y.shape or w.ndim != 2 or w.shape[1] != len(y):
        raise ValueError(f"labels and scores must be (n,) and weights (B, n); got {y.shape}, {s.shape}, {w.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite; drop rows without a score first")
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[:, order]
    new_value = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new_value)
    value_of_row = np.cumsum(new_value) - 1
    negative_weight = np.where(y, 0.0, w)
    tied_negatives = np.add.reduceat(negative_weight, starts, axis=1)  # (B, distinct values)
    negatives_below = np.cumsum(tied_negatives, axis=1) - tied_negatives
    credit = negatives_below + 0.5 * tied_negatives
    positive_weight = w[:, y]
    total_positive, total_negative = positive_weight.sum(axis=1), negative_weight.sum(axis=1)
    numerator = (positive_weight * credit[:, value_of_row[y]]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            (total_positive > 0) & (total_negative > 0), numerator / (total_positive * total_negative), np.nan
        )


def half_tie_counts(sorted_values: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Per needle: #values below it + 0.5 #values equal to it (sorted_values ascending)."""
    below = np.searchsorted(sorted_values, needles, side="left")
    return below + 0.5 * (np.searchsorted(sorted_values, needles, side="right") - below)
