"""DE ground truth per perturbation (FRAMEWORK.md section 3), vectorised over genes.

For each perturbation with enough cells: a two-sample test of perturbed vs control cells for every universe
gene on log1p-normalised expression (Welch t by default; Mann-Whitney U as the alternative rule),
Benjamini-Hochberg over the universe without the perturbed gene, and a target is positive when
q < q_threshold and |difference of mean log1p| >= min_abs_log_difference (natural-log units). The
perturbed gene's own change (knockdown or activation) is tested the same way and reported separately:
`on_target_status` is "moved" (changed in the direction the modality predicts, p < q_threshold),
"not_moved", "too_few_cells" (fewer than min_cells perturbed cells), or "not_measured" (the target is not
a gene of the screen, e.g. an enhancer).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import stats

from scinterp_assets.core.datasets.preprocessing import LOG_LAYER, log_expression
from scinterp_assets.core.stats.multiple_testing import benjamini_hochberg

DE_LABEL_COLUMNS = ("perturbation", "target", "log_difference", "statistic", "p_value", "q_value", "is_de")
DE_TESTS = ("welch", "mann_whitney")
EXPECTED_ON_TARGET_SIGN = {"CRISPRi": -1.0, "knockout": -1.0, "CRISPRa": 1.0}


@dataclass(frozen=True)
class DELabelRule:
    q_threshold: float
    min_abs_log_difference: float
    min_cells: int
    test: str = "welch"

    def __post_init__(self) -> None:
        if self.test not in DE_TESTS:
            raise ValueError(f"test must be one of {DE_TESTS}, got {self.test!r}")

    def describe(self) -> str:
        """The label rule as written into the test registry."""
        return (f"{self.test} q<{self.q_threshold} |dlog1p|>={self.min_abs_log_difference} "
                f"cells>={self.min_cells}")


@dataclass(frozen=True)
class DELabels:
    """labels: one row per (perturbation, universe target != perturbation), columns DE_LABEL_COLUMNS.
    summary: one row per perturbation: n_cells, n_positives, n_negatives, on_target_log_difference,
    on_target_p_value, on_target_status, tested."""

    labels: pd.DataFrame
    summary: pd.DataFrame


ON_TARGET_STATUSES = ("moved", "not_moved", "too_few_cells", "not_measured")


def on_target_overview(summary: pd.DataFrame) -> tuple[dict[str, int], str]:
    """(perturbations per on-target status, one line for the asset's metadata). The line lists the
    perturbations whose target did not move; it says "none" only when some targets were measured and all of
    those moved, and says so plainly when no target could be measured (then nothing was verified)."""
    counts = {status: int((summary["on_target_status"] == status).sum()) for status in ON_TARGET_STATUSES}
    measured = counts["moved"] + counts["not_moved"]
    if measured == 0:
        return counts, (f"unverified: none of the {len(summary)} perturbed genes could be measured "
                        f"({counts['not_measured']} not among the screen's genes, {counts['too_few_cells']} "
                        "with too few cells)")
    not_moved = summary.loc[summary["on_target_status"] == "not_moved", "perturbation"].astype(str).tolist()
    if not not_moved:
        return counts, f"none: all {measured} measured targets moved"
    return counts, f"{len(not_moved)} of {measured} measured targets did not move: {', '.join(not_moved)}"


def two_sample_test(perturbed: np.ndarray, control: np.ndarray, test: str) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, p) per column of two (cells x genes) matrices; p = 1 where a gene is constant in both."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if test == "welch":
            result = stats.ttest_ind(perturbed, control, axis=0, equal_var=False)
        else:
            result = stats.mannwhitneyu(perturbed, control, axis=0, alternative="two-sided", method="asymptotic")
    p_value = np.where(np.isnan(result.pvalue), 1.0, result.pvalue)
    return np.nan_to_num(np.asarray(result.statistic, dtype=float)), p_value


def compute_de_labels(
    screen: ad.AnnData, controls: ad.AnnData, universe: list[str], rule: DELabelRule, target_sum: float
) -> DELabels:
    control_log_all = controls.layers[LOG_LAYER]
    perturbation = screen.obs["perturbation"].astype(str).to_numpy()
    scale = screen.uns.get("expression_scale", "counts")
    expected_sign = EXPECTED_ON_TARGET_SIGN.get(screen.uns["modality"], -1.0)
    universe_index = pd.Index(universe)
    label_frames, summary_rows = [], []
    for target_gene in sorted(set(perturbation) - {screen.uns["control_label"]}):
        cell_mask = perturbation == target_gene
        n_cells = int(cell_mask.sum())
        measured = target_gene in screen.var_names
        row = {
            "perturbation": target_gene,
            "n_cells": n_cells,
            "n_positives": 0,
            "n_negatives": 0,
            "on_target_log_difference": np.nan,
            "on_target_p_value": np.nan,
            "on_target_status": "not_measured",
            "tested": n_cells >= rule.min_cells,
        }
        if n_cells >= rule.min_cells:
            genes = list(universe) + ([target_gene] if measured and target_gene not in universe_index else [])
            perturbed_log = log_expression(screen.X[cell_mask], scale, target_sum)[:, screen.var_names.get_indexer(genes)]
            control_log = control_log_all[:, controls.var_names.get_indexer(genes)]
            difference = perturbed_log.mean(axis=0) - control_log.mean(axis=0)
            statistic, p_value = two_sample_test(perturbed_log, control_log, rule.test)
            if measured:
                own = genes.index(target_gene)
                row["on_target_log_difference"] = float(difference[own])
                row["on_target_p_value"] = float(p_value[own])
                moved = difference[own] * expected_sign > 0 and p_value[own] < rule.q_threshold
                row["on_target_status"] = "moved" if moved else "not_moved"
            keep = np.asarray([gene != target_gene for gene in universe])
            q_value = benjamini_hochberg(p_value[: len(universe)][keep])
            is_de = (q_value < rule.q_threshold) & (np.abs(difference[: len(universe)][keep]) >= rule.min_abs_log_difference)
            label_frames.append(
                pd.DataFrame(
                    {
                        "perturbation": target_gene,
                        "target": universe_index[keep],
                        "log_difference": difference[: len(universe)][keep],
                        "statistic": statistic[: len(universe)][keep],
                        "p_value": p_value[: len(universe)][keep],
                        "q_value": q_value,
                        "is_de": is_de,
                    }
                )
            )
            row["n_positives"] = int(is_de.sum())
            row["n_negatives"] = int((~is_de).sum())
        elif measured:
            row["on_target_status"] = "too_few_cells"
        summary_rows.append(row)
    labels = pd.concat(label_frames, ignore_index=True) if label_frames else pd.DataFrame(columns=DE_LABEL_COLUMNS)
    return DELabels(labels=labels, summary=pd.DataFrame(summary_rows))


def relabel_within(labels: pd.DataFrame, genes: list[str], rule: DELabelRule) -> pd.DataFrame:
    """The labels a smaller universe would have given: targets restricted to `genes`, BH recomputed over them
    per perturbation from the stored p-values (the tests themselves do not depend on the universe). Labels
    without p-values (a threshold rule such as pseudo-bulk z) keep their calls."""
    inside = labels[labels["target"].isin(genes)].copy()
    if inside["p_value"].isna().all():
        return inside.reset_index(drop=True)
    q_value = inside.groupby("perturbation", sort=False)["p_value"].transform(
        lambda p: pd.Series(benjamini_hochberg(p.to_numpy()), index=p.index))
    inside["q_value"] = q_value
    inside["is_de"] = (q_value < rule.q_threshold) & (inside["log_difference"].abs() >= rule.min_abs_log_difference)
    return inside.reset_index(drop=True)
