"""Screen loading: the h5ad layouts people download, read into the platform's one screen layout.

The screen layout every downstream step consumes (the synthetic simulator writes the same):
    X                          expression, cells x genes, scipy CSR float32 (see uns["expression_scale"])
    var_names                  gene symbols, unique;  var["ensembl_id"] when known
    obs["perturbation"]        the perturbed gene's symbol (or another perturbation name), or the control label
    uns["control_label"], uns["modality"]
    uns["expression_scale"]    "counts" (raw UMIs), "normalized" (per-cell scaled, not logged) or
                               "log1p_normalized" (already log1p of normalised values: never logged twice)
    uns["source"], uns["expression_field"], uns["assignment"] (how cells got their labels)

Layouts (`ScreenSpec.layout`) only change defaults; every field can be set explicitly:
    generic    any h5ad with a perturbation column (perturbation_column and control_label required)
    replogle   Replogle 2022 figshare single-cell files: obs["gene"], "non-targeting", var["gene_name"]
               with Ensembl ids as var_names
    scperturb  scPerturb files: obs["perturbation"], "control", symbols as var_names, obs["nperts"]
    gears      GEARS perturb_processed.h5ad: obs["condition"] as "ctrl", "GENE+ctrl", "GENE1+GENE2";
               symbols in var["gene_name"] (or var["feature_name"] in CPA exports)
Guide-count matrices (high-MOI screens, sceptre's layout) are assigned to perturbations by
`scinterp_assets.core.datasets.guides`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

EXPRESSION_SCALES = ("counts", "normalized", "log1p_normalized")
LAYOUTS = ("generic", "replogle", "scperturb", "gears")
ENSEMBL_PATTERN = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
# log1p of normalised expression stays far below this; per-cell scaled values without a log exceed it
MAX_LOG_VALUE = 30.0


class ScreenFormatError(ValueError):
    """A screen file cannot be used; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class LayoutDefaults:
    perturbation_column: str | None
    control_label: str | None
    gene_symbol_columns: tuple[str, ...]  # the first one present in var is used; () = var_names
    combination_separator: str | None  # how multi-gene labels are written ("+" in GEARS)


LAYOUT_DEFAULTS = {
    "generic": LayoutDefaults(None, None, (), None),
    "replogle": LayoutDefaults("gene", "non-targeting", ("gene_name",), None),
    "scperturb": LayoutDefaults("perturbation", "control", (), "_"),
    "gears": LayoutDefaults("condition", "ctrl", ("gene_name", "feature_name"), "+"),
}


# Guide-table names per layout; a field set explicitly wins. "sceptre": sceptre's own names (its grna
# table has no type column: non-targeting guides are told by their group, "non-targeting").
GUIDE_LAYOUTS = {
    "default": {"table_key": "grna_groups_table", "id_column": "gRNA_id", "group_column": "gRNA_group",
                "type_column": "gRNA_type"},
    "sceptre": {"table_key": "grna_group_table", "id_column": "grna_id", "group_column": "grna_group",
                "type_column": ""},
}


@dataclass(frozen=True)
class GuideSpec:
    """Where a screen keeps per-cell guide UMI counts and how cells are assigned (see guides.py).

    table_key, id_column, group_column, type_column: None takes the layout's name (GUIDE_LAYOUTS); an empty
    type_column means the table has none, and control guides are told by their group name."""

    layout: str = "default"
    counts_key: str = "grna_counts"  # obsm: cells x guides counts
    ids_key: str = "grna_ids"  # uns: guide ids in obsm column order
    table_key: str | None = None  # uns: guide id -> group (target) and type
    id_column: str | None = None
    group_column: str | None = None
    type_column: str | None = None
    control_types: tuple[str, ...] = ("non_target", "non-targeting", "non_targeting", "negative_control")
    target_pattern: str | None = None  # regex with a named group 'gene' mapping a group name to its gene
    min_umis: int = 5
    multiple: str = "drop"  # "drop" cells with guides of several targets, or "dominant"
    dominant_fraction: float = 0.8

    def __post_init__(self) -> None:
        if self.layout not in GUIDE_LAYOUTS:
            raise ValueError(f"guides layout must be one of {sorted(GUIDE_LAYOUTS)}, got {self.layout!r}")
        for name, value in GUIDE_LAYOUTS[self.layout].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.multiple not in ("drop", "dominant"):
            raise ValueError(f"multiple must be 'drop' or 'dominant', got {self.multiple!r}")
        if self.min_umis < 1:
            raise ValueError(f"min_umis must be at least 1, got {self.min_umis}")
        if not 0.5 < self.dominant_fraction <= 1:
            raise ValueError(f"dominant_fraction must lie in (0.5, 1], got {self.dominant_fraction}")


