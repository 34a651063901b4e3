"""Family P: perturbation-first (PF) AUROC (A01 attention vs correlation, A04 gene-level baselines).

For each perturbation of gene g in the evaluable set, candidate targets are the other evaluable genes;
each method ranks them by score(g -> t); labels are the DE calls. A perturbation is evaluated only with
enough positives and negatives among those targets.

Two methods are compared by their mean PF AUROC difference over perturbations. Perturbations and target
genes are both sampled units: every perturbation ranks the same targets, so a score with a target-level
component (a gene-level baseline, attention that prefers some genes) wins or loses on the same targets in
every perturbation, and the perturbations are not independent replicates. The confirmatory test is a
two-way bootstrap (`resampled_pf_auroc`: perturbations and target genes resampled independently; each
perturbation's AUROC is recomputed with its targets weighted by their multiplicities), with a normal
interval and p-value from the bootstrap SE (`core.stats.bootstrap.wald_test`, agreeing by construction).
A paired Wilcoxon over perturbations, the study's test, treats the targets as fixed and rejects far above
its level when two equally good scores share target-level structure (benchmarks/README.md, calibration);
it is kept as a descriptive row ("...:study_wilcoxon").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from scinterp_assets.core.analyses.score_sets import BASELINE_PREFIX, TF_OUT_DEGREE_PREFIX, ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import auroc, resampled_auroc
from scinterp_assets.core.stats.bootstrap import BootstrapTest, resample_counts, wald_test
from scinterp_assets.core.stats.paired import paired_wilcoxon

ATTENTION_METHODS = ("attention", "value_weighted")  # edge scores read from a model's attention
PF_AUROC_COLUMNS = ("perturbation", "method", "layer", "aggregation", "auroc", "n_targets", "n_positives")


@dataclass(frozen=True)
class PerturbationFilter:
    min_positives: int
    min_negatives: int


def evaluable_perturbations(labels: pd.DataFrame, index: pd.Index, rule: PerturbationFilter):
    """(perturbation, source row, target rows, is_de) of every perturbation that passes `rule`, sorted."""
    evaluable = labels[labels["perturbation"].isin(index) & labels["target"].isin(index)]
    for perturbation, group in evaluable.groupby("perturbation", sort=True):
        is_de = group["is_de"].to_numpy(dtype=bool)
        n_positives = int(is_de.sum())
        if n_positives < rule.min_positives or len(is_de) - n_positives < rule.min_negatives:
            continue
        yield perturbation, index.get_loc(perturbation), index.get_indexer(group["target"]), is_de


def per_perturbation_auroc(
    labels: pd.DataFrame, genes: list[str], score_sets: list[ScoreSet], rule: PerturbationFilter
) -> pd.DataFrame:
    """PF AUROC of every score set for every evaluable perturbation; one row per (perturbation, score set)."""
    rows = []
    for perturbation, source, targets, is_de in evaluable_perturbations(labels, pd.Index(genes), rule):
        scores = np.column_stack([score_set.matrix[source, targets] for score_set in score_sets])
        areas = auroc(is_de, scores)
        for score_set, area in zip(score_sets, areas):
            rows.append((perturbation, score_set.method, score_set.layer, score_set.aggregation, float(area),
                         len(is_de), int(is_de.sum())))
    return pd.DataFrame(rows, columns=list(PF_AUROC_COLUMNS)).astype(
        {"layer": "int64", "n_targets": "int64", "n_positives": "int64"}
    )


def pf_auroc_wide(pf_auroc: pd.DataFrame) -> pd.DataFrame:
    keyed = pf_auroc.assign(key=list(zip(pf_auroc["method"], pf_auroc["layer"], pf_auroc["aggregation"])))
    return keyed.pivot(index="perturbation", columns="key", values="auroc")


@dataclass(frozen=True)
class PFResamples:
    """PF AUROC of every score set on the observed data and under a two-way bootstrap.

    keys: (method, layer, aggregation) of each score set (S columns); perturbations: the evaluable ones
    (P, sorted, as `per_perturbation_auroc`); n_positives: (P,) DE targets of each.
    target_fold: (G,) the fold of each gene as a target; F folds (F = 1: one cell holding every target).
    point: (P, F, S) AUROC of perturbation p over its targets in fold f; NaN where the cell lacks a class.
    replicates: (B, P, F, S) the same with each target weighted by its bootstrap multiplicity.
    perturbation_counts: (B, P) and target_counts: (B, G) bootstrap multiplicities of the perturbations and
    of the genes as targets.
    """

    keys: tuple[tuple[str, int, str], ...]
    perturbations: tuple[str, ...]
    n_positives: np.ndarray
    target_fold: np.ndarray
    point: np.ndarray
    replicates: np.ndarray
    perturbation_counts: np.ndarray
    target_counts: np.ndarray

    @property
    def n_folds(self) -> int:
        return self.point.shape[1]

    def column(self, key: tuple) -> int:
        return self.keys.index(key)

    def mean_difference(self, a: tuple, b: tuple) -> tuple[float, np.ndarray]:
        """Mean over perturbations of (a - b), each perturbation's difference averaged over its target-fold
        cells: (observed, (B,) resampled)."""
        ia, ib = self.column(a), self.column(b)
        return perturbation_mean(self, self.point[..., ia] - self.point[..., ib],
                                 self.replicates[..., ia] - self.replicates[..., ib])

    def mean(self, key: tuple) -> tuple[float, np.ndarray]:
        """Mean PF AUROC of one score set: (observed, (B,) resampled)."""
        column = self.column(key)
        return perturbation_mean(self, self.point[..., column], self.replicates[..., column])


def perturbation_mean(resamples: PFResamples, point: np.ndarray, replicates: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over perturbations of per-cell values point (P, F) and replicates (B, P, F): (observed, (B,))."""
    return observed_perturbation_mean(point), resampled_perturbation_mean(replicates, resamples.perturbation_counts)


