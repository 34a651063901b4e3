"""Screen loading into the platform's screen layout, and count validation.

The screen layout every downstream step consumes (the synthetic simulator writes the same):
    X                    raw counts (cells x genes), scipy CSR float32
    var_names            gene symbols, unique;  var["ensembl_id"] when known
    obs["perturbation"]  target gene symbol, or the control label
    uns["control_label"], uns["modality"]
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse


class ScreenFormatError(ValueError):
    """A screen file cannot be used; the message names the file, the field and the fix."""


def check_raw_counts(matrix, *, source: str, field: str = "X") -> None:
    """Raise ScreenFormatError unless `matrix` holds finite, non-negative counts."""
    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix)
    n_nonfinite = int((~np.isfinite(values)).sum())
    if n_nonfinite:
        raise ScreenFormatError(
            f"{source}: field '{field}' holds {n_nonfinite} non-finite value(s) (NaN or inf); "
            "counts must be finite: re-export the raw UMI counts, or set counts_layer to a layer that holds them"
        )
    n_negative = int((values < 0).sum())
    if n_negative:
        raise ScreenFormatError(
            f"{source}: field '{field}' holds {n_negative} negative value(s); raw counts cannot be negative "
            "(scaled or centred data?): point counts_layer at the raw-count layer"
        )


def load_h5ad_screen(
    path: Path,
    *,
    perturbation_column: str,
    control_label: str,
    modality: str,
    gene_symbol_column: str | None = None,
    ensembl_id_column: str | None = None,
    counts_layer: str | None = None,
) -> ad.AnnData:
    """Read a user's h5ad screen into the screen layout; every problem is a ScreenFormatError."""
    source = str(path)
    try:
        raw = ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as error:
        raise ScreenFormatError(f"{source}: not a readable h5ad file ({error}); re-download or re-export it") from error
    if perturbation_column not in raw.obs.columns:
        raise ScreenFormatError(
            f"{source}: obs has no column '{perturbation_column}' (perturbation_column); "
            f"available: {sorted(raw.obs.columns)[:20]}"
        )
    if counts_layer is not None and counts_layer not in raw.layers:
        raise ScreenFormatError(
            f"{source}: layers has no '{counts_layer}' (counts_layer); available: {sorted(raw.layers)}"
        )
    counts = raw.layers[counts_layer] if counts_layer else raw.X
    field = f"layers['{counts_layer}']" if counts_layer else "X"
    check_raw_counts(counts, source=source, field=field)
    symbols = raw.var[gene_symbol_column].astype(str) if gene_symbol_column else raw.var_names.astype(str)
    if pd.Index(symbols).duplicated().any():
        duplicated = sorted(set(pd.Index(symbols)[pd.Index(symbols).duplicated()]))[:5]
        raise ScreenFormatError(
            f"{source}: duplicate gene names in {gene_symbol_column or 'var_names'} (e.g. {duplicated}); "
            "collapse duplicates or choose a unique gene column"
        )
    perturbation = raw.obs[perturbation_column].astype(str)
    if not (perturbation == control_label).any():
        raise ScreenFormatError(
            f"{source}: no cell has {perturbation_column} == '{control_label}' (control_label); "
            f"most common labels: {perturbation.value_counts().index[:5].tolist()}"
        )
    var = pd.DataFrame(index=pd.Index(symbols.to_numpy(), name=None))
    if ensembl_id_column:
        if ensembl_id_column not in raw.var.columns:
            raise ScreenFormatError(f"{source}: var has no column '{ensembl_id_column}' (ensembl_id_column)")
        var["ensembl_id"] = raw.var[ensembl_id_column].astype(str).to_numpy()
    screen = ad.AnnData(
        X=sparse.csr_matrix(counts, dtype=np.float32),
        obs=pd.DataFrame({"perturbation": perturbation.to_numpy()}, index=raw.obs_names.astype(str)),
        var=var,
    )
    screen.uns["control_label"] = control_label
    screen.uns["modality"] = modality
    return screen


def cell_qc_frame(screen: ad.AnnData) -> pd.DataFrame:
    """Per-cell QC table validated by the `expression_qc` contract."""
    counts = sparse.csr_matrix(screen.X)
    data = counts.data
    row_of_value = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    finite = np.isfinite(data)
    n_nonfinite = np.bincount(row_of_value[~finite], minlength=counts.shape[0])
    clean = np.where(finite, data, 0.0)
    minimum = np.zeros(counts.shape[0])
    np.minimum.at(minimum, row_of_value, clean)
    return pd.DataFrame(
        {
            "cell_id": screen.obs_names.astype(str),
            "perturbation": screen.obs["perturbation"].astype(str).to_numpy(),
            "total_counts": np.bincount(row_of_value, weights=clean, minlength=counts.shape[0]),
            "n_genes_detected": np.bincount(row_of_value[clean > 0], minlength=counts.shape[0]),
            "min_value": minimum,
            "n_nonfinite": n_nonfinite,
        }
    )
