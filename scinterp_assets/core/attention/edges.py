"""Attention accumulators -> edge tables (FRAMEWORK.md section 4, primary definition)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.edges import NO_HEAD, edges_from_matrix, validate_edges


def evaluable_genes(scores: AttentionScores) -> list[str]:
    """Genes the model actually saw: present in at least one processed cell's tokens (diagonal count > 0)."""
    present = np.diag(scores.count) > 0
    return [gene for gene, seen in zip(scores.genes, present) if seen]


# aggregations over heads tabulated (and ranked) per score: head-max needs each head's scores, which
# value-weighted scores do not keep (FRAMEWORK section 4 averages them over heads)
EDGE_AGGREGATIONS: dict[str, tuple[str, ...]] = {"attention": ("head_mean", "head_max"),
                                                 "value_weighted": ("head_mean",)}


def head_aggregate(scores: AttentionScores, layer: int, aggregation: str) -> tuple[tuple[str, ...], np.ndarray]:
    """One layer's aggregation over heads of the per-head mean score: (row genes, float64 (rows, G) matrix,
    columns `scores.genes`). "head_mean" has a row for every gene (the accumulated head-mean sums); "head_max"
    for the source rows only (each head's mean is kept for those). NaN where never co-present and where a
    gene meets itself."""
    if aggregation == "head_mean":
        return scores.genes, scores.head_mean(layer)
    if aggregation == "head_max":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs (never co-present) stay NaN
            return scores.sources, np.nanmax(scores.mean(layer), axis=0)
    raise ValueError(f"unknown head aggregation {aggregation!r}; choose from head_mean, head_max")


def attention_edge_table(
    scores: AttentionScores, *, method: str = "attention", aggregations: tuple[str, ...] = ("head_mean", "head_max"),
    sources: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per layer, each aggregation over heads (`head_aggregate`) as edges; directed, diagonal excluded. One
    layer is read at a time. `sources` limits the table to edges from those genes (default: every row an
    aggregation has), so it grows with S x G, not G^2. Per-head scores stay in the accumulators
    (L x H x S x G); tabulating them would multiply the table by H."""
    frames = []
    position = {gene: i for i, gene in enumerate(scores.genes)}
    wanted = None if sources is None else set(sources)
    for layer in scores.layers:
        for aggregation in aggregations:
            rows, values = head_aggregate(scores, layer, aggregation)
            if wanted is not None:
                kept = [i for i, gene in enumerate(rows) if gene in wanted]
                rows, values = tuple(rows[i] for i in kept), values[kept]
            if rows:
                frames.append(edges_from_matrix(
                    values, scores.genes, method=method, layer=layer, head=NO_HEAD, aggregation=aggregation,
                    n_cells=scores.count[[position[gene] for gene in rows]], sources=rows))
    return validate_edges(pd.concat(frames, ignore_index=True), name=f"{method} edges")
