"""Attention accumulators -> edge tables (FRAMEWORK.md section 4, primary definition)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.edges import NO_HEAD, edges_from_matrix, validate_edges


def evaluable_genes(scores: AttentionScores) -> list[str]:
    """Genes the model actually saw: present in at least one processed cell's tokens (diagonal count > 0)."""
    present = np.diag(scores.count) > 0
    return [gene for gene, seen in zip(scores.genes, present) if seen]


AGGREGATIONS = {"head_mean": np.nanmean, "head_max": np.nanmax}


def attention_edge_table(
    scores: AttentionScores, *, method: str = "attention", aggregations: tuple[str, ...] = ("head_mean", "head_max")
) -> pd.DataFrame:
    """Per layer, each aggregation over heads of the per-head mean score; directed, diagonal excluded.

    Per-head scores stay in the accumulators (L x H x G x G); tabulating them would multiply the table by H.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs (never co-present) stay NaN
        mean = scores.mean()
        aggregated = {name: AGGREGATIONS[name](mean, axis=1) for name in aggregations}
    frames = [
        edges_from_matrix(values[position], scores.genes, method=method, layer=layer, head=NO_HEAD,
                          aggregation=aggregation, n_cells=scores.count)
        for position, layer in enumerate(scores.layers)
        for aggregation, values in aggregated.items()
    ]
    return validate_edges(pd.concat(frames, ignore_index=True), name=f"{method} edges")
