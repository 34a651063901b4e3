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
