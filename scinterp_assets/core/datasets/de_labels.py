"""DE ground truth per perturbation (FRAMEWORK.md section 3), vectorised over genes.

For each perturbation with enough cells: Welch t-test of perturbed vs control cells for every universe
gene (log1p of normalised counts), Benjamini-Hochberg over the universe without the perturbed gene, and
a target is positive when q < q_threshold and |difference of mean log1p| >= min_abs_log_difference
(natural-log units). The perturbed gene's own change is reported separately as the on-target effect.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import stats

from scinterp_assets.core.datasets.preprocessing import LOG_LAYER, log_normalize
from scinterp_assets.core.stats.multiple_testing import benjamini_hochberg

DE_LABEL_COLUMNS = ("perturbation", "target", "log_difference", "t_statistic", "p_value", "q_value", "is_de")


@dataclass(frozen=True)
class DELabelRule:
    q_threshold: float
    min_abs_log_difference: float
    min_cells: int


@dataclass(frozen=True)
class DELabels:
    """labels: one row per (perturbation, universe target != perturbation), columns DE_LABEL_COLUMNS.
    summary: one row per perturbation: n_cells, n_positives, n_negatives, on_target_log_difference,
    on_target_moved (its own expression changed in the direction the modality predicts), tested."""

    labels: pd.DataFrame
    summary: pd.DataFrame


def compute_de_labels(
    screen: ad.AnnData, controls: ad.AnnData, universe: list[str], rule: DELabelRule, target_sum: float
) -> DELabels:
    control_log_all = controls.layers[LOG_LAYER]
    control_log = control_log_all[:, controls.var_names.get_indexer(universe)]
    control_mean = control_log.mean(axis=0)
    perturbation = screen.obs["perturbation"].astype(str).to_numpy()
    modality = screen.uns["modality"]
    expected_sign = -1.0 if modality in ("CRISPRi", "knockout") else 1.0
    universe_index = pd.Index(universe)
    screen_columns = screen.var_names.get_indexer(universe)
    label_frames, summary_rows = [], []
    for target_gene in sorted(set(perturbation) - {screen.uns["control_label"]}):
        cell_mask = perturbation == target_gene
        n_cells = int(cell_mask.sum())
        perturbed_log_all = log_normalize(screen.X[cell_mask], target_sum)
        on_target = np.nan
        if target_gene in screen.var_names:
            own = perturbed_log_all[:, screen.var_names.get_loc(target_gene)].mean()
            on_target = float(own - control_log_all[:, controls.var_names.get_loc(target_gene)].mean())
        row = {
            "perturbation": target_gene,
            "n_cells": n_cells,
            "n_positives": 0,
            "n_negatives": 0,
            "on_target_log_difference": on_target,
            "on_target_moved": bool(np.isfinite(on_target) and on_target * expected_sign > 0),
            "tested": n_cells >= rule.min_cells,
        }
        if n_cells >= rule.min_cells:
            perturbed_log = perturbed_log_all[:, screen_columns]
            keep = universe_index != target_gene
            difference = perturbed_log.mean(axis=0) - control_mean
            with np.errstate(invalid="ignore", divide="ignore"):
                test = stats.ttest_ind(perturbed_log, control_log, axis=0, equal_var=False)
            p_value = np.where(np.isnan(test.pvalue), 1.0, test.pvalue)[keep]
            q_value = benjamini_hochberg(p_value)
            is_de = (q_value < rule.q_threshold) & (np.abs(difference[keep]) >= rule.min_abs_log_difference)
            label_frames.append(
                pd.DataFrame(
                    {
                        "perturbation": target_gene,
                        "target": universe_index[keep],
                        "log_difference": difference[keep],
                        "t_statistic": np.nan_to_num(test.statistic[keep]),
                        "p_value": p_value,
                        "q_value": q_value,
                        "is_de": is_de,
                    }
                )
            )
            row["n_positives"] = int(is_de.sum())
            row["n_negatives"] = int((~is_de).sum())
        summary_rows.append(row)
    labels = pd.concat(label_frames, ignore_index=True) if label_frames else pd.DataFrame(columns=DE_LABEL_COLUMNS)
    return DELabels(labels=labels, summary=pd.DataFrame(summary_rows))
