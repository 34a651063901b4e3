"""A02: per-layer PF AUROC profile and layer selection by nested cross-validation over perturbations.

Picking the best layer on the evaluation data and reporting its AUROC is optimistic (FRAMEWORK.md
section 4). Here the layer is chosen on the training perturbations of each outer fold and scored on the
held-out perturbations only; the reported number is the mean held-out PF AUROC of the chosen layers,
pooled over folds and compared with correlation on the same perturbations (paired Wilcoxon).

Conventions
- One selection per attention variant (method in ATTENTION_METHODS x aggregation); layers are the
  variant's layers in the per-perturbation PF AUROC table (`per_perturbation_auroc`).
- Perturbations: those with a finite PF AUROC for every layer of the variant and for correlation
  (complete cases), so profile, per-layer tests and the nested CV all use one perturbation set.
- Outer folds: sklearn `KFold(n_folds, shuffle=True, random_state=seed)` over the sorted perturbations.
- Selection inside a training set: the layer with the highest mean PF AUROC; exact ties go to the
  lowest layer (the earliest layer is the cheaper read-out and the conservative choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

# One naming convention for score sets across the registry (A01 test ids use it too).
from scinterp_assets.core.analyses.perturbation_prediction import (
    ATTENTION_METHODS,
    PF_AUROC_COLUMNS,
    pf_auroc_wide,
    score_key_name,
)
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.paired import PairedComparison, paired_wilcoxon

CORRELATION = ("correlation", NO_LAYER, "none")
LAYER_PROFILE_COLUMNS = ("method", "aggregation", "layer", "mean_auroc", "sd_auroc", "n_perturbations")
NESTED_CV_COLUMNS = ("perturbation", "outer_fold", "selected_layer", "selected_auroc", "correlation_auroc")


@dataclass(frozen=True)
class NestedLayerSelection:
    """Nested-CV layer selection for one attention variant.

    per_perturbation: one row per held-out perturbation (NESTED_CV_COLUMNS): its outer fold, the layer
    chosen on that fold's training perturbations, its PF AUROC at that layer and with correlation.
    selection_counts: layer -> number of outer folds that chose it (every layer of the variant listed).
    comparison: paired Wilcoxon of selected_auroc vs correlation_auroc over all held-out perturbations.
    """

    method: str
    aggregation: str
    layers: tuple[int, ...]
    n_folds: int
    seed: int
    per_perturbation: pd.DataFrame
    selection_counts: dict[int, int]
    comparison: PairedComparison

    def __post_init__(self) -> None:
        if sum(self.selection_counts.values()) != self.n_folds:
            raise ValueError(
                f"selection counts {self.selection_counts} do not add up to {self.n_folds} folds")

    @property
    def name(self) -> str:
        return f"{self.method}_{self.aggregation}"

    @property
    def mean_selected_auroc(self) -> float:
        """The reported statistic: mean held-out PF AUROC of the layers chosen in the outer folds."""
        return float(self.per_perturbation["selected_auroc"].mean())

    @property
    def modal_layer(self) -> int:
        """The most often chosen layer (ties -> lowest)."""
        return max(self.layers, key=lambda layer: (self.selection_counts[layer], -layer))


def attention_variants(pf_auroc: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, aggregation) of every attention score set that has layers, sorted."""
    _check_columns(pf_auroc)
    layered = pf_auroc[pf_auroc["method"].isin(ATTENTION_METHODS) & (pf_auroc["layer"] != NO_LAYER)]
    return sorted({(str(m), str(a)) for m, a in zip(layered["method"], layered["aggregation"])})


def layer_profile(pf_auroc: pd.DataFrame) -> pd.DataFrame:
    """Mean (and SD) PF AUROC per layer for every attention variant, on the variant's complete cases.

    Returns LAYER_PROFILE_COLUMNS, one row per (method, aggregation, layer), layers ascending.
    """
    frames = []
    for method, aggregation in _require_variants(pf_auroc):
        values, layers, _, _ = _variant_matrix(pf_auroc, method, aggregation)
        frames.append(pd.DataFrame({
            "method": method, "aggregation": aggregation, "layer": list(layers),
            "mean_auroc": values.mean(axis=0),
            "sd_auroc": values.std(axis=0, ddof=1) if len(values) > 1 else np.nan,
            "n_perturbations": len(values),
        }))
    return pd.concat(frames, ignore_index=True).loc[:, list(LAYER_PROFILE_COLUMNS)]