def observed_perturbation_mean(cells: np.ndarray) -> float:
    """Cells (P, F) averaged within each perturbation (undefined cells left out), then over perturbations."""
    per_perturbation = _cell_mean(cells)
    defined = np.isfinite(per_perturbation)
    return float(per_perturbation[defined].mean()) if defined.any() else float("nan")


def resampled_perturbation_mean(cells: np.ndarray, perturbation_counts: np.ndarray) -> np.ndarray:
    """Cells (B, P, F) averaged within each perturbation, then over perturbations weighted by their
    multiplicities (B, P); NaN where a resample keeps no defined perturbation."""
    per_resample = _cell_mean(cells)
    weights = perturbation_counts * np.isfinite(per_resample)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights * np.nan_to_num(per_resample)).sum(axis=1) / total, np.nan)


def _cell_mean(values: np.ndarray) -> np.ndarray:
    defined = np.isfinite(values)
    count = defined.sum(axis=-1)
    return np.where(count > 0, np.where(defined, values, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan)


def resampled_pf_auroc(
    labels: pd.DataFrame, genes: list[str], score_sets: list[ScoreSet], rule: PerturbationFilter, *,
    n_bootstrap: int, seed: int, n_target_folds: int = 1,
) -> PFResamples:
    """PFResamples of `score_sets` (module docstring). Target genes are resampled over `genes` (one
    multiplicity per gene, shared by every perturbation); n_target_folds > 1 also splits the genes into
    seeded target folds (A02's joint selection). A NaN score ranks lowest, as in `per_perturbation_auroc`."""
    if n_target_folds < 1:
        raise ValueError(f"n_target_folds must be >= 1, got {n_target_folds}")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2 for a bootstrap standard error, got {n_bootstrap}")
    index = pd.Index(genes)
    streams = np.random.SeedSequence(seed).spawn(3)
    target_counts = resample_counts(len(genes), n_bootstrap, int(streams[0].generate_state(1)[0]))
    target_fold = np.empty(len(genes), dtype=np.int64)
    target_fold[np.random.default_rng(streams[1]).permutation(len(genes))] = np.arange(len(genes)) % n_target_folds
    perturbations, positives, points, replicates = [], [], [], []
    for perturbation, source, targets, is_de in evaluable_perturbations(labels, index, rule):
        point = np.full((n_target_folds, len(score_sets)), np.nan)
        replicate = np.full((n_bootstrap, n_target_folds, len(score_sets)), np.nan)
        for fold in range(n_target_folds):
            cell = target_fold[targets] == fold
            y = is_de[cell]
            if y.all() or not y.any():
                continue
            weights = np.vstack([np.ones(int(cell.sum())), target_counts[:, targets[cell]]])
            for column, score_set in enumerate(score_sets):
                areas = resampled_auroc(y, _ranks_nan_lowest(score_set.matrix[source, targets[cell]]), weights)
                point[fold, column], replicate[:, fold, column] = areas[0], areas[1:]
        perturbations.append(perturbation)
        positives.append(int(is_de.sum()))
        points.append(point)
        replicates.append(replicate)
    n = len(perturbations)
    return PFResamples(
        keys=tuple((s.method, s.layer, s.aggregation) for s in score_sets),
        perturbations=tuple(perturbations),
        n_positives=np.asarray(positives, dtype=np.int64),
        target_fold=target_fold,
        point=np.stack(points) if n else np.empty((0, n_target_folds, len(score_sets))),
        replicates=(np.stack(replicates, axis=1) if n
                    else np.empty((n_bootstrap, 0, n_target_folds, len(score_sets)))),
        perturbation_counts=resample_counts(max(n, 1), n_bootstrap, int(streams[2].generate_state(1)[0]))[:, :n],
        target_counts=target_counts,
    )


def _ranks_nan_lowest(values: np.ndarray) -> np.ndarray:
    """Average ranks with NaN below every value (as `auroc` ranks them); ranks are finite whatever the
    scores (infinite or huge values included), and an AUROC depends on the scores only through them."""
    return stats.rankdata(np.where(np.isnan(values), -np.inf, values))


def perturbation_prediction_tests(pf_auroc: pd.DataFrame, resamples: PFResamples, *, alpha: float) -> list[dict]:
    """Registry rows (without shared fields) for A01 and A04.

    Comparisons "<analysis>:<a>_vs_<b>": effect = mean PF AUROC difference a - b, with the two-way
    bootstrap's normal interval and p (module docstring; ci at level 1 - alpha).
    A01: each attention variant (probability and value-weighted) vs correlation, confirmatory.
    A04: each gene-level baseline vs correlation and vs each attention variant, confirmatory; the TF
    out-degree counter-example ("tf_out_degree_<resource>", score_sets.tf_out_degree_score_sets) the same,
    descriptive (FRAMEWORK lists it beside the baselines, not among the ones edges must beat).
    Descriptive rows: "<comparison>:study_wilcoxon", the study's paired Wilcoxon over perturbations; each
    method's mean PF AUROC against 0.5 ("<analysis>:<method>_vs_chance", two-way interval and p).
    pf_auroc: `per_perturbation_auroc` of the same labels and score sets; resamples: `resampled_pf_auroc`
    with one target fold.
    """
    if pf_auroc.empty:
        return []
    if resamples.n_folds != 1:
        raise ValueError(f"A01/A04 compare whole-perturbation AUROCs; got resamples with {resamples.n_folds} target folds")
    wide = pf_auroc_wide(pf_auroc)
    n_positives = int(resamples.n_positives.sum())
    correlation = ("correlation", NO_LAYER, "none")
    attention = sorted(key for key in wide.columns if key[0] in ATTENTION_METHODS)
    baselines = sorted(key for key in wide.columns if key[0].startswith(BASELINE_PREFIX))
    counterexamples = sorted(key for key in wide.columns if key[0].startswith(TF_OUT_DEGREE_PREFIX))
    rows: list[dict] = []

    def comparison(analysis_id: str, a: tuple, b: tuple, *, confirmatory: bool = True) -> None:
        test_id = f"{analysis_id}:{score_key_name(a)}_vs_{score_key_name(b)}"
        shared = {
            "analysis_id": analysis_id, "family": "P",
            "layer": a[1] if a[1] != NO_LAYER else b[1] if b[1] != NO_LAYER else None,
            "aggregation": a[2] if a[2] != "none" else b[2],
            "effect_name": f"mean_pf_auroc_difference({score_key_name(a)} - {score_key_name(b)})",
            "n_positives": n_positives,
        }
        effect, replicated = resamples.mean_difference(a, b)
        rows.append({**shared, **_two_way_fields(effect, replicated, alpha), "test_id": test_id,
                     "statistic_name": "mean_pf_auroc_difference", "statistic": effect,
                     "n": len(resamples.perturbations), "confirmatory": confirmatory})
        study = paired_wilcoxon(wide[a].to_numpy(), wide[b].to_numpy())
        rows.append({**shared, "test_id": f"{test_id}:study_wilcoxon", "statistic_name": "wilcoxon_W",
                     "statistic": study.statistic, "effect": study.effect, "p_value": study.p_value, "n": study.n,
                     "confirmatory": False})

    if correlation in wide.columns:
        for key in attention:
            comparison("A01", key, correlation)
    edges = ([correlation] if correlation in wide.columns else []) + attention
    for baseline in baselines:
        for other in edges:
            comparison("A04", baseline, other)
    for counterexample in counterexamples:
        for other in edges:
            comparison("A04", counterexample, other, confirmatory=False)
    for key in wide.columns:
        analysis_id = "A04" if key in baselines or key in counterexamples else "A01"
        mean, replicated = resamples.mean(key)
        fields = _two_way_fields(mean - 0.5, replicated - 0.5, alpha)
        rows.append(
            {
                "analysis_id": analysis_id,
                "test_id": f"{analysis_id}:{score_key_name(key)}_vs_chance",
                "family": "P",
                "layer": key[1] if key[1] != NO_LAYER else None,
                "aggregation": key[2],
                "statistic_name": "mean_pf_auroc",
                "statistic": mean,
                "effect_name": "mean_pf_auroc",
                "effect": mean,
                "ci_low": fields["ci_low"] + 0.5,
                "ci_high": fields["ci_high"] + 0.5,
                "p_value": fields["p_value"],
                "n": len(resamples.perturbations),
                "n_positives": n_positives,
                "confirmatory": False,
            }
        )
    return rows


def _two_way_fields(effect: float, replicated: np.ndarray, alpha: float) -> dict:
    test: BootstrapTest = wald_test(effect, replicated, alpha)
    return {"effect": effect, "ci_low": test.ci_low, "ci_high": test.ci_high, "p_value": test.p_value}


def score_key_name(key: tuple) -> str:
    method, layer, aggregation = key
    return method if layer == NO_LAYER else f"{method}_L{layer}_{aggregation}"
