"""Family R battery (FRAMEWORK.md section 6): the shared reference labels and row builder, and the smaller
analyses A11 (direction-restricted sensitivity), A14 (top-k enrichment), A16 (attention vs co-expression
mapping) and the depth correlation of A12.

The heavier analyses live next to this module: `residualisation` (A09, A13), `reference_nulls_analysis`
(A10) and `per_tf` (A15 and the TF-block bootstrap that A09 reuses).

Conventions shared by every Family R analysis here:
- Pairs are the ordered off-diagonal pairs (source, target) of the score set's genes; rows = sources.
- Positives are the pairs of one reference resource (undirected resources list both orientations).
- NaN scores rank lowest in AUROCs (as `core.stats.auroc`); correlations use complete pairs only.
- Registry rows omit the shared fields (model, cell_type, ...); attention and correlation rows of A09 and
  A10 are confirmatory (FRAMEWORK section 8 uses them), every other row is descriptive.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.stats.contingency import odds_ratio

from scinterp_assets.core.analyses.perturbation_prediction import ATTENTION_METHODS
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning, auroc, auroc_mann_whitney_p
from scinterp_assets.core.stats.paired import one_sample_wilcoxon
from scinterp_assets.core.stats.permutation import (
    MAX_EXACT_PERMUTATION_N,
    PermutationTrend,
    spearman_permutation_test,
)

# Score methods whose A09/A10 rows enter the verdict (FRAMEWORK section 8, criterion 3).
VERDICT_METHODS: tuple[str, ...] = (*ATTENTION_METHODS, "correlation")
ALL_NEGATIVES = "all non-reference ordered pairs"


# ----------------------------------------------------------------------------------------------------------
# Shared inputs


@dataclass(frozen=True)
class ReferenceLabels:
    """One reference resource as labels over an ordered gene list.

    genes       (G,) gene order of the score matrices (rows = source, columns = target)
    membership  (G, G) bool: True for reference pairs; diagonal False
    sign        (G, G) int8: the reference sign (-1, 0, +1) of member pairs, 0 elsewhere
    directed    True for "regulates" resources; undirected ("interacts") ones hold both orientations
    """

    resource: str
    genes: tuple[str, ...]
    membership: np.ndarray
    sign: np.ndarray
    directed: bool

    def __post_init__(self) -> None:
        n = len(self.genes)
        if self.membership.shape != (n, n) or self.sign.shape != (n, n):
            raise ValueError(f"reference {self.resource!r}: membership and sign must be ({n}, {n})")
        if self.membership.diagonal().any():
            raise ValueError(f"reference {self.resource!r}: self pairs in membership")
        n_positives = int(self.membership.sum())
        if n_positives == 0:
            raise ValueError(
                f"reference {self.resource!r}: none of its pairs lies inside the {n} genes, so every label is "
                "negative and nothing can be scored; check the gene identifiers and the restriction")
        if n_positives == n * (n - 1):
            raise ValueError(f"reference {self.resource!r}: every pair is a positive; no negatives to rank against")

    @property
    def off_diagonal(self) -> np.ndarray:
        return ~np.eye(len(self.genes), dtype=bool)

    @property
    def tf_rows(self) -> np.ndarray:
        """Row index of every source with at least one positive (the TFs of a regulatory resource)."""
        return np.flatnonzero(self.membership.any(axis=1))

    @property
    def n_positives(self) -> int:
        return int(self.membership.sum())


def reference_labels(reference: pd.DataFrame, genes: Sequence[str], resource: str | None = None) -> ReferenceLabels:
    """Labels of one resource of a restricted reference table (REFERENCE_COLUMNS) over `genes`.

    `resource` selects rows when the table has a "resource" column; a table without "relation" or "sign"
    columns is taken as directed and unsigned. Pairs with a gene outside `genes` and self pairs are dropped.
    Raises ValueError when the table mixes relations or no pair lies inside `genes`.
    """
    table = reference
    name = resource if resource is not None else "reference"
    if resource is not None and "resource" in table.columns:
        table = table[table["resource"] == resource]
    relations = pd.unique(table["relation"]) if "relation" in table.columns else np.array(["regulates"])
    if len(relations) > 1:
        raise ValueError(f"reference {name!r} mixes relations {list(relations)}; pass one resource at a time")
    index = pd.Index(list(genes))
    if index.has_duplicates:
        raise ValueError("genes hold duplicates")
    rows = index.get_indexer(table["source"])
    columns = index.get_indexer(table["target"])
    inside = (rows >= 0) & (columns >= 0) & (rows != columns)
    n = len(index)
    membership = np.zeros((n, n), dtype=bool)
    membership[rows[inside], columns[inside]] = True
    sign = np.zeros((n, n), dtype=np.int8)
    if "sign" in table.columns:
        sign[rows[inside], columns[inside]] = table["sign"].to_numpy()[inside]
    directed = len(relations) == 0 or str(relations[0]) == "regulates"
    return ReferenceLabels(str(name), tuple(index), membership, sign, directed)


def check_score_set(score_set: ScoreSet, genes: Sequence[str]) -> np.ndarray:
    """The score matrix as float64, after checking that it is (G, G) over `genes`."""
    n = len(genes)
    if score_set.matrix.shape != (n, n):
        raise ValueError(
            f"score set {score_set.label!r} is {score_set.matrix.shape} but the gene list has {n} genes; "
            "build every score set over the same gene list as the reference labels")
    return np.asarray(score_set.matrix, dtype=np.float64)


def score_name(score_set: ScoreSet) -> str:
    return score_set.label.replace(" ", "_")


def is_verdict_score(score_set: ScoreSet) -> bool:
    """Attention and correlation scores (whose A09/A10 rows are confirmatory); baselines and random are not."""
    return score_set.method in VERDICT_METHODS


def registry_row(analysis_id: str, test_id: str, score_set: ScoreSet | None, **fields) -> dict:
    """A Family R registry row (without shared fields); layer and aggregation come from the score set."""
    row = {"analysis_id": analysis_id, "test_id": test_id, "family": "R", "confirmatory": False}
    if score_set is not None:
        row["layer"] = score_set.layer if score_set.layer != NO_LAYER else None
        row["aggregation"] = score_set.aggregation
    row.update(fields)
    return row


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite values (NaN, NaN when none)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def warn_if_constant(values: np.ndarray, what: str) -> bool:
    """True, with a DegenerateScoreWarning, when the finite values are all equal (correlations undefined:
    callers report 0 and p = 1, the correlation analogue of AUROC 0.5)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or np.all(finite == finite[0]):
        warnings.warn(f"{what}: constant over the compared pairs; its correlations are set to 0",
                      DegenerateScoreWarning, stacklevel=3)
        return True
    return False