def nested_cv_layer_selection(
    pf_auroc: pd.DataFrame, method: str, aggregation: str, *, seed: int, n_folds: int = 5
) -> NestedLayerSelection:
    """Choose the layer on each outer training set, score it on the outer test perturbations.

    pf_auroc: the per-perturbation PF AUROC table (PF_AUROC_COLUMNS) with this variant's layers and
    correlation. n_folds: outer folds over perturbations (FRAMEWORK.md A02: 5). Raises ValueError when
    fewer perturbations than folds are evaluable.
    """
    values, layers, correlation, perturbations = _variant_matrix(pf_auroc, method, aggregation)
    if len(perturbations) < n_folds:
        raise ValueError(
            f"A02 nested CV with {n_folds} outer folds needs at least {n_folds} perturbations with a "
            f"PF AUROC for every layer of {method}/{aggregation} and for correlation; "
            f"got {len(perturbations)}"
        )
    outer_fold = np.empty(len(perturbations), dtype=np.int64)
    chosen_index = np.empty(len(perturbations), dtype=np.int64)
    counts = dict.fromkeys(layers, 0)
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(perturbations)):
        # argmax returns the first maximum and layers are ascending: exact ties go to the lowest layer
        best = int(np.argmax(values[train].mean(axis=0)))
        outer_fold[test] = fold
        chosen_index[test] = best
        counts[layers[best]] += 1
    rows = np.arange(len(perturbations))
    selected = values[rows, chosen_index]
    per_perturbation = pd.DataFrame({
        "perturbation": perturbations,
        "outer_fold": outer_fold,
        "selected_layer": np.asarray(layers, dtype=np.int64)[chosen_index],
        "selected_auroc": selected,
        "correlation_auroc": correlation,
    })
    return NestedLayerSelection(method, aggregation, layers, n_folds, seed, per_perturbation, counts,
                                paired_wilcoxon(selected, correlation))


def bonferroni(p_value: float, n_tests: int) -> float:
    """p * n_tests capped at 1 (NaN stays NaN)."""
    return float(min(1.0, p_value * n_tests)) if np.isfinite(p_value) else float("nan")


