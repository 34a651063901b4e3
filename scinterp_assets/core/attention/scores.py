"""Gene-by-gene attention accumulators: what attention extraction produces and edge scoring reads.

Edge score (FRAMEWORK.md section 4): for each layer and head, the attention probability A[query = source,
key = target] summed over the cells in which both genes are present, divided by that pair count; per head
for the source rows an analysis queries, the head mean for every pair. Value-weighted variant: the same
sum / count of the head-mean cosine similarity of the two genes' per-head context vectors
(softmax(QK^T / sqrt(d)) V); `provenance["score"]` says which of the two a result holds.
"""

from __future__ import annotations

import json
import struct
import zipfile
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

    genes:   the G gene identifiers (entries of the input's var_names); the column order of `sum` and both
             axes of `count` and `head_mean_sum`
    layers:  the L model layer indices accumulated (0-based), in accumulator order
    sum:     float64 (L, H, S, G); per head, sum over cells of attention probability for the S source rows,
             row = query (source) gene, column = key (target) gene; unitless (probabilities)
    count:   int64 (G, G); cells in which both genes were among the cell's tokens (diagonal: cells holding
             the gene)
    n_cells: cells that went through the model
    sources: the S genes kept per head (rows of `sum`), in the order of `genes`; default every gene
    head_mean_sum: float64 (L, G, G); sum over cells of the mean over heads, for every pair. Derived from
             `sum` when every gene is a source; otherwise accumulated per cell, for attention as a float32 sum
             over the H heads (relative error at most (H - 1) eps32 against a float64 sum), for
             value-weighted cosines in float64. Value-weighted scores
             (provenance["score"] == "value_weighted_cosine") hold head-mean cosines in [-1, 1] here,
             symmetric in the two genes, and no per-head rows (sources = ())
    provenance: JSON-serialisable settings that produced the scores (family, seed, tokenisation options,
             "score": ATTENTION_PROBABILITY or VALUE_WEIGHTED_COSINE)

    `load` maps `sum` and `head_mean_sum` instead of reading them: a step that needs only the counts (read
    whole, G x G) or one layer reads only those pages of the file. A file from before per-head sources has no
    `head_mean_sum`; it is then derived, which reads `sum` whole. The mapped arrays may be unaligned (an npz
    member starts wherever the zip puts it): numpy handles that; code that needs aligned buffers should copy.
    """

    genes: tuple[str, ...]
    layers: tuple[int, ...]
    sum: np.ndarray
    count: np.ndarray
    n_cells: int
    provenance: dict = field(default_factory=dict)
    sources: tuple[str, ...] | None = None
    head_mean_sum: np.ndarray | None = None
    # (array name, layer or None for all) of every slice `mean` / `head_mean` served: see `bytes_read`
    _slices_read: set = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "genes", tuple(str(g) for g in self.genes))
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))
        sources = self.genes if self.sources is None else tuple(str(g) for g in self.sources)
        object.__setattr__(self, "sources", sources)
        n_genes, n_layers, n_sources = len(self.genes), len(self.layers), len(sources)
        if len(set(self.genes)) != n_genes:
            raise ValueError("AttentionScores.genes has duplicates; each gene needs one row and one column")
        if len(set(self.layers)) != n_layers:
            raise ValueError(f"AttentionScores.layers has duplicates: {self.layers}")
        if not set(sources) <= set(self.genes) or list(self.source_index) != sorted(set(self.source_index)):
            raise ValueError("AttentionScores.sources must be distinct genes, in the order of `genes`")
        if self.sum.dtype != np.float64 or self.sum.ndim != 4 or self.sum.shape[0] != n_layers or (
            self.sum.shape[2:] != (n_sources, n_genes)
        ):
            raise ValueError(
                f"AttentionScores.sum must be float64 (L={n_layers}, H, S={n_sources}, G={n_genes}); "
                f"got {self.sum.dtype} {self.sum.shape}"
            )
        if self.head_mean_sum is None:
            if n_sources != n_genes:
                raise ValueError("AttentionScores.head_mean_sum is required when not every gene is a source")
            object.__setattr__(self, "head_mean_sum", self.sum.mean(axis=1))
            self._slices_read.add(("sum", None))  # derived: the per-head sums were read whole
        if self.head_mean_sum.dtype != np.float64 or self.head_mean_sum.shape != (n_layers, n_genes, n_genes):
            raise ValueError(
                f"AttentionScores.head_mean_sum must be float64 (L={n_layers}, G={n_genes}, G={n_genes}); got "
                f"{self.head_mean_sum.dtype} {self.head_mean_sum.shape}"
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
    def source_index(self) -> np.ndarray:
        """int64 (S,) position of each source in `genes`."""
        position = {gene: i for i, gene in enumerate(self.genes)}
        return np.array([position[gene] for gene in self.sources], dtype=np.int64)

    @property
    def score(self) -> str:
        """What `sum` accumulates: provenance["score"]; attention probability where unrecorded (old files)."""
        return str(self.provenance.get("score", ATTENTION_PROBABILITY))

    def _pair_divisor(self, rows: np.ndarray) -> np.ndarray:
        """float64 pair counts of `rows` x every gene, NaN where 0 and where a row meets its own gene."""
        count = self.count[rows].astype(np.float64)
        count[count == 0] = np.nan
        count[np.arange(len(rows)), rows] = np.nan
        return count

    def mean(self, layer: int | None = None) -> np.ndarray:
        """Per-head mean attention (or context cosine) of the source rows, float64 (L, H, S, G) = sum / count
        (one layer: (H, S, G)); NaN where count is 0 and where a source meets itself (self-attention of a
        gene is not an edge)."""
        summed = self.sum if layer is None else self.sum[self.layers.index(layer)]
        self._slices_read.add(("sum", layer))
        return summed / self._pair_divisor(self.source_index)

    def head_mean(self, layer: int | None = None) -> np.ndarray:
        """Mean over heads of the mean per pair, every pair: float64 (L, G, G) (one layer: (G, G)); NaN where
        count is 0 and on the diagonal."""
        summed = self.head_mean_sum if layer is None else self.head_mean_sum[self.layers.index(layer)]
        self._slices_read.add(("head_mean_sum", layer))
        return summed / self._pair_divisor(np.arange(len(self.genes)))

    @property
    def nbytes(self) -> int:
        """Bytes of the accumulators: per-head sums, head-mean sums and pair counts."""
        return self.sum.nbytes + self.head_mean_sum.nbytes + self.count.nbytes

    @property
    def bytes_read(self) -> int:
        """Bytes of the accumulators that `mean` and `head_mean` have served so far, each layer of an array
        counted once however often it was read, plus the pair counts (read whole): with a mapped `load`, what
        a step read of the file (a step that reads one layer's head means reads 1 / L of them)."""
        layers_read = {"sum": set(), "head_mean_sum": set()}
        for array, layer in self._slices_read:
            layers_read[array] |= set(range(len(self.layers))) if layer is None else {self.layers.index(layer)}
        per_layer = {"sum": self.sum[0].nbytes if self.layers else 0,
                     "head_mean_sum": self.head_mean_sum[0].nbytes if self.layers else 0}
        return self.count.nbytes + sum(len(read) * per_layer[array] for array, read in layers_read.items())

    def save(self, path: str | Path) -> Path:
        """Write one uncompressed .npz file atomically (temp file in the same folder, then rename)."""
        return save_npz_atomically(
            path,
            genes=np.asarray(self.genes, dtype=np.str_),
            sources=np.asarray(self.sources, dtype=np.str_),
            layers=np.asarray(self.layers, dtype=np.int64),
            sum=self.sum,
            head_mean_sum=self.head_mean_sum,
            count=self.count,
            n_cells=np.int64(self.n_cells),
            provenance=np.asarray(json.dumps(self.provenance, sort_keys=True), dtype=np.str_),
        )

    @classmethod
    def load(cls, path: str | Path) -> AttentionScores:
        """Read a file written by `save`, its large arrays memory-mapped read-only (no pickled objects are
        admitted). Files from before per-head sources hold neither `sources` nor `head_mean_sum`: every
        gene is then a source."""
        path = Path(path)
        with np.load(path, allow_pickle=False) as stored:
            names = set(stored.files)
            small = {name: stored[name] for name in ("genes", "layers", "count", "n_cells", "provenance", "sources")
                     if name in names}
        arrays = map_npz_arrays(path, [name for name in ("sum", "head_mean_sum") if name in names])
        return cls(
            genes=tuple(small["genes"].tolist()),
            layers=tuple(small["layers"].tolist()),
            sum=arrays["sum"],
            count=small["count"],
            n_cells=int(small["n_cells"]),
            provenance=json.loads(str(small["provenance"])) if "provenance" in small else {},
            sources=tuple(small["sources"].tolist()) if "sources" in small else None,
            head_mean_sum=arrays.get("head_mean_sum"),
        )


def map_npz_arrays(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Read-only memory maps of arrays stored uncompressed in an .npz file (np.savez): each member's data
    starts after its zip local header (30 bytes, then its name and extra field) and its .npy header."""
    maps = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as stream:
        for name in names:
            info = archive.getinfo(f"{name}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: {name} is compressed; arrays to map must be stored (np.savez)")
            stream.seek(info.header_offset)
            local = stream.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"{path}: no zip local header for {name}")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            stream.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(stream)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f"{path}: {name} uses .npy format {version}, which is not mapped")
            shape, fortran_order, dtype = readers[version](stream)
            if dtype.hasobject:
                raise ValueError(f"{path}: {name} holds Python objects, which are never loaded")
            maps[name] = np.memmap(path, dtype=dtype, mode="r", offset=stream.tell(), shape=shape,
                                   order="F" if fortran_order else "C")
    return maps