# ----------------------------------------------------------------------------------------------------------
# A11: direction-restricted sensitivity


@dataclass(frozen=True)
class DirectionSensitivity:
    """A11 for one score set: known-mode pairs only (sign != 0), and whether the score knows direction.

    auroc, p_value     reference AUROC over pairs with known mode (unknown-mode reference pairs excluded from
                       the ranking) and its Mann-Whitney p (as A12)
    forward_auroc      the same AUROC; reverse_auroc scores each pair by score(target -> source) instead
    per_tf_difference  (T,) per-TF mean of percentile-rank(score(s -> t)) - percentile-rank(score(t -> s))
                       over the TF's known-mode, non-reciprocal pairs; wilcoxon_* test it against 0
    """

    score: str
    resource: str
    auroc: float
    p_value: float
    reverse_auroc: float
    per_tf_difference: np.ndarray
    wilcoxon_statistic: float
    wilcoxon_p: float
    n_pairs: int
    n_positives: int
    n_directed_pairs: int

    @property
    def forward_auroc(self) -> float:
        return self.auroc


def direction_sensitivity(score_set: ScoreSet, labels: ReferenceLabels) -> DirectionSensitivity:
    """A11 for one score set against one directed, signed reference (TRRUST-style)."""
    scores = check_score_set(score_set, labels.genes)
    if not labels.directed:
        raise ValueError(f"reference {labels.resource!r} is undirected; A11 needs a directed ('regulates') one")
    known = labels.membership & (labels.sign != 0)
    if not known.any():
        raise ValueError(f"reference {labels.resource!r} has no pair with a known mode (sign != 0) inside the genes")
    include = labels.off_diagonal & (known | ~labels.membership)  # unknown-mode pairs are neither class
    y = known[include]
    area, p_value = auroc_mann_whitney_p(y, scores[include])
    reverse = float(auroc(y, scores.T[include]))
    # percentile ranks over all off-diagonal pairs (NaN lowest), so differences are comparable across TFs
    ranked = np.zeros_like(scores)
    off = labels.off_diagonal
    ranked[off] = stats.rankdata(np.where(np.isnan(scores[off]), -np.inf, scores[off])) / off.sum()
    directed = known & ~labels.membership.T  # a reciprocal pair is positive both ways: no direction to know
    sources, targets = np.nonzero(directed)
    differences = ranked[sources, targets] - ranked[targets, sources]
    per_tf = pd.Series(differences).groupby(sources).mean().to_numpy()
    test = one_sample_wilcoxon(per_tf, 0.0)
    return DirectionSensitivity(
        score=score_set.label, resource=labels.resource, auroc=float(area), p_value=float(p_value),
        reverse_auroc=reverse, per_tf_difference=per_tf, wilcoxon_statistic=test.statistic,
        wilcoxon_p=test.p_value, n_pairs=int(include.sum()), n_positives=int(y.sum()),
        n_directed_pairs=int(sources.size))


