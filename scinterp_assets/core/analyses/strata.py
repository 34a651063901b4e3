"""Cell-state strata for CSSI and the scaling ladders (FRAMEWORK A20-A21).

Strata are estimated from a representation of the cells (a model's cell embeddings, or principal components
of log-normalised expression): k-means with K clusters, or Leiden on a kNN graph (scanpy with leidenalg) at
the resolution that yields K communities (found by bisection; the K reached is recorded when none yields
exactly K). Labels are int64 0..K-1 in order of decreasing stratum size, so "the first k strata" are the k
largest.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

STRATA_METHODS = ("kmeans", "leiden")
_BISECTION_STEPS = 24
_RESOLUTION_RANGE = (1e-3, 50.0)


@dataclass(frozen=True)
class Stratification:
    """One partition of the cells. name: e.g. "leiden_k5"; method: kmeans | leiden | oracle | shuffled;
    requested_k / labels.max() + 1 (the K reached); resolution: Leiden's, else None."""

    name: str
    method: str
    requested_k: int | None
    labels: np.ndarray
    resolution: float | None = None

    @property
    def k(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)


def by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel 0..K-1 by decreasing size (ties: by first label), int64."""
    values, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    rank = np.empty(values.size, dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(values.size)
    return rank[inverse.reshape(-1)]


def checked_representation(values: np.ndarray, what: str) -> np.ndarray:
    """float64 (cells, dims) after refusing NaN or infinite entries with one message naming the cells."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{what}: a representation must be (cells, dimensions) and non-empty; got {values.shape}")
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{what}: {int(bad.sum())} of {values.shape[0]} cells have NaN or infinite values (first rows: "
            f"{np.flatnonzero(bad)[:5].tolist()}). Fix: rematerialise cell_embeddings (a checkpoint with non-finite "
            "weights gives such embeddings), or set scaling.representation: expression_pcs")
    return values


def expression_pcs(log_expression: np.ndarray | sparse.spmatrix, n_components: int, seed: int) -> np.ndarray:
    """The first `n_components` principal components (fewer when cells or genes are fewer) of log-normalised
    expression (cells x genes), genes centred, not scaled. Constant genes add nothing."""
    dense = log_expression.toarray() if sparse.issparse(log_expression) else np.asarray(log_expression)
    dense = np.asarray(dense, dtype=np.float64)
    return PCA(n_components=min(n_components, *dense.shape), random_state=seed, svd_solver="full").fit_transform(dense)


def _require_k(k: int, n_cells: int, what: str) -> None:
    if k < 2:
        raise ValueError(f"{what}: K must be >= 2 strata, got {k}")
    if k > n_cells:
        raise ValueError(f"{what}: K={k} strata exceeds the {n_cells} cells. Fix: lower scaling.k_values or raise "
                         "attention.max_cells")


def kmeans_strata(representation: np.ndarray, k: int, seed: int, what: str = "k-means strata") -> Stratification:
    representation = checked_representation(representation, what)
    _require_k(k, representation.shape[0], what)
    with warnings.catch_warnings():  # identical points: fewer distinct clusters than K, which `k` then records
        warnings.simplefilter("ignore")
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(representation)
    return Stratification(f"kmeans_k{k}", "kmeans", k, by_size(labels))


def _neighbour_graph(representation: np.ndarray, n_neighbors: int, seed: int) -> ad.AnnData:
    import scanpy as sc

    cells = ad.AnnData(np.zeros((representation.shape[0], 0), dtype=np.float32))
    cells.obsm["X_representation"] = representation
    sc.pp.neighbors(cells, n_neighbors=min(n_neighbors, representation.shape[0] - 1), use_rep="X_representation",
                    random_state=seed)
    return cells


def _leiden(cells: ad.AnnData, resolution: float, seed: int) -> np.ndarray:
    import scanpy as sc

    with warnings.catch_warnings():  # scanpy announces igraph as its future default; leidenalg is chosen here
        warnings.filterwarnings("ignore", message=".*default backend for leiden", category=FutureWarning)
        sc.tl.leiden(cells, resolution=resolution, random_state=seed, flavor="leidenalg", key_added="stratum")
    return cells.obs["stratum"].cat.codes.to_numpy()


def leiden_strata(representation: np.ndarray, k: int, seed: int, n_neighbors: int = 15,
                  what: str = "Leiden strata") -> Stratification:
    """Leiden communities of the kNN graph at the resolution (bisected on a log scale) that gives K of them,
    or the closest K found."""
    representation = checked_representation(representation, what)
    _require_k(k, representation.shape[0], what)
    cells = _neighbour_graph(representation, n_neighbors, seed)
    low, high = np.log(_RESOLUTION_RANGE[0]), np.log(_RESOLUTION_RANGE[1])
    best = None
    for _ in range(_BISECTION_STEPS):
        resolution = float(np.exp((low + high) / 2))
        labels = _leiden(cells, resolution, seed)
        found = int(labels.max()) + 1
        if best is None or abs(found - k) < abs(best[1].max() + 1 - k):
            best = (resolution, labels)
        if found == k:
            break
        low, high = (np.log(resolution), high) if found < k else (low, np.log(resolution))
    resolution, labels = best
    return Stratification(f"leiden_k{k}", "leiden", k, by_size(labels), resolution)


def estimate_strata(representation: np.ndarray, methods: Sequence[str], k_values: Sequence[int], seed: int,
                    n_neighbors: int = 15, what: str = "strata") -> list[Stratification]:
    """Every (method, K) stratification, in that order; K values above the number of cells are refused."""
    unknown = sorted(set(methods) - set(STRATA_METHODS))
    if unknown:
        raise ValueError(f"{what}: unknown strata methods {unknown}; choose from {STRATA_METHODS}")
    estimated = []
    for method in methods:
        for k in k_values:
            estimated.append(kmeans_strata(representation, k, seed, what) if method == "kmeans"
                             else leiden_strata(representation, k, seed, n_neighbors, what))
    return estimated


def strata_table(cell_ids: Sequence[str], stratifications: Sequence[Stratification]) -> pd.DataFrame:
    """Column `cell` plus one int64 label column per stratification, named by it."""
    table = pd.DataFrame({"cell": [str(cell) for cell in cell_ids]})
    for stratification in stratifications:
        table[stratification.name] = stratification.labels.astype(np.int64)
    return table


def stratifications_from_table(table: pd.DataFrame) -> list[Stratification]:
    """The stratifications of a `strata_table` (names "<method>_k<K>", "oracle" or "shuffled")."""
    result = []
    for name in table.columns.drop("cell"):
        method, _, k = str(name).partition("_k")
        result.append(Stratification(str(name), method, int(k) if k else None, table[name].to_numpy(np.int64)))
    return result
