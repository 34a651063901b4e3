"""Scaling characterisation (A20) and Cell-State Stratified Interpretability, CSSI (A21).

Everything here scores gene-pair matrices of R source rows x G genes against a reference (1 = edge), for
three edge scores: attention and value-weighted cosines (from `GroupedScores`, one layer's head means summed
per group of cells in the extraction pass) and |Spearman| co-expression (computed here from the same cells).

Groups (`scaling_groups`): every cell of the extraction carries, per grouping,
- per ladder seed: a bucket of its stratum's seeded order. All three ladders read prefixes of those orders:
  `fixed_composition` (N cells, each primary stratum contributing its share: N grows, composition fixed),
  `growing_heterogeneity` (N fixed, spread evenly over the k largest strata, k = 1, 2, ...) and `accrual`
  (N cells taken stratum by stratum, largest first: N and heterogeneity grow together, as when samples of
  more states are added). A rung is the union of the buckets below its prefix length in each stratum.
- per stratification (estimated, oracle or shuffled): its stratum.
- null blocks: a seeded random partition into B blocks; a random stratification of given sizes is a random
  set of whole blocks per stratum, so every null draw is read from the block sums.

Metrics: AUROC over every scored pair (a NaN score ranks lowest) and top-K F1 with K = the number of reference
edges (at that K precision = recall = F1; ties at the cut-off count their expected share of edges).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from scinterp_assets.core.analyses.reference_battery import reference_labels
from scinterp_assets.core.analyses.strata import Stratification
from scinterp_assets.core.attention.grouped import CellGroups, GroupedScores
from scinterp_assets.core.datasets.preprocessing import spearman_matrix
from scinterp_assets.core.networks.null import permutation_p_value
from scinterp_assets.core.stats.auroc import auroc

LADDERS = ("fixed_composition", "growing_heterogeneity", "accrual")
AGGREGATIONS = ("max", "mean", "range", "deviation")
SCORES = ("attention", "value_weighted", "correlation")
NULL_GROUPING = "null_blocks"


@dataclass(frozen=True)
class Rung:
    """One point of a ladder: its cells are the first `prefix[s]` cells of stratum s's seeded order."""

    ladder: str
    seed: int
    n_cells: int
    n_strata: int
    prefix: tuple[int, ...]