def direction_testable(reference: pd.DataFrame) -> bool:
    """A11 applies to directed references that state a mode for some pairs (TRRUST, DoRothEA, CollecTRI,
    signed OmniPath); undirected ones (STRING, gene sets) and unsigned ones (ChIP) have nothing to test."""
    return bool((reference["relation"] == "regulates").all() and (reference["sign"] != 0).any())


def direction_sensitivity_tests(
    reference: pd.DataFrame, resource: str, genes: Sequence[str], score_sets: Sequence[ScoreSet]
) -> list[dict]:
    """A11 registry rows (descriptive), two per score set: the known-mode AUROC
    ("A11:<resource>:<score>:known_mode") and the direction test ("A11:<resource>:<score>:direction":
    Wilcoxon W over TFs, effect = forward minus reverse AUROC)."""
    labels = reference_labels(reference, genes, resource)
    rows = []
    for score_set in score_sets:
        result = direction_sensitivity(score_set, labels)
        name = score_name(score_set)
        negatives = f"{ALL_NEGATIVES}; unknown-mode reference pairs excluded"
        rows.append(registry_row(
            "A11", f"A11:{resource}:{name}:known_mode", score_set, statistic_name="auroc",
            statistic=result.auroc, effect_name="auroc_minus_0.5", effect=result.auroc - 0.5,
            p_value=result.p_value, n=result.n_pairs, n_positives=result.n_positives, negatives=negatives))
        rows.append(registry_row(
            "A11", f"A11:{resource}:{name}:direction", score_set, statistic_name="wilcoxon_W_per_tf_rank_difference",
            statistic=result.wilcoxon_statistic, effect_name="auroc_forward_minus_reverse",
            effect=result.auroc - result.reverse_auroc, p_value=result.wilcoxon_p,
            n=int(result.per_tf_difference.size), n_positives=result.n_directed_pairs, negatives=negatives))
    return rows


# ----------------------------------------------------------------------------------------------------------
# A14: top-k enrichment


@dataclass(frozen=True)
class TopKEnrichment:
    """A14 for one score set: the top k pairs against reference membership.

    table     2x2 [[top & positive, top & negative], [rest & positive, rest & negative]]
    odds_ratio the sample odds ratio (inf when a denominator cell is 0), ci_* its 95% Woolf interval
              (NaN when a cell is 0); p_value one-sided Fisher exact (enrichment)
    k         pairs in the top set (fewer than asked only when fewer scores are defined);
    tied_at_boundary  pairs outside the top set whose score equals the k-th score (broken by gene order)
    """

    score: str
    resource: str
    k: int
    table: np.ndarray
    odds_ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    tied_at_boundary: int

    @property
    def hits(self) -> int:
        return int(self.table[0, 0])


