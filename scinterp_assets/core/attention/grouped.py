"""Attention summed per group of cells in the same pass as pooled extraction (FRAMEWORK A20-A21).

Scaling rungs and cell-state strata need the mean attention over a subset of the cells. Running the model once
per subset would multiply the cost by their number; instead each cell carries the groups it belongs to (one per
grouping: a stratum of each stratification, a bucket of each scaling ladder, a block of the null) and the
accumulator adds the cell's block of one layer into every one of them. A subset's sums are then the sum over
the groups that make it up, read at the end (`GroupedScores.mean`).

Only what the analyses read is kept: one layer, the head mean (no per-head rows), the rows of the `rows`
genes (the sources of the references the analyses score) against every accumulated gene, and the pair counts
of those rows per group. Memory is groups x rows x genes x (8 + 8 + 4) bytes with value-weighted sums.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scinterp_assets.core.attention.scores import save_npz_atomically


@dataclass(frozen=True)
class CellGroups:
    """Which groups each input cell adds its attention to.

    names:      the group names, global over every grouping (group g is names[g])
    membership: int64 (n_cells, M): the groups of each cell of the model's input, in input (adata) order, -1
                where a cell is in no group of a grouping (M = number of groupings; a cell is in at most one
                group of each)
    rows:       the genes whose rows are kept per group (a subset of the accumulator's per-head sources)
    layer:      the model layer accumulated per group
    """

    names: tuple[str, ...]
    membership: np.ndarray
    rows: tuple[str, ...]
    layer: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(name) for name in self.names))
        object.__setattr__(self, "rows", tuple(str(gene) for gene in self.rows))
        membership = np.asarray(self.membership)
        if membership.ndim != 2 or not np.issubdtype(membership.dtype, np.integer):
            raise ValueError(f"CellGroups.membership must be integer (cells, groupings), got {membership.shape}")
        if membership.size and (membership.min() < -1 or membership.max() >= len(self.names)):
            raise ValueError(f"CellGroups.membership must lie in [-1, {len(self.names)})")
        if len(set(self.names)) != len(self.names) or len(set(self.rows)) != len(self.rows):
            raise ValueError("CellGroups: group names and rows must be distinct")
        object.__setattr__(self, "membership", membership.astype(np.int64))


def grouped_megabytes(n_groups: int, n_rows: int, n_genes: int) -> float:
    """Memory the per-group sums take: float64 attention and value-weighted sums and int32 counts."""
    return n_groups * n_rows * n_genes * (8 + 8 + 4) / 1e6


@dataclass(frozen=True)
class GroupedScores:
    """Per-group head-mean sums of one layer for the `rows` genes against every gene.

    genes:           the G accumulated genes (columns)
    rows:            the R genes kept as rows, in the order of `genes`
    layer:           the model layer
    groups:          the group names (first axis of every array)
    attention_sum:   float64 (groups, R, G) sum over the group's cells of the head-mean attention probability
    value_weighted_sum: float64 (groups, R, G) same for the head-mean context-vector cosine, or (0, R, G) when
                     not accumulated
    count:           int32 (groups, R, G) cells of the group holding both genes
    n_cells:         int64 (groups,) cells that went through the model, per group
    """

    genes: tuple[str, ...]
    rows: tuple[str, ...]
    layer: int
    groups: tuple[str, ...]
    attention_sum: np.ndarray
    value_weighted_sum: np.ndarray
    count: np.ndarray
    n_cells: np.ndarray
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("genes", "rows", "groups"):
            object.__setattr__(self, name, tuple(str(value) for value in getattr(self, name)))
        shape = (len(self.groups), len(self.rows), len(self.genes))
        if self.attention_sum.shape != shape or self.count.shape != shape:
            raise ValueError(f"GroupedScores arrays must be (groups, rows, genes) = {shape}; got "
                             f"{self.attention_sum.shape} and {self.count.shape}")
        if self.value_weighted_sum.shape not in (shape, (0, *shape[1:])):
            raise ValueError(f"GroupedScores.value_weighted_sum must be {shape} or empty")
        if self.n_cells.shape != (len(self.groups),):
            raise ValueError("GroupedScores.n_cells needs one count per group")

    @classmethod
    def empty(cls, genes: Sequence[str], reason: str) -> GroupedScores:
        """No group accumulated, and why (provenance["skipped"])."""
        no_rows = np.zeros((0, 0, len(genes)))
        return cls(tuple(genes), (), 0, (), no_rows, no_rows, no_rows.astype(np.int32), np.zeros(0, dtype=np.int64),
                   provenance={"skipped": reason})

    @property
    def has_value_weighted(self) -> bool:
        return self.value_weighted_sum.shape[0] == len(self.groups) and len(self.groups) > 0

    def group_index(self, names: Sequence[str]) -> np.ndarray:
        position = {name: i for i, name in enumerate(self.groups)}
        missing = [name for name in names if name not in position]
        if missing:
            raise KeyError(f"groups not accumulated: {missing[:5]}")
        return np.array([position[name] for name in names], dtype=np.int64)

    def mean(self, groups: Sequence[str], value_weighted: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mean (R, G), count (R, G)) over the union of `groups`: summed scores / pair counts, NaN where no
        cell of the union holds both genes and where a row meets its own gene."""
        index = self.group_index(groups)
        sums = self.value_weighted_sum if value_weighted else self.attention_sum
        if value_weighted and not self.has_value_weighted:
            raise ValueError("these grouped scores hold no value-weighted sums")
        total = sums[index].sum(axis=0)
        count = self.count[index].sum(axis=0, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        column = {gene: i for i, gene in enumerate(self.genes)}
        mean[np.arange(len(self.rows)), [column[row] for row in self.rows]] = np.nan
        return mean, count

    def save(self, path: str | Path) -> Path:
        return save_npz_atomically(
            path, genes=np.asarray(self.genes, dtype=np.str_), rows=np.asarray(self.rows, dtype=np.str_),
            layer=np.asarray(self.layer), groups=np.asarray(self.groups, dtype=np.str_),
            attention_sum=self.attention_sum, value_weighted_sum=self.value_weighted_sum, count=self.count,
            n_cells=self.n_cells, provenance=np.asarray(json.dumps(self.provenance, sort_keys=True), dtype=np.str_))

    @classmethod
    def load(cls, path: str | Path) -> GroupedScores:
        """Read a file written by `save` (no pickled objects are admitted)."""
        with np.load(Path(path), allow_pickle=False) as stored:
            return cls(genes=tuple(stored["genes"].tolist()), rows=tuple(stored["rows"].tolist()),
                       layer=int(stored["layer"]), groups=tuple(stored["groups"].tolist()),
                       attention_sum=stored["attention_sum"], value_weighted_sum=stored["value_weighted_sum"],
                       count=stored["count"], n_cells=stored["n_cells"],
                       provenance=json.loads(str(stored["provenance"])))