def ladder_rungs(strata_sizes: Sequence[int], rung_sizes: Sequence[int], heterogeneity_cells: int,
                 seed: int) -> tuple[list[Rung], list[str]]:
    """The feasible rungs of the three ladders for one seed, and why each infeasible one was left out."""
    sizes = np.asarray(strata_sizes, dtype=np.int64)
    total, k = int(sizes.sum()), sizes.size
    rungs, skipped = [], []
    for n in sorted(set(int(n) for n in rung_sizes)):
        if n > total:
            skipped.append(f"{n} cells: more than the {total} extracted")
            continue
        share = np.floor(sizes * n / total).astype(np.int64)  # largest remainders fill up to n
        remainder = np.argsort(-(sizes * n / total - share), kind="stable")[: n - int(share.sum())]
        share[remainder] += 1
        rungs.append(Rung("fixed_composition", seed, n, int((share > 0).sum()), tuple(share.tolist())))
        filled = np.minimum(sizes, np.maximum(n - np.concatenate([[0], np.cumsum(sizes)[:-1]]), 0))
        rungs.append(Rung("accrual", seed, n, int((filled > 0).sum()), tuple(filled.tolist())))
    for strata in range(1, k + 1):
        per = np.full(strata, heterogeneity_cells // strata)
        per[: heterogeneity_cells - per.sum()] += 1
        if np.any(sizes[:strata] < per):
            skipped.append(f"{heterogeneity_cells} cells over {strata} strata: stratum too small")
            continue
        prefix = np.zeros(k, dtype=np.int64)
        prefix[:strata] = per
        rungs.append(Rung("growing_heterogeneity", seed, heterogeneity_cells, strata, tuple(prefix.tolist())))
    return rungs, skipped


@dataclass(frozen=True)
class ScalingDesign:
    """The groups of one extraction pass and how to read rungs, strata and null draws back from them."""

    groups: CellGroups
    rungs: tuple[Rung, ...]
    rung_groups: tuple[tuple[str, ...], ...]  # per rung, the group names whose union it is
    rung_cells: tuple[np.ndarray, ...]  # per rung, int64 cell indices (into the extraction's cells)
    stratifications: tuple[Stratification, ...]
    null_blocks: np.ndarray  # int64 (cells,) block of each cell
    skipped_rungs: tuple[str, ...]


def scaling_groups(primary: Stratification, stratifications: Sequence[Stratification], rows: Sequence[str],
                   layer: int, *, rung_sizes: Sequence[int], heterogeneity_cells: int, seeds: Sequence[int],
                   n_null_blocks: int, null_seed: int) -> ScalingDesign:
    """Every grouping of one extraction pass over the cells `primary.labels` describes (see module doc)."""
    n_cells = primary.labels.size
    if n_null_blocks < 2 or n_null_blocks > n_cells:
        raise ValueError(f"scaling.null_blocks must lie in [2, {n_cells}] (the extracted cells); got {n_null_blocks}")
    names: list[str] = []
    columns, rungs, rung_groups, rung_cells, skipped = [], [], [], [], []
    sizes = primary.sizes()
    for seed in seeds:
        seed_rungs, seed_skipped = ladder_rungs(sizes, rung_sizes, heterogeneity_cells, seed)
        skipped += [f"seed {seed}: {reason}" for reason in seed_skipped]
        rng = np.random.default_rng([int(seed), 20])
        orders = [rng.permutation(np.flatnonzero(primary.labels == s)) for s in range(sizes.size)]
        column = np.full(n_cells, -1, dtype=np.int64)
        bucket_names: dict[tuple[int, int], str] = {}
        for s, order in enumerate(orders):
            cuts = sorted({rung.prefix[s] for rung in seed_rungs if rung.prefix[s] > 0})
            for low, high in zip([0, *cuts[:-1]], cuts):
                bucket_names[(s, high)] = name = f"ladder/seed{seed}/stratum{s}/to{high}"
                column[order[low:high]] = len(names)
                names.append(name)
        columns.append(column)
        for rung in seed_rungs:
            rungs.append(rung)
            rung_groups.append(tuple(name for (s, high), name in bucket_names.items() if high <= rung.prefix[s]))
            rung_cells.append(np.sort(np.concatenate([orders[s][: rung.prefix[s]] for s in range(sizes.size)])))
    for stratification in stratifications:
        if stratification.labels.size != n_cells:
            raise ValueError(f"stratification {stratification.name} labels {stratification.labels.size} cells, "
                             f"not {n_cells}")
        columns.append(stratification.labels + len(names))
        names += [f"{stratification.name}/{s}" for s in range(stratification.k)]
    blocks = np.random.default_rng([int(null_seed), 21]).permutation(n_cells) % n_null_blocks
    columns.append(blocks + len(names))
    names += [f"{NULL_GROUPING}/{b}" for b in range(n_null_blocks)]
    groups = CellGroups(tuple(names), np.stack(columns, axis=1), tuple(rows), layer)
    return ScalingDesign(groups, tuple(rungs), tuple(rung_groups), tuple(rung_cells), tuple(stratifications),
                         blocks, tuple(skipped))


# ---------------------------------------------------------------------------------------------------------
# scores of a set of cells


def pair_specific(scores: np.ndarray) -> np.ndarray:
    """(R, G) scores less their row and column means (plus the grand mean; NaN-aware): what is left once every
    part that depends on the source alone or on the target alone is removed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row or column stays NaN
        return (scores - np.nanmean(scores, axis=1, keepdims=True) - np.nanmean(scores, axis=0, keepdims=True)
                + np.nanmean(scores))


class CellSetScores:
    """Edge scores (R, G) of any union of groups or set of cells, for the three scores; with
    `pair_specific_only`, each cell set's scores less their source and target parts (`pair_specific`)."""

    def __init__(self, grouped: GroupedScores, expression: np.ndarray, pair_specific_only: bool = False):
        self.grouped = grouped
        self.pair_specific_only = pair_specific_only
        self.expression = np.asarray(expression, dtype=np.float64)  # (cells, G) log-normalised, genes = grouped.genes
        column = {gene: i for i, gene in enumerate(grouped.genes)}
        self.rows = np.array([column[row] for row in grouped.rows], dtype=np.int64)

    def score(self, name: str, groups: Sequence[str], cells: np.ndarray) -> np.ndarray:
        if name == "correlation":  # |rho| as correlation_edges; NaN for a constant gene and a row's own gene
            scores = np.abs(spearman_matrix(self.expression[cells], self.rows))
            scores[np.arange(self.rows.size), self.rows] = np.nan
        else:
            scores = self.grouped.mean(groups, value_weighted=name == "value_weighted")[0]
        return pair_specific(scores) if self.pair_specific_only else scores

    def available(self) -> tuple[str, ...]:
        return tuple(name for name in SCORES if name != "value_weighted" or self.grouped.has_value_weighted)


# ---------------------------------------------------------------------------------------------------------
# metrics


def reference_rows(reference: pd.DataFrame, genes: Sequence[str], rows: Sequence[str],
                   resource: str | None = None) -> np.ndarray:
    """bool (R, G): True where (row, gene) is an edge of the reference (one resource of a restricted
    reference table, or any table with source and target columns)."""
    membership = reference_labels(reference, genes, resource).membership
    return membership[pd.Index(list(genes)).get_indexer(list(rows))]


def scored_pairs(rows: Sequence[str], genes: Sequence[str]) -> np.ndarray:
    """bool (R, G): every pair except a row with its own gene."""
    valid = np.ones((len(rows), len(genes)), dtype=bool)
    column = {gene: i for i, gene in enumerate(genes)}
    valid[np.arange(len(rows)), [column[row] for row in rows]] = False
    return valid


def top_k_f1(scores: np.ndarray, positive: np.ndarray) -> float:
    """F1 of the top K pairs, K = number of positives (= precision = recall there); NaN ranks lowest, and
    pairs tied at the cut-off contribute their expected share of positives."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    k = int(positive.sum())
    if k == 0:
        return float("nan")
    threshold = np.partition(scores, scores.size - k)[scores.size - k]
    above, tied = scores > threshold, scores == threshold
    expected = positive[above].sum() + (k - above.sum()) * positive[tied].mean()
    return float(expected / k)


def recovery(scores: np.ndarray, positive: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(AUROC, top-K F1) of (R, G) scores against a positive mask over the valid pairs (NaN ranks lowest)."""
    flat, truth = scores[valid], positive[valid]
    return float(auroc(truth, flat)), top_k_f1(flat, truth)


def aggregate(per_stratum: Sequence[np.ndarray], weights: Sequence[float], pooled: np.ndarray) -> dict[str, np.ndarray]:
    """CSSI aggregations over strata (NaN-aware: a stratum without the pair leaves it out): max, prevalence-
    weighted mean, range (max - min) and deviation from pooled (largest |stratum - pooled|)."""
    stack = np.stack(per_stratum)
    present = ~np.isnan(stack)
    w = np.asarray(weights, dtype=np.float64)[:, None, None] * present
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: pairs no stratum holds stay NaN
        mean = np.nansum(stack * w, axis=0) / w.sum(axis=0)
        return {"max": np.nanmax(stack, axis=0), "mean": np.where(present.any(axis=0), mean, np.nan),
                "range": np.nanmax(stack, axis=0) - np.nanmin(stack, axis=0),
                "deviation": np.nanmax(np.abs(stack - pooled[None]), axis=0)}


# ---------------------------------------------------------------------------------------------------------
# A20: recovery versus number of cells


def scaling_curves(design: ScalingDesign, scores: CellSetScores, references: Mapping[str, np.ndarray],
                   valid: np.ndarray) -> pd.DataFrame:
    """One row per (rung, score, reference): ladder, seed, n_cells, n_strata, score, reference, auroc, f1."""
    records = []
    for rung, groups, cells in zip(design.rungs, design.rung_groups, design.rung_cells):
        for score in scores.available():
            matrix = scores.score(score, groups, cells)
            for reference, positive in references.items():
                value_auroc, value_f1 = recovery(matrix, positive, valid)
                records.append({"ladder": rung.ladder, "seed": rung.seed, "n_cells": rung.n_cells,
                                "n_strata": rung.n_strata, "score": score, "reference": reference,
                                "auroc": value_auroc, "f1": value_f1})
    return pd.DataFrame.from_records(records, columns=["ladder", "seed", "n_cells", "n_strata", "score",
                                                       "reference", "auroc", "f1"])


def ladder_axis(ladder: str) -> str:
    """What grows along a ladder: the number of strata for growing_heterogeneity, else the number of cells."""
    return "n_strata" if ladder == "growing_heterogeneity" else "n_cells"


def scaling_tests(curves: pd.DataFrame, layer: int) -> list[dict]:
    """A20 rows per (reference, score, ladder): per seed, the change of each metric from the ladder's first
    rung to its last, summarised by its median with an exact two-sided sign test over seeds; and the study's
    sign test of "F1 drops while AUROC rises" among the seeds where the two metrics move apart (two-sided
    binomial against 1/2). Exploratory: which way pooled recovery moves with N is a description of the data."""
    rows = []
    for (reference, score, ladder), group in curves.groupby(["reference", "score", "ladder"], sort=True):
        axis = ladder_axis(ladder)
        ends = group.sort_values(axis).groupby("seed").agg(
            first=(axis, "first"), last=(axis, "last"), f1_first=("f1", "first"), f1_last=("f1", "last"),
            auroc_first=("auroc", "first"), auroc_last=("auroc", "last"))
        ends = ends[ends["first"] < ends["last"]]
        base = {"analysis_id": "A20", "family": "S", "layer": layer, "aggregation": ladder, "confirmatory": False}
        if ends.empty:
            rows.append({**base, "test_id": f"A20:{reference}:{score}:{ladder}:not_evaluable", "p_value": np.nan,
                         "note": f"not evaluable: the {ladder} ladder has fewer than two feasible rungs"})
            continue
        span = f"{int(ends['first'].min())} to {int(ends['last'].max())} {axis.removeprefix('n_')}"
        for metric in ("f1", "auroc"):
            change = (ends[f"{metric}_last"] - ends[f"{metric}_first"]).to_numpy()
            moved = change[change != 0]
            rows.append({**base, "test_id": f"A20:{reference}:{score}:{ladder}:{metric}_change",
                         "statistic_name": f"median change in {metric} from {span}",
                         "statistic": float(np.median(change)), "effect_name": f"seeds_where_{metric}_fell",
                         "effect": float((change < 0).sum()), "n": len(change),
                         "p_value": float(stats.binomtest(int((moved < 0).sum()), moved.size).pvalue)
                         if moved.size else np.nan,
                         "note": "" if moved.size else f"{metric} did not move in any seed"})
        f1_change = (ends["f1_last"] - ends["f1_first"]).to_numpy()
        auroc_change = (ends["auroc_last"] - ends["auroc_first"]).to_numpy()
        apart = np.sign(f1_change) * np.sign(auroc_change) < 0
        study_pattern = int(((f1_change < 0) & (auroc_change > 0)).sum())
        rows.append({**base, "test_id": f"A20:{reference}:{score}:{ladder}:f1_drops_while_auroc_rises",
                     "statistic_name": f"seeds where F1 fell while AUROC rose, {span}",
                     "statistic": float(study_pattern), "effect_name": "seeds_where_the_metrics_moved_apart",
                     "effect": float(apart.sum()), "n": len(f1_change),
                     "p_value": float(stats.binomtest(study_pattern, int(apart.sum())).pvalue) if apart.any()
                     else np.nan,
                     "note": "" if apart.any() else "F1 and AUROC never moved in opposite directions"})
    return rows


# ---------------------------------------------------------------------------------------------------------
# A21: CSSI


@dataclass(frozen=True)
class CssiSettings:
    min_stratum_size: int
    n_null_draws: int
    null_seed: int


def _stratum_scores(scores: CellSetScores, score: str, members: Sequence[tuple[tuple[str, ...], np.ndarray]]
                    ) -> list[np.ndarray]:
    return [scores.score(score, groups, cells) for groups, cells in members]


def _gains(per_stratum: list[np.ndarray], weights: np.ndarray, pooled: np.ndarray,
           references: Mapping[str, np.ndarray], valid: np.ndarray,
           pooled_recovery: Mapping[str, tuple[float, float]]) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(aggregation, reference): (AUROC gain, F1 gain, aggregated AUROC)} over pooled."""
    result = {}
    for aggregation, matrix in aggregate(per_stratum, weights, pooled).items():
        for reference, positive in references.items():
            value_auroc, value_f1 = recovery(matrix, positive, valid)
            result[(aggregation, reference)] = (value_auroc - pooled_recovery[reference][0],
                                                value_f1 - pooled_recovery[reference][1], value_auroc)
    return result


def null_block_strata(sizes: Sequence[int], blocks: np.ndarray, n_draws: int, seed: int) -> list[list[np.ndarray]]:
    """`n_draws` random stratifications of the cells into strata of about `sizes` cells, each stratum a
    random set of whole null blocks (at least one; sizes rounded to blocks): per draw, per stratum, the
    block indices."""
    n_blocks = int(blocks.max()) + 1
    block_size = blocks.size / n_blocks
    per_stratum = np.maximum(1, np.round(np.asarray(sizes) / block_size)).astype(np.int64)
    while per_stratum.sum() > n_blocks:  # more strata than blocks allow: shrink the largest
        per_stratum[np.argmax(per_stratum)] -= 1
    rng = np.random.default_rng([int(seed), 22])
    cuts = np.cumsum(per_stratum)[:-1]
    return [np.split(rng.permutation(n_blocks)[: per_stratum.sum()], cuts) for _ in range(n_draws)]


def cssi_evaluation(design: ScalingDesign, scores: CellSetScores, references: Mapping[str, np.ndarray],
                    valid: np.ndarray, settings: CssiSettings, score_names: Sequence[str] | None = None
                    ) -> pd.DataFrame:
    """One row per (stratification, score, aggregation, reference): the CSSI score's AUROC and F1 gains over
    the pooled score of the same cells, with the null of random strata of the same sizes (whole null blocks):
    null band (2.5%, 97.5%) of the AUROC gain and p = (1 + #null gains >= observed) / (1 + draws).

    Strata below `min_stratum_size` cells are left out (their cells still count in the pooled score); a
    stratification with fewer than two strata left is not evaluable. score_names: the scores to evaluate
    (default every score `scores` holds)."""
    all_cells = np.arange(design.null_blocks.size)
    block_groups = [f"{NULL_GROUPING}/{b}" for b in range(int(design.null_blocks.max()) + 1)]
    records = []
    for score in scores.available() if score_names is None else score_names:
        pooled = scores.score(score, block_groups, all_cells)
        pooled_recovery = {name: recovery(pooled, positive, valid) for name, positive in references.items()}
        for stratification in design.stratifications:
            sizes = stratification.sizes()
            kept = np.flatnonzero(sizes >= settings.min_stratum_size)
            base = {"stratification": stratification.name, "method": stratification.method,
                    "requested_k": stratification.requested_k, "k": stratification.k, "strata_used": kept.size,
                    "strata_skipped": int(sizes.size - kept.size), "score": score}
            if kept.size < 2:
                for reference in references:
                    records.append({**base, "reference": reference, "aggregation": "max", "evaluable": False,
                                    "note": f"not evaluable: {kept.size} of {sizes.size} strata hold at least "
                                            f"{settings.min_stratum_size} cells"})
                continue
            members = [((f"{stratification.name}/{s}",), np.flatnonzero(stratification.labels == s)) for s in kept]
            observed = _gains(_stratum_scores(scores, score, members), sizes[kept] / sizes[kept].sum(), pooled,
                              references, valid, pooled_recovery)
            null: dict[tuple[str, str], list[float]] = {key: [] for key in observed}
            for draw in null_block_strata(sizes[kept], design.null_blocks, settings.n_null_draws,
                                          settings.null_seed):
                draw_members = [(tuple(block_groups[b] for b in chosen), np.flatnonzero(np.isin(design.null_blocks,
                                                                                                chosen)))
                                for chosen in draw]
                draw_sizes = np.array([cells.size for _, cells in draw_members], dtype=np.float64)
                for key, gain in _gains(_stratum_scores(scores, score, draw_members), draw_sizes / draw_sizes.sum(),
                                        pooled, references, valid, pooled_recovery).items():
                    null[key].append(gain[0])
            for (aggregation, reference), (auroc_gain, f1_gain, value_auroc) in observed.items():
                draws = np.asarray(null[(aggregation, reference)])
                finite = draws[np.isfinite(draws)]
                records.append({**base, "reference": reference, "aggregation": aggregation, "evaluable": True,
                                "pooled_auroc": pooled_recovery[reference][0], "pooled_f1": pooled_recovery[reference][1],
                                "cssi_auroc": value_auroc, "auroc_gain": auroc_gain, "f1_gain": f1_gain,
                                "null_low": float(np.quantile(finite, 0.025)) if finite.size else np.nan,
                                "null_high": float(np.quantile(finite, 0.975)) if finite.size else np.nan,
                                "null_draws": int(finite.size),
                                "p_value": permutation_p_value(auroc_gain, finite), "note": ""})
    return pd.DataFrame.from_records(records)


PAIR_SPECIFIC = "max_pair_specific"  # the confirmatory A21 aggregation
PRIMARY_NOTE = ("the confirmatory A21 test: CSSI-max of pair-specific attention (source and target parts removed "
                "within every cell set) on the primary estimated strata")
GENE_LEVEL_NOTE = ("exploratory: a gain of raw scores can come from genes whose level differs between states "
                   "without any pair signal (a gene-level null rejects in every calibration world; "
                   "benchmarks/calibration.py --cssi)")


def pair_specific_cssi(design: ScalingDesign, grouped: GroupedScores, expression: np.ndarray,
                       references: Mapping[str, np.ndarray], valid: np.ndarray, settings: CssiSettings,
                       primary: str) -> pd.DataFrame:
    """The confirmatory A21 test's rows (aggregation PAIR_SPECIFIC): CSSI-max attention of the primary
    stratification against random strata of the same sizes, every cell set's scores made pair-specific first
    (`pair_specific`), so a score that depends on genes' levels alone, however they differ between states, gains
    nothing."""
    primary_only = dataclasses.replace(design, stratifications=tuple(
        s for s in design.stratifications if s.name == primary))
    table = cssi_evaluation(primary_only, CellSetScores(grouped, expression, pair_specific_only=True), references,
                            valid, settings, score_names=["attention"])
    return table[table["aggregation"] == "max"].assign(aggregation=PAIR_SPECIFIC)


def cssi_tests(table: pd.DataFrame, layer: int) -> list[dict]:
    """A21 registry rows, one per (reference, score, stratification, aggregation) of `table` (cssi_evaluation
    rows, with pair_specific_cssi's). Confirmatory: the PAIR_SPECIFIC rows of estimated strata. Every raw-score
    aggregation is exploratory (GENE_LEVEL_NOTE); oracle and shuffled strata are labelled as such."""
    rows = []
    for record in table.to_dict("records"):
        name = f"A21:{record['reference']}:{record['score']}:{record['stratification']}:{record['aggregation']}"
        confirmatory = bool(record["aggregation"] == PAIR_SPECIFIC and record["method"] in ("kmeans", "leiden")
                            and record["evaluable"])
        note = record.get("note") or (PRIMARY_NOTE if confirmatory else GENE_LEVEL_NOTE)
        if record["method"] == "oracle":
            note = "oracle strata: the simulation's true cell states (synthetic data only); never the primary row"
        elif record["method"] == "shuffled":
            note = "shuffled strata: the primary labels permuted over cells; a calibration check, not a claim"
        if not record["evaluable"]:
            rows.append({"analysis_id": "A21", "test_id": name, "family": "S", "layer": layer,
                         "aggregation": record["aggregation"], "p_value": np.nan, "confirmatory": confirmatory,
                         "note": note})
            continue
        rows.append({"analysis_id": "A21", "test_id": name, "family": "S", "layer": layer,
                     "aggregation": record["aggregation"], "statistic_name": "cssi_auroc",
                     "statistic": record["cssi_auroc"], "effect_name": "auroc_gain_over_pooled",
                     "effect": record["auroc_gain"], "ci_low": record["null_low"], "ci_high": record["null_high"],
                     "p_value": record["p_value"], "n": int(record["null_draws"]), "confirmatory": confirmatory,
                     "note": "; ".join(filter(None, [note, f"ci: the 95% band of the gain over {record['null_draws']} random "
                                      f"stratifications of the same sizes; {record['strata_used']} strata used, "
                                      f"{record['strata_skipped']} below the minimum size"]))})
    return rows
