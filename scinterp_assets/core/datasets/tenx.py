"""Cell Ranger output as a screen: a matrix folder plus the CRISPR feature reference (and guide calls).

    <folder>/matrix.mtx[.gz]     features x barcodes counts (MatrixMarket)
    <folder>/features.tsv[.gz]   id, name, feature_type (no header; genes.tsv with two columns in v2)
    <folder>/barcodes.tsv[.gz]
    feature_reference.csv        id, name, ..., feature_type, target_gene_id, target_gene_name; non-targeting
                                 guides have target_gene_id "Non-Targeting"
Guide UMIs come from the "CRISPR Guide Capture" features of the same matrix, or, when given, from Cell
Ranger's protospacer_calls_per_cell.csv (cell_barcode, num_features, feature_call "g1|g2", num_umis "7|3").
Cells are assigned with the rule of guides.py; labels are the guides' target gene names.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import io, sparse

from scinterp_assets.core.datasets.guides import CONTROL_LABEL, assign_guides
from scinterp_assets.core.datasets.screens import ScreenFormatError, assemble_screen, detect_expression_scale

GUIDE_FEATURE_TYPE = "CRISPR Guide Capture"
GENE_FEATURE_TYPE = "Gene Expression"
NON_TARGETING = "Non-Targeting"


@dataclass(frozen=True)
class TenxSpec:
    folder: Path
    modality: str
    feature_reference: Path
    guide_calls: Path | None = None
    min_umis: int = 5
    multiple: str = "drop"
    dominant_fraction: float = 0.8
    duplicate_genes: str = "error"


def _find(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise ScreenFormatError(
        f"{folder}: no {names[0]}[.gz]; point path at Cell Ranger's filtered_feature_bc_matrix folder"
    )


def _read_table(path: Path, **options) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except (EOFError, gzip.BadGzipFile, OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ScreenFormatError(f"{path}: cannot be read ({error}); the file is truncated or corrupt: re-download it") from error


def read_matrix_folder(folder: Path) -> tuple[sparse.csr_matrix, pd.DataFrame, pd.Index]:
    """(cells x features counts, features with columns id, name, feature_type, barcodes)."""
    matrix_path = _find(folder, ("matrix.mtx",))
    features = _read_table(_find(folder, ("features.tsv", "genes.tsv")), sep="\t", header=None, dtype=str)
    features = features.rename(columns={0: "id", 1: "name", 2: "feature_type"})
    if "feature_type" not in features.columns:
        features["feature_type"] = GENE_FEATURE_TYPE
    barcodes = _read_table(_find(folder, ("barcodes.tsv",)), sep="\t", header=None, dtype=str)[0]
    try:
        with (gzip.open if matrix_path.suffix == ".gz" else open)(matrix_path, "rb") as handle:
            matrix = sparse.csr_matrix(io.mmread(handle).T, dtype=np.float32)
    except (EOFError, gzip.BadGzipFile, OSError, ValueError) as error:
        raise ScreenFormatError(f"{matrix_path}: cannot be read ({error}); the file is truncated or corrupt: re-download it") from error
    if matrix.shape != (len(barcodes), len(features)):
        raise ScreenFormatError(
            f"{matrix_path}: {matrix.shape[1]} features x {matrix.shape[0]} barcodes, but features.tsv lists "
            f"{len(features)} and barcodes.tsv {len(barcodes)}; the three files come from different runs"
        )
    return matrix, features, pd.Index(barcodes)


def _guide_counts_from_calls(path: Path, barcodes: pd.Index, guide_ids: list[str]) -> sparse.csr_matrix:
    calls = _read_table(path, dtype=str)
    missing = {"cell_barcode", "feature_call", "num_umis"} - set(calls.columns)
    if missing:
        raise ScreenFormatError(f"{path}: no column(s) {sorted(missing)}; expected Cell Ranger's protospacer_calls_per_cell.csv")
    rows = calls["cell_barcode"].map(pd.Series(np.arange(len(barcodes)), index=barcodes))
    calls = calls[rows.notna()]
    features = calls["feature_call"].str.split("|")
    umis = calls["num_umis"].str.split("|")
    lengths = features.str.len()
    column_of = pd.Series(np.arange(len(guide_ids)), index=guide_ids)
    flat_features = pd.Series(np.concatenate(features.to_numpy()) if len(calls) else [], dtype=str)
    columns = flat_features.map(column_of)
    if columns.isna().any():
        raise ScreenFormatError(
            f"{path}: guide(s) {sorted(set(flat_features[columns.isna()]))[:3]} are not in the feature reference"
        )
    values = np.concatenate(umis.to_numpy()).astype(float) if len(calls) else np.zeros(0)
    cell_rows = np.repeat(rows[rows.notna()].to_numpy(dtype=int), lengths.to_numpy())
    return sparse.csr_matrix((values, (cell_rows, columns.to_numpy(dtype=int))), shape=(len(barcodes), len(guide_ids)))


def load_tenx_screen(spec: TenxSpec) -> ad.AnnData:
    """Read a Cell Ranger CRISPR screen into the screen layout; every problem is a ScreenFormatError."""
    source = str(spec.folder)
    matrix, features, barcodes = read_matrix_folder(spec.folder)
    reference = _read_table(spec.feature_reference, dtype=str)
    missing = {"id", "target_gene_id", "target_gene_name"} - set(reference.columns)
    if missing:
        raise ScreenFormatError(
            f"{spec.feature_reference}: no column(s) {sorted(missing)}; expected Cell Ranger's feature reference CSV"
        )
    guide_ids = reference["id"].tolist()
    is_gene = (features["feature_type"] == GENE_FEATURE_TYPE).to_numpy()
    if spec.guide_calls is not None:
        guide_counts = _guide_counts_from_calls(spec.guide_calls, barcodes, guide_ids)
    else:
        in_matrix = features["id"].where(features["feature_type"] == GUIDE_FEATURE_TYPE).dropna()
        absent = sorted(set(guide_ids) - set(in_matrix))
        if absent:
            raise ScreenFormatError(
                f"{source}: {len(absent)} guide(s) of {spec.feature_reference.name} have no '{GUIDE_FEATURE_TYPE}' "
                f"feature in the matrix (e.g. {absent[:3]}); give guide_calls: protospacer_calls_per_cell.csv"
            )
        position = pd.Series(np.arange(len(features)), index=features["id"])
        guide_counts = matrix[:, position[guide_ids].to_numpy()]
    is_control = reference["target_gene_id"].str.casefold() == NON_TARGETING.casefold()
    groups = np.where(is_control, NON_TARGETING, reference["target_gene_name"].astype(str))
    labels, summary = assign_guides(
        guide_counts, groups, {NON_TARGETING}, min_umis=spec.min_umis, multiple=spec.multiple,
        dominant_fraction=spec.dominant_fraction,
    )
    gene_matrix = matrix[:, np.flatnonzero(is_gene)]
    field = f"matrix.mtx ({GENE_FEATURE_TYPE})"
    return assemble_screen(
        gene_matrix,
        symbols=pd.Index(features.loc[is_gene, "name"].astype(str)),
        ensembl=features.loc[is_gene, "id"].to_numpy(dtype=str),
        cell_ids=barcodes,
        labels=labels,
        keep=labels != "",
        control_label=CONTROL_LABEL,
        modality=spec.modality,
        duplicate_genes=spec.duplicate_genes,
        provenance={"source": source, "expression_field": field, "assignment": summary,
                    "expression_scale": detect_expression_scale(gene_matrix, source=source, field=field)},
    )
