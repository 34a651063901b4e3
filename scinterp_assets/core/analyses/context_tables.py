"""Family X read-outs over the whole test registry: A23 cross-context table and A24 metric map.

Both take a registry frame (REGISTRY_COLUMNS, many model x cell type rows, after `apply_framework_bh`)
and return a DataFrame for the report; neither emits registry rows.

Test ids are read as "[model|cell_type|]<analysis>:<a>_vs_<b>" (the asset layer prefixes model and cell
type; score-set names follow `perturbation_prediction._name` and never contain "_vs_").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.score_sets import BASELINE_PREFIX
from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS

CONTEXT_KEYS = ("model", "cell_type", "modality")
CROSS_CONTEXT_COLUMNS = (
    *CONTEXT_KEYS,
    "a01_outcome", "a01_n_better", "a01_n_worse", "a01_n_equal", "a01_best_attention", "a01_best_effect",
    "a04_best_edge", "a04_best_edge_mean_auroc", "a04_n_baselines", "a04_n_baselines_beating_best_edge",
    "a04_gene_level_dominance",
    "a05_status", "a05_n_tests", "a05_test_id", "a05_delta_auroc", "a05_ci_low", "a05_ci_high",
    "a05_all_lower_bounds_positive",
)
METRIC_MAP_COLUMNS = (
    "analysis_id", "test_id", "model", "checkpoint", "cell_type", "modality", "layer", "aggregation",
    "auroc_field", "statistic_name", "statistic", "effect_name", "effect", "universe_size", "negatives",
    "label_rule", "n", "n_positives", "comparable_group",
)
NOT_RUN = "not run"


def cross_context_table(registry: pd.DataFrame, *, alpha: float) -> pd.DataFrame:
    """A23: one row per (model, cell_type, modality) with CROSS_CONTEXT_COLUMNS.

    a01_outcome (from the confirmatory A01 "<attention>_vs_correlation" rows, framework-wide q_value):
      each variant is "better" (q < alpha, effect > 0), "worse" (q < alpha, effect < 0) or "equal"
      (not distinguishable); the context reads "better" / "worse" when every significant variant agrees,
      "equal" when none is significant, "mixed" when layers disagree, "not run" without A01 rows.
      a01_best_attention is the variant with the largest effect (descriptive, not a selected result).
    a04_gene_level_dominance: the best edge score is the edge method (attention variant or correlation)
      with the highest mean PF AUROC (A01 "_vs_chance" rows); dominance "holds" when every gene-level
      baseline's ("baseline_*"; not the TF out-degree counter-example) A04 row "<baseline>_vs_<best edge>"
      has q < alpha and a positive effect, else "fails"; "not run" when the rows are missing.
    a05_*: the confirmatory A05/A06 rows (delta per-perturbation AUROC, flexible gene-only arm plus the
      residualised edge score, every model and split); the least favourable one (smallest delta) is shown,
      since the verdict (FRAMEWORK.md section 8, criterion 2) needs every delta's lower bound > 0, which
      holds exactly when each row's p_value < alpha with a positive effect; "not run" when no such row
      exists.
    """
    table = _checked(registry, "A23")
    tested = table["confirmatory"] & table["p_value"].notna()
    if tested.any() and table.loc[tested, "q_value"].isna().all():
        raise ValueError("A23 reads framework-wide q-values; run apply_framework_bh on the registry first")
    table = table.assign(_local=table["test_id"].astype(str).str.rsplit("|", n=1).str[-1])
    records = []
    for keys, context in table.groupby(list(CONTEXT_KEYS), dropna=False, sort=True):
        record = dict(zip(CONTEXT_KEYS, keys))
        record.update(_a01(context, alpha))
        record.update(_a04(context, alpha))
        record.update(_a05(context))
        records.append(record)
    return pd.DataFrame.from_records(records, columns=list(CROSS_CONTEXT_COLUMNS))


def metric_map(registry: pd.DataFrame) -> pd.DataFrame:
    """A24: every AUROC-type row with what makes it comparable (METRIC_MAP_COLUMNS).

    A row is AUROC-type when its statistic_name or its effect_name mentions "auroc" (case-insensitive):
    reference AUROCs carry it in the statistic, PF rows (mean PF AUROC, differences of AUROCs) in the
    effect. auroc_field says which column holds the AUROC number ("statistic" wins when both do).
    comparable_group joins cell type, universe size, negatives, label rule and number of positives: two
    numbers are comparable only within one group. The cell type is in the key because equal universe
    sizes in two contexts are different gene sets; n_positives is in it because labels that differ in their
    number of positives are not the same labels (it separates, e.g., reference networks sharing the label
    rule "reference membership", and PF rows on different perturbation sets).
    """
    table = _checked(registry, "A24")
    in_statistic = table["statistic_name"].astype(str).str.contains("auroc", case=False, na=False)
    in_effect = table["effect_name"].astype(str).str.contains("auroc", case=False, na=False)
    table = table[in_statistic | in_effect].copy()
    table["auroc_field"] = np.where(in_statistic[in_statistic | in_effect], "statistic", "effect")
    table["comparable_group"] = [
        " | ".join(f"{name}={_text(value)}" for name, value in zip(
            ("cell_type", "universe_size", "negatives", "label_rule", "n_positives"), values))
        for values in zip(table["cell_type"], table["universe_size"], table["negatives"], table["label_rule"],
                          table["n_positives"])
    ]
    return (table.loc[:, list(METRIC_MAP_COLUMNS)]
            .sort_values(["comparable_group", "test_id"], kind="stable").reset_index(drop=True))


def _checked(registry: pd.DataFrame, analysis: str) -> pd.DataFrame:
    if registry is None or registry.empty:
        raise ValueError(f"{analysis} needs a non-empty test registry; got no rows")
    missing = [column for column in REGISTRY_COLUMNS if column not in registry.columns]
    if missing:
        raise ValueError(f"{analysis}: registry lacks column(s) {missing}")
    return registry.reset_index(drop=True)


def _comparison(local_id: str) -> tuple[str, str] | None:
    """("a", "b") from "<analysis>:<a>_vs_<b>", None when the id is no two-sided comparison."""
    body = local_id.split(":", 1)[-1]
    parts = body.split("_vs_")
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _a01(context: pd.DataFrame, alpha: float) -> dict:
    rows = context[(context["analysis_id"] == "A01") & context["confirmatory"]
                   & context["_local"].str.endswith("_vs_correlation")]
    if rows.empty:
        return {"a01_outcome": NOT_RUN, "a01_n_better": 0, "a01_n_worse": 0, "a01_n_equal": 0,
                "a01_best_attention": None, "a01_best_effect": np.nan}
    significant = rows["q_value"] < alpha
    better = int((significant & (rows["effect"] > 0)).sum())
    worse = int((significant & (rows["effect"] < 0)).sum())
    outcome = "mixed" if better and worse else "better" if better else "worse" if worse else "equal"
    best = rows.loc[rows["effect"].idxmax()] if rows["effect"].notna().any() else None
    return {"a01_outcome": outcome, "a01_n_better": better, "a01_n_worse": worse,
            "a01_n_equal": len(rows) - better - worse,
            "a01_best_attention": _comparison(best["_local"])[0] if best is not None else None,
            "a01_best_effect": float(best["effect"]) if best is not None else np.nan}


def _a04(context: pd.DataFrame, alpha: float) -> dict:
    empty = {"a04_best_edge": None, "a04_best_edge_mean_auroc": np.nan, "a04_n_baselines": 0,
             "a04_n_baselines_beating_best_edge": 0, "a04_gene_level_dominance": NOT_RUN}
    chance = context[context["_local"].str.endswith("_vs_chance")
                     & context["analysis_id"].isin(["A01", "A04"]) & context["effect"].notna()]
    names = chance["_local"].map(lambda local: _comparison(local)[0])
    edges = chance[(chance["analysis_id"] == "A01")]
    # the gene-level baselines edges must beat; the TF out-degree counter-example (also A04) is not one of them
    baselines = sorted(name for name in set(names[chance["analysis_id"] == "A04"])
                       if name.startswith(BASELINE_PREFIX))
    if edges.empty or not baselines:
        return empty
    best_row = edges.loc[edges["effect"].idxmax()]
    best_edge = names[best_row.name]
    by_baseline = {}
    confirmatory_a04 = (context["analysis_id"] == "A04") & context["confirmatory"]
    for index, pair in context.loc[confirmatory_a04, "_local"].map(_comparison).items():
        if pair is not None and pair[1] == best_edge:
            by_baseline[pair[0]] = context.loc[index]
    if not all(name in by_baseline for name in baselines):
        return {**empty, "a04_best_edge": best_edge, "a04_best_edge_mean_auroc": float(best_row["effect"])}
    beating = sum(bool(by_baseline[name]["q_value"] < alpha and by_baseline[name]["effect"] > 0)
                  for name in baselines)
    return {"a04_best_edge": best_edge, "a04_best_edge_mean_auroc": float(best_row["effect"]),
            "a04_n_baselines": len(baselines), "a04_n_baselines_beating_best_edge": beating,
            "a04_gene_level_dominance": "holds" if beating == len(baselines) else "fails"}


def _a05(context: pd.DataFrame) -> dict:
    rows = context[context["analysis_id"].isin(["A05", "A06"]) & context["confirmatory"]
                   & context["effect"].notna()]
    if rows.empty:
        return {"a05_status": NOT_RUN, "a05_n_tests": 0, "a05_test_id": None, "a05_delta_auroc": np.nan,
                "a05_ci_low": np.nan, "a05_ci_high": np.nan, "a05_all_lower_bounds_positive": pd.NA}
    worst = rows.loc[rows["effect"].idxmin()]
    return {"a05_status": "run", "a05_n_tests": len(rows), "a05_test_id": worst["test_id"],
            "a05_delta_auroc": float(worst["effect"]), "a05_ci_low": float(worst["ci_low"]),
            "a05_ci_high": float(worst["ci_high"]),
            "a05_all_lower_bounds_positive": bool((rows["ci_low"] > 0).all())}


def _text(value) -> str:
    return "NA" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