def layer_selection_tests(pf_auroc: pd.DataFrame, *, seed: int, n_folds: int = 5) -> list[dict]:
    """Registry rows (without shared fields) for A02, for every attention variant:

    - "A02:{method}_{aggregation}_nested_cv_vs_correlation" (confirmatory): statistic = mean held-out PF
      AUROC of the nested-CV-selected layers, effect = its mean paired difference from correlation,
      p = paired Wilcoxon over the pooled held-out perturbations.
    - "A02:{method}_{aggregation}_nested_cv_selection_stability" (descriptive): statistic = share of outer
      folds choosing the modal layer (in `layer`), effect = number of distinct layers chosen.
    - "A02:{method}_L{l}_{aggregation}_vs_correlation_bonferroni" per layer (descriptive): statistic =
      the layer's mean PF AUROC (the profile), effect = difference from correlation, p_value = Bonferroni
      across the variant's layers (raw Wilcoxon p * n_layers, capped at 1; the raw p is A01's).
    Never the best layer's AUROC on the evaluation perturbations.
    """
    rows: list[dict] = []
    for method, aggregation in _require_variants(pf_auroc):
        values, layers, correlation, perturbations = _variant_matrix(pf_auroc, method, aggregation)
        n_positives = _positives(pf_auroc, perturbations)
        selection = nested_cv_layer_selection(pf_auroc, method, aggregation, seed=seed, n_folds=n_folds)
        result = selection.comparison
        rows.append({
            "analysis_id": "A02",
            "test_id": f"A02:{selection.name}_nested_cv_vs_correlation",
            "family": "P",
            "aggregation": aggregation,
            "statistic_name": "nested_cv_mean_pf_auroc",
            "statistic": selection.mean_selected_auroc,
            "effect_name": f"mean_pf_auroc_difference(nested_cv_{selection.name} - correlation)",
            "effect": result.effect,
            "p_value": result.p_value,
            "n": result.n,
            "n_positives": n_positives,
            "confirmatory": True,
            "seed": seed,
        })
        modal = selection.modal_layer
        rows.append({
            "analysis_id": "A02",
            "test_id": f"A02:{selection.name}_nested_cv_selection_stability",
            "family": "P",
            "layer": modal,
            "aggregation": aggregation,
            "statistic_name": "modal_layer_selection_share",
            "statistic": selection.selection_counts[modal] / n_folds,
            "effect_name": "n_distinct_layers_selected",
            "effect": float(sum(count > 0 for count in selection.selection_counts.values())),
            "n": n_folds,
            "n_positives": n_positives,
            "confirmatory": False,
            "seed": seed,
        })
        for column, layer in enumerate(layers):
            per_layer = paired_wilcoxon(values[:, column], correlation)
            name = score_key_name((method, layer, aggregation))
            rows.append({
                "analysis_id": "A02",
                "test_id": f"A02:{name}_vs_correlation_bonferroni",
                "family": "P",
                "layer": layer,
                "aggregation": aggregation,
                "statistic_name": "mean_pf_auroc",
                "statistic": per_layer.mean_a,
                "effect_name": f"mean_pf_auroc_difference({name} - correlation)",
                "effect": per_layer.effect,
                "p_value": bonferroni(per_layer.p_value, len(layers)),
                "n": per_layer.n,
                "n_positives": n_positives,
                "confirmatory": False,
            })
    return rows


def _check_columns(pf_auroc: pd.DataFrame) -> None:
    missing = [column for column in PF_AUROC_COLUMNS if column not in pf_auroc.columns]
    if missing:
        raise ValueError(f"PF AUROC table lacks column(s) {missing}; expected {list(PF_AUROC_COLUMNS)}")


def _require_variants(pf_auroc: pd.DataFrame) -> list[tuple[str, str]]:
    variants = attention_variants(pf_auroc)
    if not variants:
        found = sorted(pf_auroc["method"].astype(str).unique())
        raise ValueError(
            f"A02 needs attention scores with layers (method in {ATTENTION_METHODS}, layer != {NO_LAYER}); "
            f"the PF AUROC table has methods {found}"
        )
    return variants


def _variant_matrix(
    pf_auroc: pd.DataFrame, method: str, aggregation: str
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray, np.ndarray]:
    """(perturbations x layers) PF AUROC, the layers, correlation's PF AUROC and the perturbations,
    on perturbations complete for every layer and correlation, sorted by name."""
    _check_columns(pf_auroc)
    wide = pf_auroc_wide(pf_auroc)
    keys = sorted((key for key in wide.columns if key[0] == method and key[2] == aggregation
                   and key[1] != NO_LAYER), key=lambda key: key[1])
    if not keys:
        raise ValueError(f"A02: no layers of {method}/{aggregation} in the PF AUROC table")
    if CORRELATION not in wide.columns:
        raise ValueError("A02 compares with correlation, but the PF AUROC table has no correlation rows")
    frame = wide[keys + [CORRELATION]].sort_index()
    frame = frame[np.isfinite(frame.to_numpy(dtype=np.float64)).all(axis=1)]
    values = frame[keys].to_numpy(dtype=np.float64)
    layers = tuple(int(key[1]) for key in keys)
    return values, layers, frame[CORRELATION].to_numpy(dtype=np.float64), frame.index.to_numpy()


def _positives(pf_auroc: pd.DataFrame, perturbations: np.ndarray) -> int:
    used = pf_auroc[pf_auroc["perturbation"].isin(perturbations)].drop_duplicates("perturbation")
    return int(used["n_positives"].sum())
