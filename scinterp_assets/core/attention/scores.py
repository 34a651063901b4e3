"""Gene-by-gene attention accumulators: what attention extraction produces and edge scoring reads.

Edge score (FRAMEWORK.md section 4): for each layer and head, the attention probability A[query = source,
key = target] summed over the cells in which both genes are present, divided by that pair count.
Value-weighted variant: the same sum / count of the cosine similarity of the two genes' per-head context
vectors (softmax(QK^T / sqrt(d)) V); `provenance["score"]` says which of the two a result holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scinterp_assets.core.files import write_atomically

# provenance["score"] of the two kinds of accumulated quantity
ATTENTION_PROBABILITY = "attention_probability"
VALUE_WEIGHTED_COSINE = "value_weighted_cosine"


def save_npz_atomically(path: str | Path, **arrays: np.ndarray) -> Path:
    """np.savez through `core.files.write_atomically`: readers see the old file or the new one."""

    def write(staged: Path) -> None:
        with open(staged, "wb") as stream:
            np.savez(stream, **arrays)

    return write_atomically(path, write)


@dataclass(frozen=True)
class AttentionScores:
    """Summed attention probabilities (or, value-weighted, context-vector cosines) and pair counts over cells.

    genes:   the G gene identifiers (entries of the input's var_names); index order of both axes below
    layers:  the L model layer indices accumulated (0-based), in accumulator order
    sum:     float64 (L, H, G, G); sum over cells of attention probability, row = query (source) gene,
             column = key (target) gene; unitless (probabilities). Value-weighted scores
             (provenance["score"] == "value_weighted_cosine") hold cosines in [-1, 1] instead, symmetric
             in the two genes
    count:   int64 (G, G); cells in which both genes were among the cell's tokens (diagonal: cells holding
             the gene)
    n_cells: cells that went through the model
    provenance: JSON-serialisable settings that produced the scores (family, seed, tokenisation options,
             "score": ATTENTION_PROBABILITY or VALUE_WEIGHTED_COSINE)
    """

    genes: tuple[str, ...]
    layers: tuple[int, ...]
    sum: np.ndarray
    count: np.ndarray
    n_cells: int
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "genes", tuple(str(g) for g in self.genes))
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))
        n_genes, n_layers = len(self.genes), len(self.layers)
        if len(set(self.genes)) != n_genes:
            raise ValueError("AttentionScores.genes has duplicates; each gene needs one row and one column")
        if len(set(self.layers)) != n_layers:
            raise ValueError(f"AttentionScores.layers has duplicates: {self.layers}")
        if self.sum.dtype != np.float64 or self.sum.ndim != 4 or self.sum.shape[0] != n_layers or (
            self.sum.shape[2:] != (n_genes, n_genes)
        ):
            raise ValueError(
                f"AttentionScores.sum must be float64 (L={n_layers}, H, G={n_genes}, G={n_genes}); "
                f"got {self.sum.dtype} {self.sum.shape}"
            )
        if self.count.dtype != np.int64 or self.count.shape != (n_genes, n_genes):
            raise ValueError(
                f"AttentionScores.count must be int64 (G={n_genes}, G={n_genes}); got {self.count.dtype} "
                f"{self.count.shape}"
            )
        out_of_range = self.count.size and (self.count.min() < 0 or self.count.max() > self.n_cells)
        if self.n_cells < 0 or out_of_range:
            raise ValueError(f"AttentionScores.count must lie in [0, n_cells={self.n_cells}]")

    @property
    def n_heads(self) -> int:
        return int(self.sum.shape[1])

    @property
    def score(self) -> str:
        """What `sum` accumulates: provenance["score"]; attention probability where unrecorded (old files)."""
        return str(self.provenance.get("score", ATTENTION_PROBABILITY))

    def mean(self) -> np.ndarray:
        """Mean attention (or context cosine) per pair, float64 (L, H, G, G) = sum / count; NaN where count is
        0 and on the diagonal (self-attention of a gene is not an edge)."""
        count = self.count.astype(np.float64)
        count[count == 0] = np.nan
        np.fill_diagonal(count, np.nan)
        return self.sum / count

    def save(self, path: str | Path) -> Path:
        """Write one .npz file atomically (temp file in the same folder, then rename); returns the path."""
        return save_npz_atomically(
            path,
            genes=np.asarray(self.genes, dtype=np.str_),
            layers=np.asarray(self.layers, dtype=np.int64),
            sum=self.sum,
            count=self.count,
            n_cells=np.int64(self.n_cells),
            provenance=np.asarray(json.dumps(self.provenance, sort_keys=True), dtype=np.str_),
        )

    @classmethod
    def load(cls, path: str | Path) -> AttentionScores:
        """Read a file written by `save` (no pickled objects are admitted)."""
        with np.load(Path(path), allow_pickle=False) as stored:
            return cls(
                genes=tuple(stored["genes"].tolist()),
                layers=tuple(stored["layers"].tolist()),
                sum=stored["sum"],
                count=stored["count"],
                n_cells=int(stored["n_cells"]),
                provenance=json.loads(str(stored["provenance"])) if "provenance" in stored else {},
            )
