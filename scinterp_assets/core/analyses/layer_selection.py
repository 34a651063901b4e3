"""A02: per-layer PF AUROC profile and layer selection by nested cross-validation.

Picking the best layer on the evaluation data and reporting its AUROC is optimistic (FRAMEWORK.md
section 4). Choosing it on other perturbations is not enough either: every perturbation ranks the same
target genes, so a layer whose target-level preferences happen to match this screen's DE targets wins on
the training perturbations and again on the held-out ones. Here selection and evaluation are separated
along both axes: perturbations are split into K outer folds and target genes into K target folds (the
target folds of `resampled_pf_auroc`); for held-out block (perturbation fold i, target fold j) the layer is
chosen on the perturbations outside i scored over the targets outside j, and scored on block (i, j) only.

Conventions
- One selection per attention variant (method in ATTENTION_METHODS x aggregation).
- Cells: a perturbation's AUROC over the targets of one target fold (NaN where the cell lacks a DE or a
  non-DE target; such cells are left out of every mean).
- Outer folds: sklearn `KFold(n_folds, shuffle=True, random_state=seed)` over the sorted perturbations.
- Selection inside a training block: the layer with the highest mean cell AUROC (cells averaged within a
  perturbation, then over perturbations); exact ties go to the lowest layer (the earliest layer is the
  cheaper read-out and the conservative choice).
- The comparison with correlation is on the same held-out cells: mean difference over perturbations with
  the two-way bootstrap (perturbations x targets) interval and p of `perturbation_prediction`; the
  selections are held fixed in the resamples (they were made on other blocks). A cell holds a fifth of a
  perturbation's targets, often a single DE one: a resample that drops it leaves the cell out of that
  resample's mean, which widens the interval (the calibration in benchmarks/README.md includes this).
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
    PFResamples,
    observed_perturbation_mean,
    pf_auroc_wide,
    perturbation_mean,
    score_key_name,
)
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.bootstrap import BootstrapTest, wald_test

CORRELATION = ("correlation", NO_LAYER, "none")
LAYER_PROFILE_COLUMNS = ("method", "aggregation", "layer", "mean_auroc", "sd_auroc", "n_perturbations")
NESTED_CV_COLUMNS = ("perturbation", "outer_fold", "target_fold", "selected_layer", "selected_auroc",
                     "correlation_auroc")


@dataclass(frozen=True)
class NestedLayerSelection:
    """Nested-CV layer selection for one attention variant.

    per_cell: one row per (held-out perturbation, target fold) (NESTED_CV_COLUMNS): its outer fold, the layer
    chosen for its block, its cell AUROC at that layer and with correlation.
    selection_counts: layer -> number of (outer fold, target fold) blocks that chose it (every layer listed).
    mean_selected_auroc: mean held-out cell AUROC of the chosen layers (the reported statistic).
    effect, test: mean difference from correlation on the same cells, two-way bootstrap interval and p.
    """

    method: str
    aggregation: str
    layers: tuple[int, ...]
    n_folds: int
    seed: int
    per_cell: pd.DataFrame
    selection_counts: dict[int, int]
    mean_selected_auroc: float
    effect: float
    test: BootstrapTest

    def __post_init__(self) -> None:
        if sum(self.selection_counts.values()) != self.n_folds ** 2:
            raise ValueError(
                f"selection counts {self.selection_counts} do not add up to {self.n_folds}^2 blocks")

    @property
    def name(self) -> str:
        return f"{self.method}_{self.aggregation}"

    @property
    def n_perturbations(self) -> int:
        return int(self.per_cell["perturbation"].nunique())

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
        values, layers = _variant_matrix(pf_auroc, method, aggregation)
        frames.append(pd.DataFrame({
            "method": method, "aggregation": aggregation, "layer": list(layers),
            "mean_auroc": values.mean(axis=0),
            "sd_auroc": values.std(axis=0, ddof=1) if len(values) > 1 else np.nan,
            "n_perturbations": len(values),
        }))
    return pd.concat(frames, ignore_index=True).loc[:, list(LAYER_PROFILE_COLUMNS)]


def nested_cv_layer_selection(
    resamples: PFResamples, method: str, aggregation: str, *, seed: int, alpha: float = 0.05
) -> NestedLayerSelection:
    """Choose the layer on each training block, score it on the held-out block (module docstring).

    resamples: `resampled_pf_auroc` of this variant's layers and correlation with K target folds; K is
    also the number of outer perturbation folds. Raises ValueError when fewer perturbations than folds are
    evaluable.
    """
    n_folds = resamples.n_folds
    columns, layers = _layer_columns(resamples, method, aggregation)
    correlation = resamples.column(CORRELATION)
    n_perturbations = len(resamples.perturbations)
    if n_folds < 2 or n_perturbations < n_folds:
        raise ValueError(
            f"A02 nested CV with {n_folds} outer and target folds needs at least 2 folds and {n_folds} evaluable "
            f"perturbations; got {n_perturbations} perturbations"
        )
    cells = resamples.point[..., columns]  # (P, K, L)
    outer_fold = np.empty(n_perturbations, dtype=np.int64)
    chosen = np.empty((n_perturbations, n_folds), dtype=np.int64)
    counts = dict.fromkeys(layers, 0)
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(np.arange(n_perturbations))):
        outer_fold[test] = fold
        for target_fold in range(n_folds):
            others = np.arange(n_folds) != target_fold
            per_layer = np.array([observed_perturbation_mean(cells[train][:, others, k]) for k in range(len(layers))])
            # argmax returns the first maximum and layers are ascending: exact ties go to the lowest layer
            best = int(np.argmax(np.where(np.isfinite(per_layer), per_layer, -np.inf)))
            chosen[test, target_fold] = best
            counts[layers[best]] += 1
    rows, folds = np.meshgrid(np.arange(n_perturbations), np.arange(n_folds), indexing="ij")
    selected_columns = np.asarray(columns)[chosen]
    selected_point = resamples.point[rows, folds, selected_columns]
    selected_replicates = resamples.replicates[:, rows, folds, selected_columns]
    correlation_point = resamples.point[..., correlation]
    effect, replicated = perturbation_mean(resamples, selected_point - correlation_point,
                                           selected_replicates - resamples.replicates[..., correlation])
    per_cell = pd.DataFrame({
        "perturbation": np.asarray(resamples.perturbations, dtype=object)[rows.ravel()],
        "outer_fold": outer_fold[rows.ravel()],
        "target_fold": folds.ravel(),
        "selected_layer": np.asarray(layers, dtype=np.int64)[chosen.ravel()],
        "selected_auroc": selected_point.ravel(),
        "correlation_auroc": correlation_point.ravel(),
    })
    mean_selected = observed_perturbation_mean(selected_point)
    return NestedLayerSelection(method, aggregation, layers, n_folds, seed, per_cell, counts, mean_selected,
                                effect, wald_test(effect, replicated, alpha))


def bonferroni(p_value: float, n_tests: int) -> float:
    """p * n_tests capped at 1 (NaN stays NaN)."""
    return float(min(1.0, p_value * n_tests)) if np.isfinite(p_value) else float("nan")


def layer_selection_tests(pf_auroc: pd.DataFrame, resamples: PFResamples, *, seed: int,
                          alpha: float = 0.05) -> list[dict]:
    """Registry rows (without shared fields) for A02, for every attention variant:

    - "A02:{method}_{aggregation}_nested_cv_vs_correlation" (confirmatory): statistic = mean held-out cell
      AUROC of the selected layers, effect = its mean difference from correlation on the same cells,
      two-way bootstrap interval and p (module docstring).
    - "A02:{method}_{aggregation}_nested_cv_selection_stability" (descriptive): statistic = share of the
      K x K blocks choosing the modal layer (in `layer`), effect = number of distinct layers chosen.
    - "A02:{method}_L{l}_{aggregation}_vs_correlation_bonferroni" per layer (descriptive): statistic = the
      layer's mean PF AUROC (the profile, whole perturbations), effect = its mean cell AUROC difference from
      correlation, p_value = the two-way bootstrap p times the number of layers (Bonferroni), capped at 1.
    Never the best layer's AUROC on the evaluation perturbations.
    pf_auroc: the per-perturbation PF AUROC table; resamples: `resampled_pf_auroc` of the same labels with K
    target folds (K = the outer folds).
    """
    rows: list[dict] = []
    n_positives = int(resamples.n_positives.sum())
    profile = layer_profile(pf_auroc).set_index(["method", "aggregation", "layer"])["mean_auroc"]
    for method, aggregation in _require_variants(pf_auroc):
        selection = nested_cv_layer_selection(resamples, method, aggregation, seed=seed, alpha=alpha)
        n_blocks = selection.n_folds ** 2
        rows.append({
            "analysis_id": "A02",
            "test_id": f"A02:{selection.name}_nested_cv_vs_correlation",
            "family": "P",
            "aggregation": aggregation,
            "statistic_name": "nested_cv_mean_pf_auroc",
            "statistic": selection.mean_selected_auroc,
            "effect_name": f"mean_pf_auroc_difference(nested_cv_{selection.name} - correlation)",
            "effect": selection.effect,
            "ci_low": selection.test.ci_low,
            "ci_high": selection.test.ci_high,
            "p_value": selection.test.p_value,
            "n": selection.n_perturbations,
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
            "statistic": selection.selection_counts[modal] / n_blocks,
            "effect_name": "n_distinct_layers_selected",
            "effect": float(sum(count > 0 for count in selection.selection_counts.values())),
            "n": n_blocks,
            "n_positives": n_positives,
            "confirmatory": False,
            "seed": seed,
        })
        for layer in selection.layers:
            key = (method, layer, aggregation)
            effect, replicated = resamples.mean_difference(key, CORRELATION)
            test = wald_test(effect, replicated, alpha)
            name = score_key_name(key)
            rows.append({
                "analysis_id": "A02",
                "test_id": f"A02:{name}_vs_correlation_bonferroni",
                "family": "P",
                "layer": layer,
                "aggregation": aggregation,
                "statistic_name": "mean_pf_auroc",
                "statistic": float(profile[(method, aggregation, layer)]),
                "effect_name": f"mean_target_fold_auroc_difference({name} - correlation)",
                "effect": effect,
                "p_value": bonferroni(test.p_value, len(selection.layers)),
                "n": len(resamples.perturbations),
                "n_positives": n_positives,
                "confirmatory": False,
            })
    return rows


def _layer_keys(available: list[tuple], method: str, aggregation: str, source: str) -> list[tuple]:
    """The variant's layer keys in layer order, after checking that they and correlation are in `source`."""
    keys = sorted((key for key in available if key[0] == method and key[2] == aggregation and key[1] != NO_LAYER),
                  key=lambda key: key[1])
    if not keys:
        raise ValueError(f"A02: no layers of {method}/{aggregation} in the {source}")
    if CORRELATION not in available:
        raise ValueError(f"A02 compares with correlation, but the {source} has no correlation")
    return keys


def _layer_columns(resamples: PFResamples, method: str, aggregation: str) -> tuple[list[int], tuple[int, ...]]:
    keys = _layer_keys(list(resamples.keys), method, aggregation, "resampled PF AUROC")
    return [resamples.column(key) for key in keys], tuple(int(key[1]) for key in keys)


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


def _variant_matrix(pf_auroc: pd.DataFrame, method: str, aggregation: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """(perturbations x layers) PF AUROC and the layers, on perturbations complete for every layer and
    correlation, sorted by name."""
    _check_columns(pf_auroc)
    wide = pf_auroc_wide(pf_auroc)
    keys = _layer_keys(list(wide.columns), method, aggregation, "PF AUROC table")
    frame = wide[keys + [CORRELATION]].sort_index()
    frame = frame[np.isfinite(frame.to_numpy(dtype=np.float64)).all(axis=1)]
    return frame[keys].to_numpy(dtype=np.float64), tuple(int(key[1]) for key in keys)