def top_k_pairs(scores: np.ndarray, k: int) -> np.ndarray:
    """(G, G) bool: the k highest-scoring off-diagonal pairs with a defined score.

    Ties are broken deterministically by pair order (source row, then target column, in gene order)."""
    n = scores.shape[0]
    off = ~np.eye(n, dtype=bool)
    flat = np.flatnonzero(off & np.isfinite(scores))
    order = np.lexsort((flat, -scores.ravel()[flat]))  # score descending, then pair order ascending
    chosen = np.zeros(n * n, dtype=bool)
    chosen[flat[order[:k]]] = True
    return chosen.reshape(n, n)


def top_k_enrichment(score_set: ScoreSet, labels: ReferenceLabels, *, k: int, confidence: float = 0.95) -> TopKEnrichment:
    """A14: Fisher exact test (alternative "greater") of the top `k` pairs against reference membership."""
    scores = check_score_set(score_set, labels.genes)
    off = labels.off_diagonal
    if k < 1 or k >= off.sum():
        raise ValueError(f"k must lie in [1, {int(off.sum()) - 1}] (off-diagonal pairs), got {k}")
    n_defined = int(np.isfinite(scores[off]).sum())
    if n_defined < k:
        warnings.warn(f"{score_set.label}: only {n_defined} pairs have a score; the top set holds {n_defined} < k = {k}",
                      stacklevel=2)
    if n_defined and np.all(scores[off & np.isfinite(scores)] == scores[off & np.isfinite(scores)][0]):
        warnings.warn(f"{score_set.label}: constant score; the top set is chosen by gene order alone",
                      DegenerateScoreWarning, stacklevel=2)
    top = top_k_pairs(scores, k)
    positive = labels.membership
    table = np.array([[(top & positive).sum(), (top & ~positive & off).sum()],
                      [(~top & positive).sum(), (~top & ~positive & off).sum()]], dtype=np.int64)
    _, p_value = stats.fisher_exact(table, alternative="greater")
    with np.errstate(divide="ignore", invalid="ignore"):
        result = odds_ratio(table, kind="sample")
        interval = result.confidence_interval(confidence) if (table > 0).all() else (np.nan, np.nan)
    used = int(top.sum())
    boundary = scores[top].min() if used else np.nan
    tied = int((~top & off & (scores == boundary)).sum())
    return TopKEnrichment(score_set.label, labels.resource, used, table, float(result.statistic),
                          float(interval[0]), float(interval[1]), float(p_value), tied)


def top_k_enrichment_tests(
    reference: pd.DataFrame, resource: str, genes: Sequence[str], score_sets: Sequence[ScoreSet], *, k: int
) -> list[dict]:
    """A14 registry rows (descriptive), "A14:<resource>:<score>:top<k>": statistic = hits in the top k,
    effect = sample odds ratio with its Woolf CI, p = one-sided Fisher exact (BH happens in the registry)."""
    labels = reference_labels(reference, genes, resource)
    rows = []
    for score_set in score_sets:
        result = top_k_enrichment(score_set, labels, k=k)
        rows.append(registry_row(
            "A14", f"A14:{resource}:{score_name(score_set)}:top{k}", score_set, statistic_name="top_k_hits",
            statistic=float(result.hits), effect_name="odds_ratio", effect=result.odds_ratio,
            ci_low=result.ci_low, ci_high=result.ci_high, p_value=result.p_value, n=int(result.table.sum()),
            n_positives=labels.n_positives, negatives=ALL_NEGATIVES))
    return rows


# ----------------------------------------------------------------------------------------------------------
# A16: attention vs co-expression mapping


@dataclass(frozen=True)
class CoexpressionFit:
    """A16, first half: the score against co-expression over the off-diagonal pairs where both are defined.

    rho, p_value  Spearman correlation and its p; r2: R^2 of the least-squares line score ~ co-expression
    """

    score: str
    rho: float
    p_value: float
    r2: float
    n_pairs: int