@dataclass(frozen=True)
class ScreenSpec:
    """One configured screen file (the `cell_types` entry of kinds h5ad, without the Dagster parts)."""

    path: Path
    modality: str
    layout: str = "generic"
    perturbation_column: str | None = None
    control_label: str | None = None
    gene_symbol_column: str | None = None
    ensembl_id_column: str | None = None
    counts_layer: str | None = None
    combinations: str = "drop"  # multi-gene perturbations: "drop" or "keep" (labelled "A+B")
    duplicate_genes: str = "error"  # "error" or "sum" (counts of repeated symbols added up)
    guides: GuideSpec | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.combinations not in ("drop", "keep"):
            raise ValueError(f"combinations must be 'drop' or 'keep', got {self.combinations!r}")
        if self.duplicate_genes not in ("error", "sum"):
            raise ValueError(f"duplicate_genes must be 'error' or 'sum', got {self.duplicate_genes!r}")


# ----------------------------------------------------------------------------------------------------------
# Expression scale


def detect_expression_scale(matrix, *, source: str, field: str) -> str:
    """'counts', 'normalized' or 'log1p_normalized'; ScreenFormatError for negative or non-finite values.

    Counts are non-negative integers. Non-integer values up to MAX_LOG_VALUE are log1p-normalised (log1p
    of counts per 10,000 stays below ~12); larger non-integer values are normalised but not logged.
    """
    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix).ravel()
    n_nonfinite = int((~np.isfinite(values)).sum())
    if n_nonfinite:
        raise ScreenFormatError(
            f"{source}: field '{field}' holds {n_nonfinite} non-finite value(s) (NaN or inf); expression "
            "must be finite: re-export the raw UMI counts, or set counts_layer to a layer that holds them"
        )
    n_negative = int((values < 0).sum())
    if n_negative:
        raise ScreenFormatError(
            f"{source}: field '{field}' holds {n_negative} negative value(s): scaled or centred data, which "
            "no statistic here can use; point counts_layer at the raw-count layer"
        )
    if values.size == 0 or np.all(values == np.floor(values)):
        return "counts"
    return "log1p_normalized" if values.max() <= MAX_LOG_VALUE else "normalized"


def check_raw_counts(screen: ad.AnnData, *, consumer: str) -> None:
    """Raise ScreenFormatError unless the screen holds raw counts (a tokeniser that needs them)."""
    scale = screen.uns.get("expression_scale", "counts")
    if scale != "counts":
        raise ScreenFormatError(
            f"{screen.uns.get('source', 'screen')}: field '{screen.uns.get('expression_field', 'X')}' holds "
            f"{scale.replace('_', '-')} values, but {consumer} needs raw counts: point counts_layer at a layer "
            "of raw UMI counts (or use the raw single-cell file), or evaluate this screen with a model that "
            "accepts normalised input"
        )


def _expression_field(raw: ad.AnnData, counts_layer: str | None, source: str) -> tuple[str, object, str]:
    """(field name, matrix, scale): the configured layer, else the first of X, layers['counts'], .raw.X that
    holds counts, else the first that holds normalised values."""
    if counts_layer is not None:
        if counts_layer not in raw.layers:
            raise ScreenFormatError(
                f"{source}: layers has no '{counts_layer}' (counts_layer); available: {sorted(raw.layers)}; "
                "set counts_layer to one of them or remove it to use X"
            )
        matrix = raw.layers[counts_layer]
        field_name = f"layers['{counts_layer}']"
        return field_name, matrix, detect_expression_scale(matrix, source=source, field=field_name)
    candidates = [("X", raw.X)]
    candidates += [(f"layers['{name}']", raw.layers[name]) for name in ("counts", "raw_counts") if name in raw.layers]
    if raw.raw is not None and raw.raw.var_names.equals(raw.var_names):
        candidates.append(("raw.X", raw.raw.X))
    usable, problems = [], []
    for field_name, matrix in candidates:
        try:
            usable.append((field_name, matrix, detect_expression_scale(matrix, source=source, field=field_name)))
        except ScreenFormatError as error:
            problems.append(str(error))
    for preferred in EXPRESSION_SCALES:
        for field_name, matrix, scale in usable:
            if scale == preferred:
                return field_name, matrix, scale
    raise ScreenFormatError(problems[0] if problems else f"{source}: X is empty; re-export the screen")


