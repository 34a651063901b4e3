"""Family P: perturbation-first (PF) AUROC (A01 attention vs correlation, A04 gene-level baselines).

For each perturbation of gene g in the evaluable set, candidate targets are the other evaluable genes;
each method ranks them by score(g -> t); labels are the DE calls. A perturbation is evaluated only with
enough positives and negatives among those targets. Methods are compared perturbation by perturbation
(paired Wilcoxon): the perturbation is the independent unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.score_sets import BASELINE_PREFIX, TF_OUT_DEGREE_PREFIX, ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import auroc
from scinterp_assets.core.stats.paired import one_sample_wilcoxon, paired_wilcoxon

ATTENTION_METHODS = ("attention", "value_weighted")  # edge scores read from a model's attention
PF_AUROC_COLUMNS = ("perturbation", "method", "layer", "aggregation", "auroc", "n_targets", "n_positives")


@dataclass(frozen=True)
class PerturbationFilter:
    min_positives: int
    min_negatives: int


def per_perturbation_auroc(
    labels: pd.DataFrame, genes: list[str], score_sets: list[ScoreSet], rule: PerturbationFilter
) -> pd.DataFrame:
    """PF AUROC of every score set for every evaluable perturbation; one row per (perturbation, score set)."""
    index = pd.Index(genes)
    rows = []
    evaluable = labels[labels["perturbation"].isin(index) & labels["target"].isin(index)]
    for perturbation, group in evaluable.groupby("perturbation", sort=True):
        is_de = group["is_de"].to_numpy(dtype=bool)
        n_positives = int(is_de.sum())
        if n_positives < rule.min_positives or len(is_de) - n_positives < rule.min_negatives:
            continue
        source = index.get_loc(perturbation)
        targets = index.get_indexer(group["target"])
        scores = np.column_stack([score_set.matrix[source, targets] for score_set in score_sets])
        areas = auroc(is_de, scores)
        for score_set, area in zip(score_sets, areas):
            rows.append((perturbation, score_set.method, score_set.layer, score_set.aggregation, float(area),
                         len(is_de), n_positives))
    return pd.DataFrame(rows, columns=list(PF_AUROC_COLUMNS)).astype(
        {"layer": "int64", "n_targets": "int64", "n_positives": "int64"}
    )


def pf_auroc_wide(pf_auroc: pd.DataFrame) -> pd.DataFrame:
    keyed = pf_auroc.assign(key=list(zip(pf_auroc["method"], pf_auroc["layer"], pf_auroc["aggregation"])))
    return keyed.pivot(index="perturbation", columns="key", values="auroc")


def perturbation_prediction_tests(pf_auroc: pd.DataFrame) -> list[dict]:
    """Registry rows (without shared fields) for A01 and A04.

    A01: each attention variant (probability and value-weighted) vs correlation (paired Wilcoxon), confirmatory.
    A04: each gene-level baseline vs correlation and vs each attention variant, confirmatory; the TF
    out-degree counter-example ("tf_out_degree_<resource>", score_sets.tf_out_degree_score_sets) the same,
    descriptive (FRAMEWORK lists it beside the baselines, not among the ones edges must beat).
    Descriptive rows: each method's mean PF AUROC against 0.5 (one-sample Wilcoxon).
    """
    if pf_auroc.empty:
        return []
    wide = pf_auroc_wide(pf_auroc)
    n_positives = int(pf_auroc.drop_duplicates("perturbation")["n_positives"].sum())
    correlation = ("correlation", NO_LAYER, "none")
    attention = sorted(key for key in wide.columns if key[0] in ATTENTION_METHODS)
    baselines = sorted(key for key in wide.columns if key[0].startswith(BASELINE_PREFIX))
    counterexamples = sorted(key for key in wide.columns if key[0].startswith(TF_OUT_DEGREE_PREFIX))
    rows: list[dict] = []

    def comparison(analysis_id: str, a: tuple, b: tuple, *, confirmatory: bool = True) -> None:
        result = paired_wilcoxon(wide[a].to_numpy(), wide[b].to_numpy())
        rows.append(
            {
                "analysis_id": analysis_id,
                "test_id": f"{analysis_id}:{score_key_name(a)}_vs_{score_key_name(b)}",
                "family": "P",
                "layer": a[1] if a[1] != NO_LAYER else b[1] if b[1] != NO_LAYER else None,
                "aggregation": a[2] if a[2] != "none" else b[2],
                "statistic_name": "wilcoxon_W",
                "statistic": result.statistic,
                "effect_name": f"mean_pf_auroc_difference({score_key_name(a)} - {score_key_name(b)})",
                "effect": result.effect,
                "p_value": result.p_value,
                "n": result.n,
                "n_positives": n_positives,
                "confirmatory": confirmatory,
            }
        )

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
        result = one_sample_wilcoxon(wide[key].to_numpy(), 0.5)
        values = wide[key].dropna()
        spread = values.quantile([0.025, 0.975]) if len(values) else pd.Series([np.nan, np.nan])
        analysis_id = "A04" if key in baselines or key in counterexamples else "A01"
        rows.append(
            {
                "analysis_id": analysis_id,
                "test_id": f"{analysis_id}:{score_key_name(key)}_vs_chance",
                "family": "P",
                "layer": key[1] if key[1] != NO_LAYER else None,
                "aggregation": key[2],
                "statistic_name": "wilcoxon_W",
                "statistic": result.statistic,
                "effect_name": "mean_pf_auroc",
                "effect": result.mean_a,
                "ci_low": float(spread.iloc[0]),
                "ci_high": float(spread.iloc[1]),
                "p_value": result.p_value,
                "n": result.n,
                "n_positives": n_positives,
                "confirmatory": False,
            }
        )
    return rows


def score_key_name(key: tuple) -> str:
    method, layer, aggregation = key
    return method if layer == NO_LAYER else f"{method}_L{layer}_{aggregation}"
