"""Control-cell sampling, normalisation, the gene universe and gene-level features (FRAMEWORK.md section 3)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

LOG_LAYER = "log1p_norm"


def log_normalize(counts, target_sum: float) -> np.ndarray:
    """log1p(counts / total * target_sum), dense float64 (cells x genes). Totals over all genes given."""
    matrix = sparse.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(sparse.diags(scale) @ matrix).toarray()


def log_expression(matrix, scale: str, target_sum: float) -> np.ndarray:
    """Dense float64 log1p-normalised expression from a screen's X, whatever its `expression_scale`:
    counts and linear normalised values are normalised to target_sum and logged; log1p-normalised values
    are used as they are (never logged twice)."""
    if scale == "log1p_normalized":
        return sparse.csr_matrix(matrix, dtype=np.float64).toarray()
    return log_normalize(matrix, target_sum)


def sample_control_cells(screen: ad.AnnData, n_cells: int, seed: int, target_sum: float) -> ad.AnnData:
    """Seeded sample of (at most) n_cells non-targeting cells, with a log-normalised layer."""
    control_mask = (screen.obs["perturbation"].astype(str) == screen.uns["control_label"]).to_numpy()
    control_index = np.flatnonzero(control_mask)
    rng = np.random.default_rng(seed)
    if len(control_index) > n_cells:
        control_index = np.sort(rng.choice(control_index, size=n_cells, replace=False))
    controls = screen[control_index].copy()
    controls.layers[LOG_LAYER] = log_expression(controls.X, screen.uns.get("expression_scale", "counts"), target_sum)
    controls.uns["control_sampling_seed"] = seed
    return controls


def perturbed_genes(screen: ad.AnnData) -> list[str]:
    """Targets of single-gene perturbations that are genes of the screen, sorted."""
    labels = pd.Index(screen.obs["perturbation"].astype(str).unique())
    return sorted(set(labels) & set(screen.var_names) - {screen.uns["control_label"]})


def select_gene_universe(controls: ad.AnnData, n_hvg: int, forced_genes: list[str]) -> pd.DataFrame:
    """Highly variable genes of the control cells (Seurat dispersion flavour), optionally plus forced genes.

    Returns one row per universe gene (in var order): gene, hvg_rank (1 = most variable, NA if forced only),
    is_hvg, forced.
    """
    import scanpy as sc  # heavy import, only where HVGs are computed

    log_data = ad.AnnData(X=controls.layers[LOG_LAYER], var=pd.DataFrame(index=controls.var_names))
    detected = np.asarray((controls.X > 0).sum(axis=0)).ravel() > 0
    log_data = log_data[:, detected].copy()
    n_top = min(n_hvg, log_data.n_vars)
    sc.pp.highly_variable_genes(log_data, flavor="seurat", n_top_genes=n_top)
    dispersion = log_data.var["dispersions_norm"].fillna(-np.inf)
    ranking = pd.Series(np.arange(1, log_data.n_vars + 1), index=dispersion.sort_values(ascending=False, kind="stable").index)
    hvg = set(ranking.index[:n_top])
    forced = set(forced_genes) & set(controls.var_names)
    members = [gene for gene in controls.var_names if gene in hvg or gene in forced]
    return pd.DataFrame(
        {
            "gene": members,
            "hvg_rank": pd.array([ranking.get(gene) if gene in hvg else pd.NA for gene in members], dtype="Int64"),
            "is_hvg": [gene in hvg for gene in members],
            "forced": [gene in forced and gene not in hvg for gene in members],
        }
    )


def gene_level_features(controls: ad.AnnData, genes: list[str]) -> pd.DataFrame:
    """Target-only baselines (A04): mean, variance and detection rate (1 - dropout) of log1p expression."""
    columns = controls.var_names.get_indexer(genes)
    if (columns < 0).any():
        raise KeyError(f"genes not in the control cells: {[g for g, c in zip(genes, columns) if c < 0][:5]}")
    log_values = controls.layers[LOG_LAYER][:, columns]
    return pd.DataFrame(
        {
            "gene": genes,
            "mean": log_values.mean(axis=0),
            "variance": log_values.var(axis=0, ddof=1),
            "detection_rate": (log_values > 0).mean(axis=0),
        }
    )


def spearman_matrix(values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Spearman correlation between columns of a (cells x genes) matrix, (G, G), or of the `rows` columns
    against every column, (R, G); NaN for constant genes."""
    from scipy.stats import rankdata

    ranks = rankdata(values, axis=0)
    ranks -= ranks.mean(axis=0)
    norms = np.sqrt((ranks**2).sum(axis=0))
    rows = np.arange(ranks.shape[1]) if rows is None else rows
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = (ranks[:, rows].T @ ranks) / np.outer(norms[rows], norms)
    return correlation