# ----------------------------------------------------------------------------------------------------------
# Perturbation labels


def parse_perturbation_labels(
    values: pd.Series, *, control_label: str, separator: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, is_combination): GEARS-style 'GENE+ctrl' / 'ctrl+GENE' become 'GENE', 'A+B' stays a
    combination (labelled 'A+B'), the control label stays as it is."""
    labels = values.astype(str).str.strip().to_numpy(dtype=object)
    is_combination = np.zeros(len(labels), dtype=bool)
    if separator is None:
        return labels, is_combination
    for index, label in enumerate(labels):
        if label == control_label or separator not in label:
            continue
        parts = [part for part in label.split(separator) if part and part != control_label]
        if not parts:
            labels[index] = control_label
        elif len(parts) == 1:
            labels[index] = parts[0]
        else:
            labels[index] = "+".join(sorted(parts))
            is_combination[index] = True
    return labels, is_combination


# ----------------------------------------------------------------------------------------------------------
# Genes


def _gene_symbols(raw: ad.AnnData, spec: ScreenSpec, defaults: LayoutDefaults, source: str) -> pd.Index:
    column = spec.gene_symbol_column
    if column is None:
        column = next((name for name in defaults.gene_symbol_columns if name in raw.var.columns), None)
    if column is None:
        return pd.Index(raw.var_names.astype(str))
    if column not in raw.var.columns:
        raise ScreenFormatError(
            f"{source}: var has no column '{column}' (gene_symbol_column); available: {sorted(raw.var.columns)}"
        )
    symbols = raw.var[column].astype(str)
    missing = symbols.isin(["", "nan", "None"])
    # genes without a symbol keep their id (e.g. an Ensembl id) rather than becoming duplicates of ""
    return pd.Index(np.where(missing, raw.var_names.astype(str), symbols))


def _ensembl_ids(raw: ad.AnnData, spec: ScreenSpec, source: str) -> np.ndarray | None:
    if spec.ensembl_id_column is not None:
        if spec.ensembl_id_column not in raw.var.columns:
            raise ScreenFormatError(
                f"{source}: var has no column '{spec.ensembl_id_column}' (ensembl_id_column); "
                f"available: {sorted(raw.var.columns)}"
            )
        return raw.var[spec.ensembl_id_column].astype(str).to_numpy()
    names = raw.var_names.astype(str)
    if len(names) and np.mean([bool(ENSEMBL_PATTERN.match(name)) for name in names]) > 0.9:
        return np.asarray(names)
    return None


def collapse_duplicate_genes(matrix: sparse.csr_matrix, symbols: pd.Index) -> tuple[sparse.csr_matrix, pd.Index, np.ndarray]:
    """Sum the columns of repeated symbols; returns (matrix, unique symbols in first-seen order, the column of
    the first occurrence of each unique symbol in the input)."""
    codes, uniques = pd.factorize(symbols)
    collapse = sparse.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)), shape=(len(codes), len(uniques)))
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    return sparse.csr_matrix(matrix @ collapse, dtype=np.float32), pd.Index(uniques), first


# ----------------------------------------------------------------------------------------------------------
# Reading


def read_h5ad(path: Path) -> ad.AnnData:
    """anndata.read_h5ad with every failure turned into a ScreenFormatError naming the file."""
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise ScreenFormatError(f"{path}: not a readable h5ad file ({error}); re-download or re-export it") from error


def load_screen_file(spec: ScreenSpec) -> ad.AnnData:
    """Read one configured h5ad screen into the screen layout; every problem is a ScreenFormatError."""
    source = str(spec.path)
    raw = read_h5ad(spec.path)
    defaults = LAYOUT_DEFAULTS[spec.layout]
    control_label = spec.control_label or defaults.control_label
    if spec.guides is not None:
        from scinterp_assets.core.datasets.guides import assign_cells_from_guide_counts

        assignment = assign_cells_from_guide_counts(raw, spec.guides, source=source)
        control_label = assignment.control_label
        labels = assignment.labels
        is_combination = np.zeros(raw.n_obs, dtype=bool)
        keep = assignment.assigned
        assignment_summary = assignment.summary
    else:
        column = spec.perturbation_column or defaults.perturbation_column
        if column is None or control_label is None:
            raise ScreenFormatError(
                f"{source}: layout 'generic' needs perturbation_column and control_label (or a guides section); "
                f"obs columns: {sorted(raw.obs.columns)[:20]}"
            )
        if column not in raw.obs.columns:
            raise ScreenFormatError(
                f"{source}: obs has no column '{column}' (perturbation_column); available: "
                f"{sorted(raw.obs.columns)[:20]}; set perturbation_column to the column naming each cell's target"
            )
        labels, is_combination = parse_perturbation_labels(
            raw.obs[column], control_label=control_label, separator=defaults.combination_separator
        )
        if "nperts" in raw.obs.columns:  # scPerturb marks multi-gene cells explicitly
            is_combination |= pd.to_numeric(raw.obs["nperts"], errors="coerce").fillna(1).to_numpy() > 1
        keep = ~is_combination if spec.combinations == "drop" else np.ones(raw.n_obs, dtype=bool)
        assignment_summary = {
            "rule": f"obs['{column}']",
            "combination_cells": int(is_combination.sum()),
            "combinations": spec.combinations,
        }
    field_name, matrix, scale = _expression_field(raw, spec.counts_layer, source)
    return assemble_screen(
        matrix,
        symbols=_gene_symbols(raw, spec, defaults, source),
        ensembl=_ensembl_ids(raw, spec, source),
        cell_ids=raw.obs_names.astype(str),
        labels=labels,
        keep=keep,
        control_label=control_label,
        modality=spec.modality,
        duplicate_genes=spec.duplicate_genes,
        provenance={"source": source, "expression_scale": scale, "expression_field": field_name,
                    "assignment": assignment_summary},
    )


def assemble_screen(
    matrix,
    *,
    symbols: pd.Index,
    ensembl: np.ndarray | None,
    cell_ids: pd.Index,
    labels: np.ndarray,
    keep: np.ndarray,
    control_label: str,
    modality: str,
    duplicate_genes: str,
    provenance: dict,
) -> ad.AnnData:
    """The screen layout from parts every reader produces: expression (cells x genes), gene symbols and
    Ensembl ids, one label per cell and the cells to keep. provenance: source, expression_scale,
    expression_field, assignment (written into uns)."""
    source = provenance["source"]
    if not (labels[keep] == control_label).any():
        counts = pd.Series(labels[keep]).value_counts()
        raise ScreenFormatError(
            f"{source}: no cell is labelled '{control_label}' (control_label); most common labels: "
            f"{counts.index[:5].tolist()}; set control_label to the label of non-targeting cells"
        )
    matrix = sparse.csr_matrix(matrix, dtype=np.float32)
    if symbols.duplicated().any():
        if duplicate_genes == "error":
            repeated = sorted(set(symbols[symbols.duplicated()]))
            raise ScreenFormatError(
                f"{source}: {len(repeated)} gene name(s) occur more than once in the gene names "
                f"(e.g. {repeated[:5]}); set duplicate_genes: sum to add their counts up, or choose a unique "
                "gene column"
            )
        matrix, symbols, first = collapse_duplicate_genes(matrix, symbols)
        ensembl = ensembl[first] if ensembl is not None else None
    var = pd.DataFrame(index=pd.Index(symbols.to_numpy(dtype=str), name=None))
    if ensembl is not None:
        var["ensembl_id"] = ensembl
    keep_index = np.flatnonzero(keep)
    screen = ad.AnnData(
        X=matrix[keep_index],
        obs=pd.DataFrame({"perturbation": labels[keep_index].astype(str)}, index=cell_ids[keep_index]),
        var=var,
    )
    screen.uns.update(control_label=control_label, modality=modality, **provenance)
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
