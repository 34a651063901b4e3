"""Family P, A08: propensity-matched incremental value.

Gene-level features predict DE well (A04), so an edge score that merely tracks them looks useful. A08 takes
the gene-level features out of the comparison by design: the propensity of being DE given the target's
gene-level features (logistic regression on standardised features, fit on every design pair, logit scale),
then within each perturbation each DE-positive target is matched to its k nearest DE-negative targets on
that propensity. Balance is reported as standardised mean differences (SMD) of every feature and of the
propensity before and after matching, and A05 (perturbation split, both models, same folds and resamples
as A05 for the seed) is re-run on the matched set.

Matching choices: within perturbation, nearest neighbour on |difference of logit propensity|, WITH
replacement by default: each positive takes its own k nearest negatives, and a negative that serves
several positives enters the matched set once per use (frequency weights: the models see it that many
times and every metric counts each copy; copies share a perturbation, so they never straddle a fold).
Greedy matching without replacement, which was tried first, could not balance the features: DE positives
crowd the high-variance tail of the targets, where a perturbation holds too few negatives to give each
positive k of its own (SMD of the propensity ~0.5 after matching in a seeded toy screen, ~0.05 with
replacement); it remains available as replace=False (hardest positive first). Ties go to the lower row;
a positive gets fewer than k negatives only when its perturbation has fewer than k (or, without
replacement, none left), counted in `Matching.n_short`. No caliper: the SMD after matching shows what was
achieved.

SMD = (mean of positives - mean of negatives) / sqrt((var_pos + var_neg) / 2) with the variances (ddof 1)
of the unmatched design in both the before and the after column, so a change reflects the means only; the
after means count each matched copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scinterp_assets.core.analyses.incremental_value import (
    DEFAULT_MODEL_SETTINGS,
    GENE_LEVEL_FEATURES,
    MODELS,
    RECALL_AT,
    DesignTable,
    IncrementalValueResult,
    ModelSettings,
    build_design,
    check_score_sets,
    incremental_value,
    incremental_value_rows,
)
from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter
from scinterp_assets.core.analyses.score_sets import ScoreSet

DEFAULT_MATCHES = 5


def propensity_logit(design: DesignTable, settings: ModelSettings = DEFAULT_MODEL_SETTINGS) -> np.ndarray:
    """(n,) logit of P(DE | target's gene-level features), logistic on standardised features, in sample."""
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=settings.logistic_c, max_iter=settings.logistic_max_iter)
    )
    return model.fit(design.features, design.is_de).decision_function(design.features)


@dataclass(frozen=True)
class Matching:
    """rows: (m,) sorted design rows of the matched set (every positive once, each matched negative once
    per positive it serves when matching with replacement); matched_to: (m,) the positive row each entry
    serves (a positive serves itself); n_short: positives that received fewer than k negatives."""

    rows: np.ndarray
    matched_to: np.ndarray
    k: int
    n_short: int
    replace: bool

    def __post_init__(self) -> None:
        if self.rows.shape != self.matched_to.shape:
            raise ValueError("rows and matched_to must have one entry per matched row")


