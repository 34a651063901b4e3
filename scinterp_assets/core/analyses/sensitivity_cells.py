"""One cell of the A03 grid computed from a screen: the `evaluate(lfc, n_ctrl, n_hvg)` that
`sensitivity.sensitivity_grid` calls.

For each (n_ctrl, n_hvg): a fresh seeded sample of n_ctrl control cells, the top-n_hvg HVG universe of
those controls (perturbed genes forced in as configured), restricted to the genes the model's attention
covers; DE tests of every perturbation over that universe, co-expression and gene-level baselines from
the same controls. The LFC threshold only changes which tested targets count as positives, so the tests
run once per (n_ctrl, n_hvg) and every LFC reuses them. Attention scores come from the configured
extraction (its own control cells): the grid varies what the framework's choices do to the labels,
co-expression and baselines, not the model's input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import anndata as ad
import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter, per_perturbation_auroc
from scinterp_assets.core.analyses.score_sets import ScoreSet, gene_level_score_sets
from scinterp_assets.core.datasets.de_labels import DELabelRule, compute_de_labels
from scinterp_assets.core.datasets.preprocessing import (
    LOG_LAYER,
    gene_level_features,
    sample_control_cells,
    select_gene_universe,
    spearman_matrix,
)
from scinterp_assets.core.edges import NO_LAYER


@dataclass(frozen=True)
class GridSettings:
    """The fixed part of the labels and the filter (FRAMEWORK section 3), and the sampling seed."""

    q_threshold: float
    min_cells: int
    test: str
    min_positives: int
    min_negatives: int
    target_sum: float
    seed: int


def grid_cell_evaluator(screen: ad.AnnData, attention_sets: Sequence[ScoreSet], attention_genes: Sequence[str],
                        forced_genes: Sequence[str], settings: GridSettings):
    """evaluate(lfc, n_ctrl, n_hvg) -> per-perturbation PF AUROC table of attention, correlation and the
    gene-level baselines. attention_sets: score sets over `attention_genes` (the evaluable genes)."""
    position = pd.Index(attention_genes)

    @lru_cache(maxsize=None)
    def tested(n_ctrl: int, n_hvg: int) -> tuple[pd.DataFrame, tuple[str, ...], tuple[ScoreSet, ...]]:
        controls = sample_control_cells(screen, n_ctrl, settings.seed, settings.target_sum)
        universe = set(select_gene_universe(controls, n_hvg, list(forced_genes))["gene"])
        genes = [gene for gene in attention_genes if gene in universe]
        rule = DELabelRule(settings.q_threshold, 0.0, settings.min_cells, settings.test)
        labels = compute_de_labels(screen, controls, genes, rule, settings.target_sum).labels
        values = controls.layers[LOG_LAYER][:, controls.var_names.get_indexer(genes)]
        rows = position.get_indexer(genes)
        score_sets = [ScoreSet(s.method, s.layer, s.aggregation, s.matrix[np.ix_(rows, rows)]) for s in attention_sets]
        score_sets.append(ScoreSet("correlation", NO_LAYER, "none", np.abs(spearman_matrix(values))))
        score_sets += gene_level_score_sets(gene_level_features(controls, genes), genes)
        return labels, tuple(genes), tuple(score_sets)

    def evaluate(lfc: float, n_ctrl: int, n_hvg: int) -> pd.DataFrame:
        labels, genes, score_sets = tested(int(n_ctrl), int(n_hvg))
        relabelled = labels.assign(is_de=(labels["q_value"] < settings.q_threshold)
                                   & (labels["log_difference"].abs() >= lfc))
        return per_perturbation_auroc(relabelled, list(genes), list(score_sets),
                                      PerturbationFilter(settings.min_positives, settings.min_negatives))

    return evaluate
