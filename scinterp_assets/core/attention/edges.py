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


def attention_edge_table(
    scores: AttentionScores, *, method: str = "attention", aggregations: tuple[str, ...] = ("head_mean", "head_max")
) -> pd.DataFrame:
    """Per layer, each aggregation over heads of the per-head mean score; directed, diagonal excluded.

    "head_mean" covers every pair (the accumulated head-mean sums); "head_max" needs each head's mean, kept
    for the source rows only (`scores.sources`), so its edges start at a source. One layer is read at a time.
    Per-head scores stay in the accumulators (L x H x S x G); tabulating them would multiply the table by H.
    """
    unknown = sorted(set(aggregations) - {"head_mean", "head_max"})
    if unknown:
        raise ValueError(f"unknown head aggregation(s) {unknown}; choose from head_mean, head_max")
    frames = []
    for layer in scores.layers:
        if "head_mean" in aggregations:
            frames.append(edges_from_matrix(scores.head_mean(layer), scores.genes, method=method, layer=layer,
                                            head=NO_HEAD, aggregation="head_mean", n_cells=scores.count))
        if "head_max" in aggregations and scores.sources:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs (never co-present) stay NaN
                head_max = np.nanmax(scores.mean(layer), axis=0)
            frames.append(edges_from_matrix(head_max, scores.genes, method=method, layer=layer, head=NO_HEAD,
                                            aggregation="head_max", n_cells=scores.count[scores.source_index],
                                            sources=scores.sources))
    return validate_edges(pd.concat(frames, ignore_index=True), name=f"{method} edges")
