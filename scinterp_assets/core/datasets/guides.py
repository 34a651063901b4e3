"""Guide calls to perturbation labels, for screens that ship guide UMI counts instead of a label column.

High-MOI screens (Gasperini 2019) give each cell several guides; low-MOI screens still see some cells with
two. The rule is explicit and configured (`GuideSpec`):
    a guide is called in a cell when its UMI count >= min_umis;
    called guides are pooled by group (the guides of one target);
    no called guide                    -> unassigned (dropped)
    only control-group guides          -> control
    exactly one targeting group        -> that group (control guides alongside it change nothing)
    several targeting groups           -> dropped ("drop"), or the group holding >= dominant_fraction of the
                                          targeting guide UMIs ("dominant"), else dropped.
Group names become labels through `target_pattern` (e.g. "^(?P<gene>.+)_TSS$" turns "KRT18_TSS" into
KRT18); groups it does not match (enhancers) keep their own name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from scinterp_assets.core.datasets.screens import GuideSpec, ScreenFormatError

CONTROL_LABEL = "non-targeting"


@dataclass(frozen=True)
class GuideAssignment:
    """labels: per cell (control label, a perturbation label, or "" when not assigned); assigned: bool mask;
    summary: counts of cells per outcome, for metadata."""

    labels: np.ndarray
    assigned: np.ndarray
    control_label: str
    summary: dict


def assign_guides(
    guide_counts: sparse.spmatrix,
    guide_groups: np.ndarray,
    control_groups: set[str],
    *,
    min_umis: int,
    multiple: str,
    dominant_fraction: float,
) -> tuple[np.ndarray, dict]:
    """Per cell: the assigned group name, CONTROL_LABEL, or "" (unassigned). guide_counts: cells x guides UMIs;
    guide_groups: the group of each guide column. Vectorised over cells."""
    if multiple not in ("drop", "dominant"):
        raise ValueError(f"multiple must be 'drop' or 'dominant', got {multiple!r}")
    counts = sparse.csr_matrix(guide_counts, dtype=np.float64)
    called = counts.multiply(counts >= min_umis).tocsr()
    group_codes, groups = pd.factorize(pd.Index(guide_groups.astype(str)))
    pool = sparse.csr_matrix((np.ones(len(group_codes)), (np.arange(len(group_codes)), group_codes)),
                             shape=(len(group_codes), len(groups)))
    group_umis = (called @ pool).toarray()  # cells x groups
    is_control_group = np.isin(groups, list(control_groups))
    targeting = np.where(is_control_group, 0.0, group_umis)
    n_targeting = (targeting > 0).sum(axis=1)
    has_control = (group_umis[:, is_control_group] > 0).any(axis=1) if is_control_group.any() else np.zeros(len(counts.indptr) - 1, bool)
    top = targeting.argmax(axis=1)
    top_share = np.divide(targeting.max(axis=1), targeting.sum(axis=1), out=np.zeros(len(top)), where=n_targeting > 0)
    labels = np.full(len(top), "", dtype=object)
    labels[(n_targeting == 0) & has_control] = CONTROL_LABEL
    single = n_targeting == 1
    labels[single] = groups[top[single]]
    several = n_targeting > 1
    dominant = several & (top_share >= dominant_fraction) if multiple == "dominant" else np.zeros_like(several)
    labels[dominant] = groups[top[dominant]]
    summary = {
        "rule": f"guide UMIs >= {min_umis}; several targets: {multiple}"
        + (f" (dominant share >= {dominant_fraction})" if multiple == "dominant" else ""),
        "no_guide_cells": int(((n_targeting == 0) & ~has_control).sum()),
        "control_cells": int((labels == CONTROL_LABEL).sum()),
        "single_target_cells": int(single.sum()),
        "several_target_cells": int(several.sum()),
        "several_target_cells_assigned": int(dominant.sum()),
    }
    return labels, summary


def group_labels(groups: np.ndarray, target_pattern: str | None) -> np.ndarray:
    """Group name -> perturbation label through the pattern's 'gene' group; unmatched names are kept."""
    if target_pattern is None:
        return groups
    pattern = re.compile(target_pattern)
    if "gene" not in pattern.groupindex:
        raise ValueError(f"target_pattern {target_pattern!r} needs a named group (?P<gene>...)")
    out = groups.copy()
    for index, name in enumerate(groups):
        match = pattern.match(name) if name not in ("", CONTROL_LABEL) else None
        if match:
            out[index] = match.group("gene")
    return out


def assign_cells_from_guide_counts(raw: ad.AnnData, spec: GuideSpec, *, source: str) -> GuideAssignment:
    """Read obsm guide counts, uns guide ids and the uns guide table (sceptre's layout) and assign cells."""
    if spec.counts_key not in raw.obsm:
        raise ScreenFormatError(
            f"{source}: obsm has no '{spec.counts_key}' (guides.counts_key); available: {sorted(raw.obsm)}"
        )
    for key in (spec.ids_key, spec.table_key):
        if key not in raw.uns:
            raise ScreenFormatError(f"{source}: uns has no '{key}' (guides section); available: {sorted(raw.uns)}")
    guide_ids = np.asarray(raw.uns[spec.ids_key]).astype(str)
    table = pd.DataFrame(raw.uns[spec.table_key])
    needed = [spec.id_column, spec.group_column] + ([spec.type_column] if spec.type_column else [])
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise ScreenFormatError(
            f"{source}: uns['{spec.table_key}'] has no column(s) {missing}; available: {list(table.columns)}; "
            "set guides.id_column / group_column / type_column"
        )
    counts = raw.obsm[spec.counts_key]
    if counts.shape[1] != len(guide_ids):
        raise ScreenFormatError(
            f"{source}: obsm['{spec.counts_key}'] has {counts.shape[1]} columns but uns['{spec.ids_key}'] names "
            f"{len(guide_ids)} guides; re-export them together"
        )
    table = table.drop_duplicates(spec.id_column).set_index(spec.id_column)
    unknown = sorted(set(guide_ids) - set(table.index))
    if unknown:
        raise ScreenFormatError(
            f"{source}: {len(unknown)} guide(s) of uns['{spec.ids_key}'] are not in uns['{spec.table_key}'] "
            f"(e.g. {unknown[:3]}); every guide needs a group"
        )
    groups = table.loc[guide_ids, spec.group_column].astype(str).to_numpy()
    if spec.type_column:
        is_control = table.loc[guide_ids, spec.type_column].astype(str).isin(spec.control_types).to_numpy()
    else:
        is_control = np.isin(groups, spec.control_types)
    control_groups = set(groups[is_control])
    if not control_groups:
        raise ScreenFormatError(
            f"{source}: no guide of uns['{spec.table_key}'] has a control type {list(spec.control_types)} "
            f"in '{spec.type_column}'; set guides.control_types to the label of non-targeting guides"
        )
    labels, summary = assign_guides(
        counts, groups, control_groups, min_umis=spec.min_umis, multiple=spec.multiple,
        dominant_fraction=spec.dominant_fraction,
    )
    labels = group_labels(labels, spec.target_pattern)
    return GuideAssignment(labels=labels, assigned=labels != "", control_label=CONTROL_LABEL, summary=summary)
