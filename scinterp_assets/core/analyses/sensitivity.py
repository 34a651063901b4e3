"""A03 parameter sensitivity grid and A22 HVG-protocol confound (pure; the caller computes PF AUROC tables).

A03 sweeps the DE threshold (|difference of mean log1p|), the number of control cells N_ctrl and the HVG
universe size. The caller supplies `evaluate(lfc, n_ctrl, n_hvg)`, which rebuilds labels and scores for one
cell of the grid and returns its per-perturbation PF AUROC table (`per_perturbation_auroc`). A cell whose
setting exceeds the data (more control cells or HVGs than exist) is skipped with the reason, never capped:
a capped cell would silently repeat a smaller cell under a larger label.

A22 compares PF AUROC between a universe with the perturbed genes forced in and a plain top-N HVG universe.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.perturbation_prediction import (
    ATTENTION_METHODS,
    PF_AUROC_COLUMNS,
    pf_auroc_wide,
    score_key_name,
)
from scinterp_assets.core.analyses.score_sets import BASELINE_PREFIX
from scinterp_assets.core.stats.paired import PairedComparison, one_sample_wilcoxon, paired_wilcoxon

EDGE_METHODS = (*ATTENTION_METHODS, "correlation")  # edge scores that gene-level baselines must beat
SENSITIVITY_CELL_COLUMNS = (
    "cell", "lfc", "n_ctrl", "n_hvg", "status", "reason", "n_perturbations", "best_baseline", "best_edge",
    "dominance_effect", "dominance_p_value", "gene_level_dominance",
)
CHANCE_TEST_COLUMNS = ("cell", "method", "layer", "aggregation", "n", "mean_auroc", "statistic", "p_value")
HVG_CONFOUND_COLUMNS = (
    "method", "layer", "aggregation", "n_shared", "mean_forced", "mean_plain", "mean_difference", "statistic",
    "p_value", "n_only_forced", "n_only_plain",
)

Evaluate = Callable[[float, int, int], pd.DataFrame]


@dataclass(frozen=True)
class SensitivityGrid:
    """cells: SENSITIVITY_CELL_COLUMNS, one row per grid cell in grid order; status "evaluated",
    "skipped" (a setting exceeds the data; `reason` says which) or "empty" (no evaluable perturbation).
    chance_tests: CHANCE_TEST_COLUMNS, one-sample Wilcoxon of PF AUROC vs 0.5 per evaluated cell and method.
    rows: A03 registry rows (without shared fields)."""

    cells: pd.DataFrame
    chance_tests: pd.DataFrame
    rows: list[dict]


def cell_id(lfc: float, n_ctrl: int, n_hvg: int) -> str:
    """Grid-cell label used in test ids, e.g. "lfc0.5_ctrl2000_hvg2000"."""
    return f"lfc{lfc:g}_ctrl{n_ctrl}_hvg{n_hvg}"


def skip_reason(n_ctrl: int, n_hvg: int, n_available_controls: int, n_available_genes: int) -> str | None:
    """Why a grid cell cannot be run on these data, or None when it can."""
    reasons = []
    if n_ctrl > n_available_controls:
        reasons.append(f"N_ctrl={n_ctrl} exceeds the {n_available_controls} available control cells")
    if n_hvg > n_available_genes:
        reasons.append(f"HVG={n_hvg} exceeds the {n_available_genes} available genes")
    return "; ".join(reasons) or None


def sensitivity_grid(
    evaluate: Evaluate,
    lfc_thresholds: Sequence[float],
    n_ctrl_values: Sequence[int],
    n_hvg_values: Sequence[int],
    *,
    n_available_controls: int,
    n_available_genes: int,
    alpha: float,
) -> SensitivityGrid:
    """Evaluate every (lfc, n_ctrl, n_hvg) cell of the grid (FRAMEWORK.md A03).

    n_available_controls: control cells in the screen; n_available_genes: genes eligible as HVGs (detected
    in the controls). alpha: level for "gene-level dominance holds" (best baseline beats the best edge score,
    paired Wilcoxon p < alpha and a positive mean difference). Every A03 row is descriptive: the dominance
    comparison picks the best baseline and the best edge score on the data it then tests, and its Wilcoxon
    treats the shared targets as fixed; the confirmatory dominance evidence is A04's (the configured
    setting, every baseline against every edge score, two-way bootstrap).
    """
    cells, chance_frames, rows = [], [], []
    for lfc, n_ctrl, n_hvg in itertools.product(lfc_thresholds, n_ctrl_values, n_hvg_values):
        label = cell_id(lfc, n_ctrl, n_hvg)
        record = {"cell": label, "lfc": float(lfc), "n_ctrl": int(n_ctrl), "n_hvg": int(n_hvg),
                  "status": "evaluated", "reason": None, "n_perturbations": 0}
        reason = skip_reason(n_ctrl, n_hvg, n_available_controls, n_available_genes)
        if reason is not None:
            cells.append({**record, "status": "skipped", "reason": reason})
            continue
        table = evaluate(lfc, n_ctrl, n_hvg)
        missing = [column for column in PF_AUROC_COLUMNS if column not in table.columns]
        if missing:
            raise ValueError(f"evaluate{(lfc, n_ctrl, n_hvg)} returned a table without column(s) {missing}")
        if table.empty:
            cells.append({**record, "status": "empty", "reason": "no evaluable perturbation"})
            continue
        wide = pf_auroc_wide(table)
        record["n_perturbations"] = int(table["perturbation"].nunique())
        shared = _cell_fields(table, lfc, n_ctrl)
        chance = _chance_tests(wide, label)
        chance_frames.append(chance)
        for test in chance.itertuples(index=False):
            key = (test.method, test.layer, test.aggregation)
            rows.append({
                **shared,
                "test_id": f"A03:{label}:{score_key_name(key)}_vs_chance",
                "layer": test.layer if test.layer >= 0 else None,
                "aggregation": test.aggregation,
                "statistic_name": "wilcoxon_W",
                "statistic": test.statistic,
                "effect_name": "mean_pf_auroc",
                "effect": test.mean_auroc,
                "p_value": test.p_value,
                "n": test.n,
                "confirmatory": False,
            })
        dominance, comparison = _dominance(wide, alpha)
        record.update(dominance)
        if comparison is not None:
            rows.append({
                **shared,
                "test_id": f"A03:{label}:gene_level_dominance",
                "statistic_name": "wilcoxon_W",
                "statistic": comparison.statistic,
                "effect_name": (f"mean_pf_auroc_difference({dominance['best_baseline']} - "
                                f"{dominance['best_edge']})"),
                "effect": comparison.effect,
                "p_value": comparison.p_value,
                "n": comparison.n,
                "confirmatory": False,
            })
        cells.append(record)
    cell_frame = pd.DataFrame.from_records(cells, columns=list(SENSITIVITY_CELL_COLUMNS))
    chance_tests = (pd.concat(chance_frames, ignore_index=True) if chance_frames
                    else pd.DataFrame(columns=list(CHANCE_TEST_COLUMNS)))
    return SensitivityGrid(cell_frame, chance_tests, rows)


def hvg_protocol_confound(forced: pd.DataFrame, plain: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """A22: PF AUROC with perturbed genes forced into the universe vs a plain top-N HVG universe.

    forced, plain: per-perturbation PF AUROC tables of the two universes. Per method present in both:
    mean difference forced - plain and paired Wilcoxon on the shared perturbations (finite in both), and
    how many perturbations each protocol evaluates alone (a perturbed gene that is not an HVG is only
    evaluable when forced in). Returns (HVG_CONFOUND_COLUMNS table, registry rows). All rows descriptive:
    A22 characterises a protocol choice, it does not test regulatory signal.
    """
    for name, table in (("forced", forced), ("plain", plain)):
        missing = [column for column in PF_AUROC_COLUMNS if column not in table.columns]
        if missing:
            raise ValueError(f"A22: the {name} PF AUROC table lacks column(s) {missing}")
    if forced.empty or plain.empty:
        raise ValueError(
            f"A22 needs both universes evaluated; forced has {len(forced)} rows, plain {len(plain)}")
    forced_wide, plain_wide = pf_auroc_wide(forced), pf_auroc_wide(plain)
    keys = sorted(set(forced_wide.columns) & set(plain_wide.columns))
    if not keys:
        raise ValueError("A22: the forced and plain PF AUROC tables share no method")
    records, rows = [], []
    for key in keys:
        in_forced = set(forced_wide.index[forced_wide[key].notna()])
        in_plain = set(plain_wide.index[plain_wide[key].notna()])
        shared = sorted(in_forced & in_plain)
        result = paired_wilcoxon(forced_wide[key].loc[shared].to_numpy(),
                                 plain_wide[key].loc[shared].to_numpy())
        records.append({
            "method": key[0], "layer": key[1], "aggregation": key[2], "n_shared": result.n,
            "mean_forced": result.mean_a, "mean_plain": result.mean_b, "mean_difference": result.effect,
            "statistic": result.statistic, "p_value": result.p_value,
            "n_only_forced": len(in_forced - in_plain), "n_only_plain": len(in_plain - in_forced),
        })
        rows.append({
            "analysis_id": "A22",
            "test_id": f"A22:{score_key_name(key)}_forced_vs_plain",
            "family": "X",
            "layer": key[1] if key[1] >= 0 else None,
            "aggregation": key[2],
            "statistic_name": "wilcoxon_W",
            "statistic": result.statistic,
            "effect_name": "mean_pf_auroc_difference(forced - plain universe)",
            "effect": result.effect,
            "p_value": result.p_value,
            "n": result.n,
            "confirmatory": False,
        })
    forced_perturbations = set(forced["perturbation"])
    only_forced = forced_perturbations - set(plain["perturbation"])
    rows.append({
        "analysis_id": "A22",
        "test_id": "A22:perturbations_only_with_forcing",
        "family": "X",
        "statistic_name": "n_perturbations_only_with_forcing",
        "statistic": float(len(only_forced)),
        "effect_name": "share_of_forced_universe_perturbations",
        "effect": len(only_forced) / len(forced_perturbations),
        "n": len(forced_perturbations),
        "confirmatory": False,
    })
    return pd.DataFrame.from_records(records, columns=list(HVG_CONFOUND_COLUMNS)), rows


def _cell_fields(table: pd.DataFrame, lfc: float, n_ctrl: int) -> dict:
    """Fields that tell one grid cell's rows apart in the registry (and in the A24 metric map)."""
    per_perturbation = table.drop_duplicates("perturbation")
    return {
        "analysis_id": "A03",
        "family": "P",
        "n_positives": int(per_perturbation["n_positives"].sum()),
        # evaluable genes seen by the PF table: the largest candidate-target set plus the perturbed gene
        "universe_size": int(per_perturbation["n_targets"].max()) + 1,
        "label_rule": f"|dlog1p|>={lfc:g}, N_ctrl={n_ctrl} (A03 grid; other DE settings as configured)",
    }


