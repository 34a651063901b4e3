"""Score sets: every edge source turned into a (G, G) matrix over one shared evaluable gene list.

All methods of an analysis are compared on the same genes (FRAMEWORK.md section 2, evaluable set).
Rows are sources (the perturbed gene / the query gene), columns are targets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scinterp_assets.core.attention.edges import EDGE_AGGREGATIONS, head_aggregate
from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.attention.sources import PER_HEAD_AGGREGATIONS, per_head_defined
from scinterp_assets.core.edges import NO_LAYER

BASELINE_PREFIX = "baseline_"  # A04 gene-level baselines from expression (FRAMEWORK section 8, criterion 1)
TF_OUT_DEGREE_PREFIX = "tf_out_degree_"  # A04 counter-example from a TF-target reference (descriptive)


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


def attention_score_sets(scores: AttentionScores, method: str, genes: list[str],
                         ranked_rows: Iterable[str] | None = None) -> list[ScoreSet]:
    """One ScoreSet per layer and head aggregation (EDGE_AGGREGATIONS[method]) of accumulated attention scores,
    restricted to `genes` (entries of `scores.genes`), read from the accumulators one layer at a time: the same
    matrices `score_sets_from_edges` builds from `attention_edge_table`, without the long table (G^2 rows per
    layer and aggregation at the study's shape). Rows outside a head-max's sources stay NaN. `ranked_rows`:
    the genes the analysis ranks targets from; unless every one is a source (`per_head_defined`), per-head
    aggregations are left out and the per-head accumulators never read (None: kept)."""
    index = pd.Index(scores.genes)
    columns = index.get_indexer(genes)
    if (columns < 0).any():
        raise ValueError(f"genes must be among the scores' genes; not there: {list(np.asarray(genes)[columns < 0][:10])}")
    wanted = pd.Index(genes)
    aggregations = EDGE_AGGREGATIONS[method]
    if ranked_rows is not None and not per_head_defined(ranked_rows, scores.sources):
        aggregations = [aggregation for aggregation in aggregations if aggregation not in PER_HEAD_AGGREGATIONS]
    sets = []
    for layer in scores.layers:
        for aggregation in sorted(aggregations):  # the order score_sets_from_edges gives
            row_genes, values = head_aggregate(scores, layer, aggregation)
            rows = wanted.get_indexer(row_genes)
            inside = rows >= 0
            matrix = np.full((len(genes), len(genes)), np.nan)
            matrix[rows[inside]] = np.asarray(values)[inside][:, columns]
            sets.append(ScoreSet(method, int(layer), aggregation, matrix))
    return sets


def model_score_sets(attention: AttentionScores, value_weighted: AttentionScores, genes: list[str],
                     correlation_edges: pd.DataFrame | None = None,
                     ranked_rows: Iterable[str] | None = None) -> list[ScoreSet]:
    """A model's edge score sets over `genes`: attention and value-weighted (from the accumulators; per-head
    aggregations only where defined on `ranked_rows`, see `attention_score_sets`) and, given its edges,
    correlation; in (method, layer, aggregation) order, as `score_sets_from_edges` orders them."""
    ranked_rows = None if ranked_rows is None else set(ranked_rows)  # read twice
    sets = (attention_score_sets(attention, "attention", genes, ranked_rows)
            + attention_score_sets(value_weighted, "value_weighted", genes, ranked_rows))
    if correlation_edges is not None:
        sets += score_sets_from_edges(correlation_edges, genes)
    return sorted(sets, key=lambda score_set: (score_set.method, score_set.layer, score_set.aggregation))


def gene_level_score_sets(features: pd.DataFrame, genes: list[str]) -> list[ScoreSet]:
    """Target-only baselines (A04): the same target ranking for every source."""
    table = features.set_index("gene").loc[genes]
    baselines = {"variance": table["variance"], "mean": table["mean"], "detection_rate": table["detection_rate"]}
    return [
        ScoreSet(f"{BASELINE_PREFIX}{name}", NO_LAYER, "none",
                 _same_for_every_source(values.to_numpy(), len(genes)))
        for name, values in baselines.items()
    ]


def tf_out_degree_score_sets(reference_edges: pd.DataFrame, genes: list[str]) -> list[ScoreSet]:
    """A04 counter-example baseline, one per reference resource with relation "regulates" (TF -> target):
    candidate target t scores its own out-degree as a TF, the number of targets it regulates in that
    reference (as restricted to the universe; 0 for genes that regulate nothing), the same for every source.
    Method "tf_out_degree_<resource>"; [] when no resource has relation "regulates".

    Why the target's out-degree: FRAMEWORK.md lists "TF out-degree" among the target rankings of A04. The
    perturbed gene's own out-degree would be constant within a perturbation (PF AUROC exactly 0.5 by
    construction, so it could show nothing), and the target's in-degree counts its regulators, which
    re-encodes reference membership of (perturbed gene, target) rather than a property of the target alone.
    The target's out-degree is a gene-level property taken from the network instead of from expression:
    where the expression baselines (variance, mean, 1 - dropout) predict DE and this one does not, the
    gene-level dominance comes from how detectable a target's change is, not from any gene property.
    """
    regulates = reference_edges[reference_edges["relation"] == "regulates"]
    sets = []
    for resource, edges in regulates.groupby("resource", sort=True):
        out_degree = edges.drop_duplicates(["source", "target"]).groupby("source").size()
        degrees = out_degree.reindex(genes, fill_value=0).to_numpy()
        sets.append(ScoreSet(f"{TF_OUT_DEGREE_PREFIX}{resource}", NO_LAYER, "none",
                             _same_for_every_source(degrees, len(genes))))
    return sets


def _same_for_every_source(target_values: np.ndarray, n_sources: int) -> np.ndarray:
    return np.tile(np.asarray(target_values, dtype=np.float64), (n_sources, 1))


def random_score_set(n_genes: int, seed: int) -> ScoreSet:
    """Negative control: seeded uniform scores with no relation to anything."""
    return ScoreSet("random", NO_LAYER, "none", np.random.default_rng(seed).random((n_genes, n_genes)))
