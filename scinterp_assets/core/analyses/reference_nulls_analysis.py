"""Family R, A10: reference AUROC against the verified degree-preserving null, with its decomposition

    observed AUROC = chance (0.5) + degree component (mean null AUROC - 0.5) + residual (observed - mean null)

The degree component is what a score earns from who has many targets (hub TFs, popular targets) alone: a
score that is a function of source or target degree gets the same AUROC on every null draw. The residual
is what the score earns from which pairs are linked, beyond the degrees; its z against the null draws
(the verdict's criterion 3 reads z > 3) and the permutation p (1 + #null >= observed) / (1 + N).

The rows are descriptive. "Beyond degrees" is not "beyond gene-level structure": when who is linked
depends on the genes' expression (better-studied targets, active TFs), a score that is a nonlinear function
of both genes' features ranks the observed network above degree-preserving rewirings more often than the
nominal rate (benchmarks/README.md, calibration). The confirmatory test of signal beyond gene-level
features is A09's (`residualisation.beyond_features_tests`).

Null draws (`ReferenceNulls`) are over the universe's genes; a score set may cover a subset (the evaluable
set). The statistic is then computed the same way on the observed network and on every draw: the AUROC of
the score over the evaluable pairs, positives = the network's pairs among them. Draws whose restriction
holds no pair are dropped (counted in `n_draws`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from scinterp_assets.core.analyses.reference_battery import (
    ALL_NEGATIVES,
    ReferenceLabels,
    check_score_set,
    reference_labels,
    registry_row,
    score_name,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.networks.null import null_z_score, permutation_p_value
from scinterp_assets.core.networks.reference_nulls import ReferenceNulls
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning

NULL_CANNOT_TEST = "cannot test anything"  # note of a reference whose null draws barely move
DECOMPOSITION_COLUMNS = ("score", "resource", "observed", "chance", "degree", "residual", "null_sd", "z", "p_value",
                         "n_draws")
_DRAWS_PER_CHUNK = 128  # bounds the (draws, edges) lookups held at once


@dataclass(frozen=True)
class NullDecomposition:
    """A10 for one score set and resource. null_auroc: (N,) AUROC on each usable null draw."""

    score: str
    resource: str
    observed: float
    null_auroc: np.ndarray
    z: float
    p_value: float
    n_pairs: int
    n_positives: int

    chance = 0.5

    @property
    def degree(self) -> float:
        return float(self.null_auroc.mean()) - self.chance

    @property
    def residual(self) -> float:
        return self.observed - float(self.null_auroc.mean())

    @property
    def n_draws(self) -> int:
        return int(self.null_auroc.size)


def null_aurocs(scores: np.ndarray, genes: Sequence[str], null_genes: Sequence[str], codes: np.ndarray) -> np.ndarray:
    """(n_draws,) AUROC of a (G, G) score matrix over `genes` against each null draw.

    codes: (n_draws, n_edges) edge codes source * len(null_genes) + target over `null_genes`, which must
    contain every gene of `genes`. Ranks of the off-diagonal pairs (NaN lowest) are computed once; a draw's
    positives are its edges with both genes in `genes`. NaN for a draw without such an edge.
    """
    null_index = pd.Index(list(null_genes))
    position = null_index.get_indexer(list(genes))
    if (position < 0).any():
        missing = [gene for gene, at in zip(genes, position) if at < 0][:5]
        raise ValueError(f"{int((position < 0).sum())} score genes are not in the null draws' universe, e.g. {missing}")
    n, universe = len(genes), len(null_index)
    off = ~np.eye(n, dtype=bool)
    values = np.where(np.isnan(scores), -np.inf, scores)[off]
    pair_codes = (position[:, None].astype(np.int64) * universe + position[None, :])[off]
    order = np.argsort(pair_codes)
    pair_codes = pair_codes[order]
    pair_ranks = stats.rankdata(values, method="average")[order]
    n_pairs = n * (n - 1)
    result = np.empty(codes.shape[0])
    for start in range(0, codes.shape[0], _DRAWS_PER_CHUNK):
        chunk = codes[start:start + _DRAWS_PER_CHUNK].astype(np.int64)
        at = np.minimum(np.searchsorted(pair_codes, chunk), pair_codes.size - 1)
        inside = pair_codes[at] == chunk
        n_pos = inside.sum(axis=1).astype(np.float64)
        rank_sum = np.where(inside, pair_ranks[at], 0.0).sum(axis=1)
        n_neg = n_pairs - n_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            area = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
        result[start:start + _DRAWS_PER_CHUNK] = np.where((n_pos > 0) & (n_neg > 0), area, np.nan)
    return result


def degree_null_decomposition(score_set: ScoreSet, labels: ReferenceLabels, null_genes: Sequence[str],
                              codes: np.ndarray) -> NullDecomposition:
    """A10 for one score set: observed AUROC (as A12), null AUROCs, decomposition, z and permutation p.

    When the score genes are the null's whole universe, the draws must have the observed network's size and
    out-degrees (a check that the draws belong to this reference)."""
    scores = check_score_set(score_set, labels.genes)
    if set(null_genes) == set(labels.genes):
        order = pd.Index(list(labels.genes)).get_indexer(list(null_genes))
        out_degree = np.bincount(order[codes[0] // len(null_genes)], minlength=len(labels.genes))
        if codes.shape[1] != labels.n_positives or not np.array_equal(out_degree, labels.membership.sum(axis=1)):
            raise ValueError(f"the null draws of {labels.resource!r} do not preserve the reference's degrees over "
                             "these genes: they were drawn from another network")
    off = labels.off_diagonal
    finite = scores[off][np.isfinite(scores[off])]
    if finite.size == 0 or np.all(finite == finite[0]):
        warnings.warn(f"{score_set.label}: constant score; AUROC 0.5 on the observed network and every null draw",
                      DegenerateScoreWarning, stacklevel=2)
    # the observed network goes through the same arithmetic as the draws, so a score that only sees degrees
    # gets bit-identical AUROCs on both
    sources, targets = np.nonzero(labels.membership)
    observed_codes = np.sort(sources * len(labels.genes) + targets)[None, :]
    observed = float(null_aurocs(scores, labels.genes, labels.genes, observed_codes)[0])
    null = null_aurocs(scores, labels.genes, null_genes, codes)
    null = null[np.isfinite(null)]
    if null.size == 0:
        raise ValueError(f"no null draw of {labels.resource!r} keeps a pair inside the score genes")
    return NullDecomposition(score_set.label, labels.resource, observed, null, _z_score(observed, null),
                             permutation_p_value(observed, null), int(off.sum()), labels.n_positives)


def _z_score(observed: float, null: np.ndarray) -> float:
    """`null_z_score`, except that a null without spread (every draw bit-identical, e.g. a degree-only score)
    gives 0 for an equal observed value instead of dividing rounding noise of the mean by rounding noise."""
    if np.all(null == null[0]):
        return 0.0 if observed == null[0] else math.copysign(math.inf, observed - null[0])
    return null_z_score(observed, null)


def degree_null_tests(reference: pd.DataFrame, genes: Sequence[str], score_sets: Sequence[ScoreSet],
                      nulls: ReferenceNulls, resources: Sequence[str] | None = None) -> list[dict]:
    """A10 registry rows, one per score set and resource with null draws ("A10:<resource>:<score>"):
    statistic = z against the null, effect = residual component (observed - mean null AUROC), p = permutation
    p (>= observed). Descriptive (module docstring); FRAMEWORK section 8, criterion 3 reads the z. The rows
    of a resource whose draws barely move (`ReferenceNulls.uninformative`) say so in their note: their z and
    p cannot show anything."""
    barely_moving = nulls.uninformative()
    return [_row(result, score_set, barely_moving.get(result.resource, ""))
            for result, score_set in _decompositions(reference, genes, score_sets, nulls, resources)]


def degree_null_table(reference: pd.DataFrame, genes: Sequence[str], score_sets: Sequence[ScoreSet],
                      nulls: ReferenceNulls, resources: Sequence[str] | None = None) -> pd.DataFrame:
    """The decomposition of every (score set, resource), DECOMPOSITION_COLUMNS (for the report)."""
    records = [(r.score, r.resource, r.observed, r.chance, r.degree, r.residual, float(r.null_auroc.std(ddof=1)),
                r.z, r.p_value, r.n_draws)
               for r, _ in _decompositions(reference, genes, score_sets, nulls, resources)]
    return pd.DataFrame(records, columns=list(DECOMPOSITION_COLUMNS))


def _decompositions(reference, genes, score_sets, nulls, resources):
    chosen = sorted(nulls.codes) if resources is None else list(resources)
    unknown = sorted(set(chosen) - set(nulls.codes))
    if unknown:
        raise ValueError(f"no null draws for resource(s) {unknown}; drawn: {sorted(nulls.codes)}")
    for resource in chosen:
        labels = reference_labels(reference, genes, resource)
        for score_set in score_sets:
            yield degree_null_decomposition(score_set, labels, nulls.genes, nulls.codes[resource]), score_set


def _row(result: NullDecomposition, score_set: ScoreSet, mixing_problem: str) -> dict:
    note = (f"the null of {result.resource!r} {NULL_CANNOT_TEST}: its draws barely move ({mixing_problem})"
            if mixing_problem else "")
    return registry_row(
        "A10", f"A10:{result.resource}:{score_name(score_set)}", score_set, statistic_name="null_z",
        statistic=result.z, effect_name="residual_component(observed - mean null auroc)", effect=result.residual,
        p_value=result.p_value, n=result.n_pairs, n_positives=result.n_positives,
        confirmatory=False, negatives=f"{ALL_NEGATIVES}; null: {result.n_draws} degree-preserving draws", note=note)
