"""Cell embeddings: one vector per cell pooled from a model's final hidden states.

Model adapters (`cell_embeddings`) tokenise the cells as attention extraction does, run a plain forward pass
in the same length-sorted batches (`plan_batches`), and pool each cell's final-layer output here: "cls" takes
the class-token position (0), "mean" averages the cell's gene-token positions (never padding or special
tokens).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from scinterp_assets.core.attention.scores import save_npz_atomically
from scinterp_assets.core.attention.streaming import ProgressCallback, plan_batches

POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class CellEmbeddings:
    """One embedding per cell.

    cell_ids:   obs_names of the embedded cells, in adata order
    values:     float32 (n_cells, d), row k belongs to cell_ids[k]
    pooling:    "cls" (class-token position of the final layer) or "mean" (mean over the cell's gene tokens
                of the final layer)
    skipped:    obs_names of cells left out because none of their genes is known to the model (in adata order)
    provenance: JSON-serialisable settings that produced the embeddings (family, seed, tokenisation options)
    """

    cell_ids: tuple[str, ...]
    values: np.ndarray
    pooling: str
    skipped: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cell_ids", tuple(str(cell) for cell in self.cell_ids))
        object.__setattr__(self, "skipped", tuple(str(cell) for cell in self.skipped))
        if self.pooling not in POOLINGS:
            raise ValueError(f"CellEmbeddings.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.values.dtype != np.float32 or self.values.ndim != 2 or len(self.values) != len(self.cell_ids):
            raise ValueError(
                f"CellEmbeddings.values must be float32 (n_cells={len(self.cell_ids)}, d); got "
                f"{self.values.dtype} {self.values.shape}"
            )
        if len(set(self.cell_ids)) != len(self.cell_ids):
            raise ValueError("CellEmbeddings.cell_ids has duplicates; obs_names must be unique")
        if set(self.cell_ids) & set(self.skipped):
            raise ValueError("a cell cannot be both embedded and skipped")

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def save(self, path: str | Path) -> Path:
        """Write one .npz file atomically (temp file in the same folder, then rename); returns the path."""
        return save_npz_atomically(
            path,
            cell_ids=np.asarray(self.cell_ids, dtype=np.str_),
            values=self.values,
            pooling=np.asarray(self.pooling, dtype=np.str_),
            skipped=np.asarray(self.skipped, dtype=np.str_),
            provenance=np.asarray(json.dumps(self.provenance, sort_keys=True), dtype=np.str_),
        )

    @classmethod
    def load(cls, path: str | Path) -> CellEmbeddings:
        """Read a file written by `save` (no pickled objects are admitted)."""
        with np.load(Path(path), allow_pickle=False) as stored:
            return cls(
                cell_ids=tuple(stored["cell_ids"].tolist()),
                values=stored["values"],
                pooling=str(stored["pooling"]),
                skipped=tuple(stored["skipped"].tolist()),
                provenance=json.loads(str(stored["provenance"])),
            )


def resolve_pooling(pooling: str, default: str, has_cls: bool, what: str) -> str:
    """The pooling to use: `default` for "auto"; refuses unknown names, and "cls" without a class token."""
    if pooling == "auto":
        pooling = default
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'auto', 'cls' or 'mean', got {pooling!r}")
    if pooling == "cls" and not has_cls:
        raise ValueError(f"pooling='cls' needs a <cls> token, which {what} does not have; use 'mean'")
    return pooling


def pool_hidden(hidden: torch.Tensor, genes: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool final hidden states (B, n, d) to (B, d).

    genes: bool (B, n), True at each cell's gene-token positions (False at padding and special tokens); "mean"
    averages those positions, "cls" takes position 0. Each cell needs at least one gene position.
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise ValueError(f"unknown pooling {pooling!r}")
    genes = genes.to(hidden.device)
    if not bool(genes.any(dim=1).all()):
        raise ValueError("mean pooling needs at least one gene token in every cell")
    # where(), not a product: whatever sits at padded positions can never reach the mean (0 * inf is NaN)
    kept = torch.where(genes[..., None], hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
    return kept.sum(dim=1) / genes.sum(dim=1, keepdim=True).to(hidden.dtype)


# embed_batch(cell indices) -> pooled embeddings (B, d) of those cells, in the order given
BatchEmbedder = Callable[[np.ndarray], torch.Tensor]


def stream_embeddings(
    lengths: Sequence[int],
    batch_size: int,
    dim: int,
    embed_batch: BatchEmbedder,
    progress: ProgressCallback | None = None,
    token_budget: int | None = None,
) -> np.ndarray:
    """Embed every cell in length-sorted batches (as attention extraction batches them, `plan_batches`);
    returns float32 (n_cells, dim) with row k for cell k whatever the batch order."""
    started, done = time.perf_counter(), 0
    values = np.empty((len(lengths), dim), dtype=np.float32)
    for batch in plan_batches(lengths, batch_size, token_budget):
        pooled = embed_batch(batch)
        if tuple(pooled.shape) != (len(batch), dim):
            raise ValueError(f"embed_batch must return ({len(batch)}, {dim}), got {tuple(pooled.shape)}")
        values[batch] = pooled.detach().to(torch.float32).cpu().numpy()
        done += len(batch)
        if progress is not None:
            progress(done, len(lengths), time.perf_counter() - started)
    return values
