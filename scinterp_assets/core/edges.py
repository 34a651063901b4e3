"""The one edge-table schema every edge source shares (attention, correlation, references, random).

An edge table is a long pandas DataFrame, one row per directed gene pair and score variant:

    source       str     gene the score is read from (attention: the query gene)
    target       str     gene the score points at (attention: the key gene)
    score        float64 the edge score; NaN where undefined (no cell holds both genes)
    layer        int64   model layer, -1 for scores that have no layer (correlation, random)
    head         int64   attention head, -1 for head aggregates and scores without heads
    aggregation  str     "head_mean", "head_max", "head" (one head), or "none"
    method       str     "attention", "correlation", "random", ...
    n_cells      int64   cells that contributed to the score (pair count for attention)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EDGE_COLUMNS: tuple[str, ...] = ("source", "target", "score", "layer", "head", "aggregation", "method", "n_cells")
EDGE_DTYPES: dict[str, str] = {
    "source": "object",
    "target": "object",
    "score": "float64",
    "layer": "int64",
    "head": "int64",
    "aggregation": "object",
    "method": "object",
    "n_cells": "int64",
}
NO_LAYER = -1
NO_HEAD = -1


class EdgeSchemaError(ValueError):
    """An edge table does not follow the shared schema."""


def validate_edges(edges: pd.DataFrame, *, name: str = "edge table") -> pd.DataFrame:
    """Check the shared schema and return the table with canonical column order and dtypes."""
    missing = [c for c in EDGE_COLUMNS if c not in edges.columns]
    if missing:
        raise EdgeSchemaError(f"{name}: missing column(s) {missing}; an edge table needs {list(EDGE_COLUMNS)}")
    table = edges.loc[:, list(EDGE_COLUMNS)].astype(EDGE_DTYPES)
    if (table["source"] == table["target"]).any():
        raise EdgeSchemaError(f"{name}: self edges (source == target) are not scores; drop the diagonal")
    keys = ["source", "target", "layer", "head", "aggregation", "method"]
    if table.duplicated(keys).any():
        raise EdgeSchemaError(f"{name}: duplicate rows for the same {keys}")
    return table.reset_index(drop=True)


def edges_from_matrix(
    matrix: np.ndarray,
    genes: list[str] | tuple[str, ...],
    *,
    method: str,
    layer: int = NO_LAYER,
    head: int = NO_HEAD,
    aggregation: str = "none",
    n_cells: np.ndarray | int,
    sources: list[str] | tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Long edge table from a score matrix, rows = source, columns = target (`genes`), self pairs dropped.

    The rows are `genes` (a (G, G) matrix) or, given `sources`, those S genes ((S, G)). n_cells is a matrix
    of contributing cells of the same shape or a single count for every pair.
    """
    genes = list(genes)
    sources = genes if sources is None else list(sources)
    shape = (len(sources), len(genes))
    if matrix.shape != shape:
        raise EdgeSchemaError(f"score matrix has shape {matrix.shape}, expected {shape}")
    gene_array, source_array = np.asarray(genes, dtype=object), np.asarray(sources, dtype=object)
    source_index, target_index = np.nonzero(source_array[:, None] != gene_array[None, :])
    counts = np.broadcast_to(np.asarray(n_cells, dtype=np.int64), shape)
    return pd.DataFrame(
        {
            "source": source_array[source_index],
            "target": gene_array[target_index],
            "score": np.asarray(matrix, dtype=np.float64)[source_index, target_index],
            "layer": np.int64(layer),
            "head": np.int64(head),
            "aggregation": aggregation,
            "method": method,
            "n_cells": counts[source_index, target_index],
        }
    )