@dataclass(frozen=True)
class MembershipAssociation:
    """A16, second half: the score against reference membership over the pairs with a defined score.

    point_biserial_r, p_value  Pearson of score vs membership (0/1); auroc over the same pairs
    """

    score: str
    resource: str
    point_biserial_r: float
    p_value: float
    auroc: float
    n_pairs: int
    n_positives: int


def coexpression_fit(score_set: ScoreSet, coexpression: ScoreSet, genes: Sequence[str]) -> CoexpressionFit:
    """Spearman and linear R^2 of a score against co-expression (a constant side gives 0 with a warning)."""
    scores = check_score_set(score_set, genes)
    coexpr = check_score_set(coexpression, genes)
    both = ~np.eye(len(genes), dtype=bool) & np.isfinite(scores) & np.isfinite(coexpr)
    x, z = scores[both], coexpr[both]
    if warn_if_constant(x, score_set.label) or warn_if_constant(z, coexpression.label):
        return CoexpressionFit(score_set.label, 0.0, 1.0, 0.0, int(both.sum()))
    rho, p_value = stats.spearmanr(x, z)
    r2 = float(np.corrcoef(x, z)[0, 1] ** 2)  # the R^2 of a one-predictor least-squares line
    return CoexpressionFit(score_set.label, float(rho), float(p_value), r2, int(both.sum()))


def membership_association(score_set: ScoreSet, labels: ReferenceLabels) -> MembershipAssociation:
    """Point-biserial r and AUROC of a score against membership (a constant score gives r = 0, AUROC 0.5,
    with DegenerateScoreWarning)."""
    scores = check_score_set(score_set, labels.genes)
    defined = labels.off_diagonal & np.isfinite(scores)
    s, y = scores[defined], labels.membership[defined]
    if y.all() or not y.any():
        raise ValueError(f"{score_set.label}: the pairs with a defined score hold only one class of "
                         f"reference {labels.resource!r}")
    if warn_if_constant(s, score_set.label):
        r, p_value = 0.0, 1.0
    else:
        r, p_value = stats.pointbiserialr(y, s)
    area = float(auroc(y, s))
    return MembershipAssociation(score_set.label, labels.resource, float(r), float(p_value), area,
                                 int(defined.sum()), int(y.sum()))


def coexpression_mapping_tests(
    reference: pd.DataFrame, resources: Sequence[str], genes: Sequence[str], score_sets: Sequence[ScoreSet],
    coexpression: ScoreSet,
) -> list[dict]:
    """A16 registry rows (descriptive). Per score set: "A16:<score>:coexpression" (Spearman rho vs
    co-expression, effect = linear R^2; skipped for the co-expression score set itself) and, per resource,
    "A16:<resource>:<score>:membership" (point-biserial r, effect = AUROC over the same pairs)."""
    all_labels = [reference_labels(reference, genes, resource) for resource in resources]
    rows = []
    for score_set in score_sets:
        name = score_name(score_set)
        if not np.array_equal(score_set.matrix, coexpression.matrix, equal_nan=True):
            fit = coexpression_fit(score_set, coexpression, genes)
            rows.append(registry_row(
                "A16", f"A16:{name}:coexpression", score_set, statistic_name="spearman_rho_vs_coexpression",
                statistic=fit.rho, effect_name="r2_linear_fit_on_coexpression", effect=fit.r2,
                p_value=fit.p_value, n=fit.n_pairs))
        for labels in all_labels:
            result = membership_association(score_set, labels)
            rows.append(registry_row(
                "A16", f"A16:{labels.resource}:{name}:membership", score_set, statistic_name="point_biserial_r",
                statistic=result.point_biserial_r, effect_name="auroc", effect=result.auroc,
                p_value=result.p_value, n=result.n_pairs, n_positives=result.n_positives, negatives=ALL_NEGATIVES))
    return rows


# ----------------------------------------------------------------------------------------------------------
# A12: depth correlation of per-layer reference AUROC

