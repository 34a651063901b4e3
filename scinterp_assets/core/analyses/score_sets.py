"""Score sets: every edge source turned into a (G, G) matrix over one shared evaluable gene list.

All methods of an analysis are compared on the same genes (FRAMEWORK.md section 2, evaluable set).
Rows are sources (the perturbed gene / the query gene), columns are targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scinterp_assets.core.edges import NO_LAYER


@dataclass(frozen=True)
class ScoreSet:
    """One edge-score variant over `genes`; `matrix` is (G, G) float64 with NaN where undefined."""

    method: str
    layer: int
    aggregation: str
    matrix: np.ndarray

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[0] != self.matrix.shape[1]:
            raise ValueError(f"{self.label}: score matrix must be square (G, G), got {self.matrix.shape}")

    @property
    def label(self) -> str:
        return self.method if self.layer == NO_LAYER else f"{self.method} L{self.layer} {self.aggregation}"


def score_sets_from_edges(edges: pd.DataFrame, genes: list[str]) -> list[ScoreSet]:
    """One ScoreSet per (method, layer, aggregation) found in an edge table, restricted to `genes`."""
    index = pd.Index(genes)
    sets = []
    for (method, layer, aggregation), group in edges.groupby(["method", "layer", "aggregation"], sort=True):
        if aggregation == "head":
            continue  # per-head scores are analysed from the accumulators, not ranked as edge sets here
        rows = index.get_indexer(group["source"])
        columns = index.get_indexer(group["target"])
        inside = (rows >= 0) & (columns >= 0)
        matrix = np.full((len(genes), len(genes)), np.nan)
        matrix[rows[inside], columns[inside]] = group["score"].to_numpy()[inside]
        sets.append(ScoreSet(str(method), int(layer), str(aggregation), matrix))
    return sets


def gene_level_score_sets(features: pd.DataFrame, genes: list[str]) -> list[ScoreSet]:
    """Target-only baselines (A04): the same target ranking for every source."""
    table = features.set_index("gene").loc[genes]
    baselines = {"variance": table["variance"], "mean": table["mean"], "detection_rate": table["detection_rate"]}
    return [
        ScoreSet(f"baseline_{name}", NO_LAYER, "none", np.tile(values.to_numpy(dtype=np.float64), (len(genes), 1)))
        for name, values in baselines.items()
    ]


def random_score_set(n_genes: int, seed: int) -> ScoreSet:
    """Negative control: seeded uniform scores with no relation to anything."""
    return ScoreSet("random", NO_LAYER, "none", np.random.default_rng(seed).random((n_genes, n_genes)))
