"""Replogle 2022 pseudo-bulk files and perturbation tables: the study's own per-perturbation summaries.

Pseudo-bulk h5ad files on figshare (`K562_essential_normalized_bulk_01.h5ad`, `..._raw_bulk_01.h5ad`)
hold one row per perturbation (sgRNA pair) and one column per gene: the mean over the perturbation's
cells, of z-scores against the same GEM group's control cells ("normalized") or of UMI counts ("raw").
Row names (and Table S2's `genetic perturbation` column) are `<N>_<GENE>_<TRANSCRIPT>_<ENSG>`, with
`non-targeting` in the three last fields for control pairs.

They carry no single cells, so they cannot be a cell type on their own (attention needs control cells).
They can supply the DE ground truth of a single-cell screen of the same experiment: a target is positive
when the perturbation's mean z-score has |z| >= min_abs_z (`pseudobulk_de_labels`). That rule is a
different label rule from FRAMEWORK section 3's Welch test and is recorded as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from scinterp_assets.core.datasets.de_labels import DE_LABEL_COLUMNS, EXPECTED_ON_TARGET_SIGN, DELabels
from scinterp_assets.core.datasets.screens import ScreenFormatError, read_h5ad

CONTROL_FIELD = "non-targeting"


def parse_perturbation_ids(ids: pd.Series | list[str], *, source: str) -> pd.DataFrame:
    """`<N>_<GENE>_<TRANSCRIPT>_<ENSG>` -> columns perturbation_id, gene, transcript, ensembl_id, is_control.
    Gene symbols may themselves hold underscores: the number is the first field and the last two fields are
    the transcript and the Ensembl id."""
    values = pd.Series(ids, dtype=str).reset_index(drop=True)
    parts = values.str.split("_")
    malformed = parts.str.len() < 4
    if malformed.any():
        raise ScreenFormatError(
            f"{source}: perturbation id(s) {values[malformed].tolist()[:3]} are not '<N>_<GENE>_<TRANSCRIPT>_<ENSG>'; "
            "is this a Replogle 2022 pseudo-bulk file or Table S2?"
        )
    gene = parts.map(lambda fields: "_".join(fields[1:-2]))
    return pd.DataFrame({
        "perturbation_id": values,
        "gene": gene,
        "transcript": parts.str[-2],
        "ensembl_id": parts.str[-1],
        "is_control": (gene == CONTROL_FIELD).to_numpy(),
    })


def read_perturbation_cells(path: Path) -> pd.Series:
    """Table S2 (`genetic perturbation`, `number of cells (filtered)`) -> cells per perturbation id."""
    table = pd.read_csv(path, sep="\t")
    needed = ["genetic perturbation", "number of cells (filtered)"]
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise ScreenFormatError(f"{path}: no column(s) {missing}; expected Replogle 2022 Table S2 exported as TSV")
    return pd.Series(table[needed[1]].to_numpy(dtype=float), index=table[needed[0]].astype(str))


@dataclass(frozen=True)
class PseudoBulk:
    """perturbations: parse_perturbation_ids columns, one row per matrix row; values: (perturbations x genes)
    float64; genes: symbols; scale: "z_normalized" (mean z vs controls) or "mean_counts"."""

    perturbations: pd.DataFrame
    values: np.ndarray
    genes: pd.Index
    scale: str
    source: str

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.perturbations), len(self.genes)):
            raise ValueError(f"values {self.values.shape} do not match {len(self.perturbations)} perturbations x "
                             f"{len(self.genes)} genes")


def load_replogle_pseudobulk(path: Path, *, gene_symbol_column: str = "gene_name") -> PseudoBulk:
    """Read a Replogle figshare pseudo-bulk h5ad; the scale is detected (negative values: z-normalised)."""
    source = str(path)
    raw = read_h5ad(path)
    perturbations = parse_perturbation_ids(raw.obs_names.to_series(), source=source)
    if gene_symbol_column in raw.var.columns:
        genes = pd.Index(raw.var[gene_symbol_column].astype(str))
    else:
        genes = pd.Index(raw.var_names.astype(str))
    values = raw.X.toarray() if sparse.issparse(raw.X) else np.asarray(raw.X)
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ScreenFormatError(f"{source}: field 'X' holds non-finite values; re-download the file")
    scale = "z_normalized" if (values < 0).any() else "mean_counts"
    return PseudoBulk(perturbations=perturbations, values=values, genes=genes, scale=scale, source=source)


def pseudobulk_de_labels(bulk: PseudoBulk, universe: list[str], *, min_abs_z: float, modality: str,
                         min_cells: int = 0, cells: pd.Series | None = None) -> DELabels:
    """DE labels from a z-normalised pseudo-bulk: positive when |mean z| >= min_abs_z (perturbed gene removed).

    Several sgRNA pairs of one gene (alternative transcripts) are averaged. `cells` (perturbation_id ->
    number of cells, e.g. from Table S2) drops perturbations with fewer than `min_cells`. The label table has
    DE_LABEL_COLUMNS with statistic = mean z and no p- or q-values (the rule is a threshold, not a test).
    """
    if bulk.scale != "z_normalized":
        raise ScreenFormatError(
            f"{bulk.source}: holds mean counts, not z-scores against controls; use the *_normalized_bulk_01.h5ad file "
            "for pseudo-bulk DE labels"
        )
    targeted = bulk.perturbations[~bulk.perturbations["is_control"]]
    if cells is not None:  # cells per gene, over its sgRNA pairs
        per_gene = targeted["perturbation_id"].map(cells).fillna(0).groupby(targeted["gene"]).transform("sum")
        targeted = targeted[per_gene.to_numpy() >= min_cells]
    present = pd.Index(universe).intersection(bulk.genes, sort=False)
    columns = bulk.genes.get_indexer(present)
    expected_sign = EXPECTED_ON_TARGET_SIGN.get(modality, -1.0)
    frames, summary = [], []
    for gene, rows in targeted.groupby("gene", sort=True):
        z = bulk.values[rows.index.to_numpy()].mean(axis=0)
        keep = present != gene
        is_de = np.abs(z[columns][keep]) >= min_abs_z
        frames.append(pd.DataFrame({
            "perturbation": gene, "target": present[keep], "log_difference": np.nan,
            "statistic": z[columns][keep], "p_value": np.nan, "q_value": np.nan, "is_de": is_de,
        }))
        own_columns = np.flatnonzero(bulk.genes == gene)
        own = float(z[own_columns[0]]) if len(own_columns) else np.nan
        status = ("not_measured" if not np.isfinite(own)
                  else "moved" if own * expected_sign >= min_abs_z else "not_moved")
        n_cells = int(rows["perturbation_id"].map(cells).fillna(0).sum()) if cells is not None else -1
        summary.append({"perturbation": gene, "n_cells": n_cells,
                        "n_positives": int(is_de.sum()), "n_negatives": int((~is_de).sum()),
                        "on_target_log_difference": np.nan, "on_target_p_value": np.nan,
                        "on_target_status": status, "tested": True})
    labels = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DE_LABEL_COLUMNS)
    return DELabels(labels=labels, summary=pd.DataFrame(summary))