PER_LAYER_AUROC_COLUMNS = ("resource", "method", "aggregation", "layer", "auroc")


def depth_correlation(layers: np.ndarray, aurocs: np.ndarray, *, n_permutations: int,
                      seed: int) -> PermutationTrend:
    """Spearman rho of reference AUROC with layer depth (layer index) and its two-sided permutation p.

    layers, aurocs: (L,) one AUROC per distinct layer; needs L >= 3 (two points always give rho = +-1).
    The p-value is exact over all L! orderings of the layers for shallow models
    (L <= MAX_EXACT_PERMUTATION_N), else from `n_permutations` seeded orderings; a t approximation gives
    p = 0 for a perfect trend over 3 layers, whose exact p is 2/6. The same AUROC in every layer gives
    rho 0 and p 1 (every ordering ties).
    """
    layers = np.asarray(layers, dtype=np.float64)
    aurocs = np.asarray(aurocs, dtype=np.float64)
    if layers.shape != aurocs.shape or layers.ndim != 1:
        raise ValueError(f"layers and aurocs must be equal-length 1-D arrays, got {layers.shape} and {aurocs.shape}")
    if np.unique(layers).size != layers.size:
        raise ValueError("one AUROC per layer: layers hold duplicates")
    if layers.size < 3 or not np.isfinite(aurocs).all():
        raise ValueError(f"depth correlation needs >= 3 layers with a finite AUROC, got {aurocs.tolist()}")
    if np.all(aurocs == aurocs[0]):
        warnings.warn("AUROC is the same in every layer; depth rho set to 0", DegenerateScoreWarning, stacklevel=2)
        exact = layers.size <= MAX_EXACT_PERMUTATION_N
        return PermutationTrend(0.0, 1.0, int(layers.size),
                                math.factorial(layers.size) if exact else n_permutations, exact)
    return spearman_permutation_test(layers, aurocs, n_resamples=n_permutations, seed=seed)


def depth_correlation_tests(per_layer: pd.DataFrame, *, n_permutations: int, seed: int) -> list[dict]:
    """A12 depth rows (descriptive), one per (resource, method, aggregation) with >= 3 layers:
    "A12:<resource>:<method>_<aggregation>:depth_rho", n = number of layers, statistic_name naming the
    permutation test (exact or Monte Carlo, see `depth_correlation`; it avoids the word "auroc" because the
    statistic is a rank correlation, which A24's metric map must not list as an AUROC). per_layer: PER_LAYER_AUROC_COLUMNS,
    one row per layer. Groups with fewer layers are skipped with a UserWarning (a two-layer model has no
    depth trend to test)."""
    missing = [column for column in PER_LAYER_AUROC_COLUMNS if column not in per_layer.columns]
    if missing:
        raise ValueError(f"per-layer AUROC table lacks columns {missing}; expected {list(PER_LAYER_AUROC_COLUMNS)}")
    rows = []
    for (resource, method, aggregation), group in per_layer.groupby(["resource", "method", "aggregation"], sort=True):
        group = group[group["layer"] != NO_LAYER]
        if group["layer"].nunique() < 3:
            warnings.warn(f"A12 depth rho skipped for {resource}/{method}/{aggregation}: "
                          f"{group['layer'].nunique()} layer(s), need >= 3", stacklevel=2)
            continue
        result = depth_correlation(group["layer"].to_numpy(), group["auroc"].to_numpy(),
                                   n_permutations=n_permutations, seed=seed)
        test = (f"two-sided exact permutation p over all {result.n}! = {result.n_permutations} orderings"
                if result.exact else
                f"two-sided Monte Carlo permutation p over {result.n_permutations} seeded orderings")
        rows.append({
            "analysis_id": "A12", "test_id": f"A12:{resource}:{method}_{aggregation}:depth_rho", "family": "R",
            "layer": None, "aggregation": aggregation, "statistic_name": f"spearman_rho_with_layer_depth, {test}",
            "statistic": result.rho, "effect_name": "spearman_rho", "effect": result.rho,
            "p_value": result.p_value, "n": result.n, "confirmatory": False})
    return rows