def _chance_tests(wide: pd.DataFrame, label: str) -> pd.DataFrame:
    records = []
    for key in sorted(wide.columns):
        result = one_sample_wilcoxon(wide[key].to_numpy(), 0.5)
        records.append({"cell": label, "method": key[0], "layer": int(key[1]), "aggregation": key[2],
                        "n": result.n, "mean_auroc": result.mean_a, "statistic": result.statistic,
                        "p_value": result.p_value})
    return pd.DataFrame.from_records(records, columns=list(CHANCE_TEST_COLUMNS))


def _dominance(wide: pd.DataFrame, alpha: float) -> tuple[dict, PairedComparison | None]:
    """Best baseline vs best edge score (each the highest mean PF AUROC of its kind), paired Wilcoxon.

    Holds when the baseline's mean paired difference is positive and p < alpha; NA (and no comparison)
    when the cell lacks either kind of score."""
    means = wide.mean(axis=0)
    baselines = [key for key in wide.columns if str(key[0]).startswith(BASELINE_PREFIX)]
    edges = [key for key in wide.columns if key[0] in EDGE_METHODS]
    if not baselines or not edges:
        return {"best_baseline": None, "best_edge": None, "dominance_effect": np.nan,
                "dominance_p_value": np.nan, "gene_level_dominance": pd.NA}, None
    # sorted keys + max on the mean: ties go to the first key in sort order
    best_baseline = max(sorted(baselines), key=lambda key: means[key])
    best_edge = max(sorted(edges), key=lambda key: means[key])
    result = paired_wilcoxon(wide[best_baseline].to_numpy(), wide[best_edge].to_numpy())
    return {"best_baseline": score_key_name(best_baseline), "best_edge": score_key_name(best_edge),
            "dominance_effect": result.effect, "dominance_p_value": result.p_value,
            "gene_level_dominance": bool(result.effect > 0 and result.p_value < alpha)}, result