def match_within_perturbation(
    design: DesignTable, logit: np.ndarray, k: int = DEFAULT_MATCHES, *, replace: bool = True
) -> Matching:
    """k:1 nearest-neighbour matching of negatives to positives on |difference of logit| inside each
    perturbation; ties go to the lower row.

    replace=True (default): each positive takes its own k nearest negatives; a negative serving several
    positives enters `rows` once per use (frequency weights). replace=False: greedy, hardest positive
    (highest propensity) first, each negative used at most once.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if logit.shape != (design.n_rows,):
        raise ValueError(f"logit must be ({design.n_rows},), got {logit.shape}")
    offsets = design.offsets
    chosen, serves, n_short = [], [], 0
    for p in range(design.n_perturbations):
        rows = np.arange(offsets[p], offsets[p + 1])
        positives, negatives = rows[design.is_de[rows]], rows[~design.is_de[rows]]
        take = min(k, len(negatives))
        if replace:
            distance = np.abs(logit[positives][:, None] - logit[negatives][None, :])
            nearest = np.argsort(distance, axis=1, kind="stable")[:, :take]  # stable: lower row on ties
            n_short += len(positives) * (take < k)
            for positive, picked in zip(positives, nearest):
                chosen += [positive, *negatives[picked]]
                serves += [positive] * (take + 1)
            continue
        available = np.ones(len(negatives), dtype=bool)
        for positive in positives[np.lexsort((positives, -logit[positives]))]:
            distance = np.where(available, np.abs(logit[negatives] - logit[positive]), np.inf)
            take = min(k, int(available.sum()))
            n_short += take < k
            picked = np.lexsort((negatives, distance))[:take]
            available[picked] = False
            chosen += [positive, *negatives[picked]]
            serves += [positive] * (take + 1)
    rows, serves = np.asarray(chosen, dtype=np.int64), np.asarray(serves, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    return Matching(rows[order], serves[order], k, n_short, replace)


def standardized_mean_difference(
    values: np.ndarray, positive: np.ndarray, reference: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """(F,) SMD of each column of values (n, F) between positive and negative rows.

    The denominator is sqrt((var_pos + var_neg) / 2) (ddof 1) of `reference` = (values, positive) when
    given (the unmatched sample), else of the same rows. 0 where the denominator is 0.
    """
    values = np.asarray(values, dtype=np.float64).reshape(len(positive), -1)
    base_values, base_positive = reference if reference is not None else (values, positive)
    base_values = np.asarray(base_values, dtype=np.float64).reshape(len(base_positive), -1)
    spread = np.sqrt(
        (base_values[base_positive].var(axis=0, ddof=1) + base_values[~base_positive].var(axis=0, ddof=1)) / 2
    )
    difference = values[positive].mean(axis=0) - values[~positive].mean(axis=0)
    return np.divide(difference, spread, out=np.zeros_like(difference), where=spread > 0)


@dataclass(frozen=True)
class Balance:
    """SMD of each feature (and the propensity logit) before and after matching: (F,) each."""

    names: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray

    def __post_init__(self) -> None:
        if self.before.shape != (len(self.names),) or self.after.shape != (len(self.names),):
            raise ValueError("before and after must have one SMD per name")


def balance(design: DesignTable, logit: np.ndarray, matching: Matching) -> Balance:
    values = np.column_stack([design.features, logit])
    before = standardized_mean_difference(values, design.is_de)
    after = standardized_mean_difference(
        values[matching.rows], design.is_de[matching.rows], reference=(values, design.is_de)
    )
    return Balance((*design.feature_names, "propensity_logit"), before, after)


@dataclass(frozen=True)
class PropensityMatched:
    """A08 for one design: the matched design, its matching and balance, and the re-run of A05 on it."""

    matched: DesignTable
    matching: Matching
    balance: Balance
    results: tuple[IncrementalValueResult, ...]


def propensity_matched(
    design: DesignTable,
    score_sets: Sequence[ScoreSet],
    *,
    rule: PerturbationFilter,
    k: int = DEFAULT_MATCHES,
    replace: bool = True,
    models: Sequence[str] = MODELS,
    n_folds: int = 5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    recall_at: Sequence[int] = RECALL_AT,
    settings: ModelSettings = DEFAULT_MODEL_SETTINGS,
    confidence: float = 0.95,
) -> PropensityMatched:
    """Match, measure balance and re-run A05 (perturbation split) on the matched design; perturbations
    left with fewer than rule.min_negatives matched negatives are dropped."""
    logit = propensity_logit(design, settings)
    matching = match_within_perturbation(design, logit, k, replace=replace)
    matched = design.subset(matching.rows)
    offsets = matched.offsets
    n_pos = np.add.reduceat(matched.is_de.astype(np.int64), offsets[:-1])
    n_neg = np.diff(offsets) - n_pos
    enough = (n_pos >= rule.min_positives) & (n_neg >= rule.min_negatives)
    if not enough.all():
        matched = matched.subset(enough[matched.perturbation])
    results = incremental_value(
        matched,
        score_sets,
        splits=("perturbation_split",),
        models=models,
        n_folds=n_folds,
        n_bootstrap=n_bootstrap,
        seed=seed,
        recall_at=recall_at,
        settings=settings,
        confidence=confidence,
    )
    return PropensityMatched(matched, matching, balance(design, logit, matching), results)


def propensity_matched_rows(
    outcome: PropensityMatched, *, label_rule: str | None = None, seed: int | None = None
) -> list[dict]:
    """Descriptive A08 rows: one balance row per feature ("A08:balance:<feature>", statistic = SMD before,
    effect = SMD after) and the A05 rows on the matched set under analysis id A08 (none confirmatory)."""
    replacement = "with" if outcome.matching.replace else "without"
    negatives = (
        f"propensity-matched non-DE targets (k={outcome.matching.k} per positive, within "
        f"perturbation, nearest logit propensity, {replacement} replacement)"
    )
    extra = ({} if label_rule is None else {"label_rule": label_rule}) | (
        {} if seed is None else {"seed": seed}
    )
    matched = outcome.matched
    rows = [
        {
            "analysis_id": "A08",
            "test_id": f"A08:balance:{name}",
            "family": "P",
            "layer": None,
            "aggregation": "none",
            "statistic_name": "smd_before_matching",
            "statistic": float(before),
            "effect_name": "smd_after_matching",
            "effect": float(after),
            "p_value": None,
            "n": matched.n_perturbations,
            "n_positives": int(matched.is_de.sum()),
            "confirmatory": False,
            "negatives": negatives,
            **extra,
        }
        for name, before, after in zip(outcome.balance.names, outcome.balance.before, outcome.balance.after)
    ]
    rows += incremental_value_rows(outcome.results, variant="study", analysis_id="A08", negatives=negatives, **extra)
    return rows


def propensity_matched_tests(
    labels: pd.DataFrame,
    features: pd.DataFrame,
    genes: Sequence[str],
    score_sets: Sequence[ScoreSet],
    *,
    rule: PerturbationFilter,
    k: int = DEFAULT_MATCHES,
    replace: bool = True,
    models: Sequence[str] = MODELS,
    n_folds: int = 5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    recall_at: Sequence[int] = RECALL_AT,
    feature_names: Sequence[str] = GENE_LEVEL_FEATURES,
    settings: ModelSettings = DEFAULT_MODEL_SETTINGS,
    confidence: float = 0.95,
    label_rule: str | None = None,
) -> list[dict]:
    """A08 registry rows from the DE label table, gene-level features and score sets over `genes`."""
    check_score_sets(score_sets, len(genes))
    design = build_design(labels, features, genes, rule, feature_names)
    outcome = propensity_matched(
        design,
        score_sets,
        rule=rule,
        k=k,
        replace=replace,
        models=models,
        n_folds=n_folds,
        n_bootstrap=n_bootstrap,
        seed=seed,
        recall_at=recall_at,
        settings=settings,
        confidence=confidence,
    )
    return propensity_matched_rows(outcome, label_rule=label_rule, seed=seed)
