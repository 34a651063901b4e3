"""The model-independent half of attention extraction: batching cells and reducing attention on the fly.

All layers' attention for one long cell is gigabytes on large models (FRAMEWORK.md section 4), so a model
adapter runs its encoder one layer at a time and hands each layer's probabilities (B, H, n, n) to
`AttentionAccumulator.add_layer`, which scatter-adds the selected gene pairs into float64 (L, H, G, G)
accumulators and lets the tensor go. Adapters only have to say, per batch, which accumulator gene each
token position is (`slots`, -1 for padding, special tokens and genes outside the requested set).

Value-weighted variant (opt-in, `AttentionAccumulator(..., value_weighted=True)`): the adapter also hands
over each layer's per-head context vectors (softmax(QK^T / sqrt(d)) V, before the output projection,
(B, H, n, d_head)); the accumulator adds cos(c_i, c_j) of every selected gene pair into a second float64
(L, H, G, G) sum in the same pass, with the same pair counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scinterp_assets.core.attention.scores import (
    ATTENTION_PROBABILITY,
    VALUE_WEIGHTED_COSINE,
    AttentionScores,
)

# progress(cells_done, cells_total, seconds_elapsed), called after each batch
ProgressCallback = Callable[[int, int, float], None]
NOT_ACCUMULATED = -1


def plan_batches(lengths: Sequence[int] | np.ndarray, batch_size: int,
                 token_budget: int | None = None) -> list[np.ndarray]:
    """Group cell indices into batches of similar token length, longest first: at most `batch_size` cells,
    and, with a `token_budget`, at most that many attention entries per head (cells x padded length^2; a
    cell longer than the budget allows goes alone), so peak memory is bounded by the budget, not by the
    number of cells or the longest cell.

    Sorting by length keeps padding (wasted attention compute) small; longest first makes an out-of-memory
    batch fail at once rather than at the end. The sort is stable, so the plan is deterministic.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if token_budget is not None and token_budget < 1:
        raise ValueError(f"token_budget must be >= 1 or None, got {token_budget}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        padded = int(lengths[order[start]])  # the batch's first cell is its longest
        size = batch_size if token_budget is None else max(1, min(batch_size, token_budget // max(padded**2, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_sequences(sequences: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad 1-D integer sequences: returns ids int64 (B, n_max) and attention mask bool (B, n_max)."""
    n_max = max(len(seq) for seq in sequences)
    ids = np.full((len(sequences), n_max), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), n_max), dtype=bool)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = True
    return ids, mask


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with `num_threads` intra-op threads (None: leave torch's default), then restore."""
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class ExtractionPlan:
    """What one attention_scores call accumulates, resolved and checked once for every model family.

    genes:          the G requested var names, accumulator order
    layers:         sorted layer indices to accumulate
    slot_of_token:  int64 (vocab,) accumulator gene index of each token id, NOT_ACCUMULATED otherwise
    context:        bool (n_vars,) vars a cell's context may hold (restricted context), or None (all genes)
    """

    genes: tuple[str, ...]
    layers: tuple[int, ...]
    slot_of_token: np.ndarray
    context: np.ndarray | None


def plan_extraction(
    var_names: Sequence[str],
    genes: Sequence[str],
    layers: Sequence[int] | None,
    n_layers: int,
    *,
    var_tokens: np.ndarray,
    var_owns_token: np.ndarray,
    vocab_size: int,
    restrict_context: bool,
) -> ExtractionPlan:
    """Check the request against the data and the model and build the token -> accumulator-row table.

    var_tokens: int64 (n_vars,) token of each var (-1: none); var_owns_token: bool (n_vars,) False for a
    repeat of an earlier var's token (its counts are merged into the first).
    """
    genes = tuple(str(gene) for gene in genes)
    var_index = {str(name): i for i, name in enumerate(var_names)}
    missing = [gene for gene in genes if gene not in var_index]
    if missing or len(set(genes)) != len(genes):
        raise ValueError(f"genes must be distinct entries of adata.var_names (not found: {missing[:10]})")
    layers = tuple(range(n_layers)) if layers is None else tuple(sorted({int(i) for i in layers}))
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise ValueError(f"layers must lie in [0, {n_layers}); got {layers}")
    gene_columns = np.array([var_index[gene] for gene in genes], dtype=np.int64)
    slot_of_token = np.full(vocab_size, NOT_ACCUMULATED, dtype=np.int64)
    for slot, column in enumerate(gene_columns):
        if var_owns_token[column]:
            slot_of_token[var_tokens[column]] = slot
    context = None
    if restrict_context:
        context = np.zeros(len(var_index), dtype=bool)
        context[gene_columns] = True
    return ExtractionPlan(genes, layers, slot_of_token, context)


# One layer's output as an adapter yields it: (layer index, attention probabilities (B, H, n, n)), or, for
# a value-weighted accumulator, (layer index, probabilities, per-head context vectors (B, H, n, d_head)).
LayerOutput = tuple[int, torch.Tensor] | tuple[int, torch.Tensor, torch.Tensor]
# encode_batch(cell indices) -> (slots int64 (B, n) with NOT_ACCUMULATED where nothing is accumulated,
#                                iterator of LayerOutput, one per layer, in layer order)
BatchEncoder = Callable[[np.ndarray], tuple[np.ndarray, Iterator[LayerOutput]]]


def labelled_results(scores: AttentionScores, accumulator: AttentionAccumulator, provenance: dict,
                     value_weighted: bool) -> AttentionScores | tuple[AttentionScores, AttentionScores]:
    """The streamed attention scores with their provenance, and the value-weighted scores of the same pass
    when they were accumulated; each records which score it holds."""
    scores = dataclasses.replace(scores, provenance=provenance | {"score": ATTENTION_PROBABILITY})
    if not value_weighted:
        return scores
    weighted = accumulator.value_weighted_result()
    return scores, dataclasses.replace(weighted, provenance=provenance | {"score": VALUE_WEIGHTED_COSINE})


def stream_attention(
    accumulator: AttentionAccumulator,
    lengths: Sequence[int],
    batch_size: int,
    encode_batch: BatchEncoder,
    progress: ProgressCallback | None = None,
    token_budget: int | None = None,
) -> AttentionScores:
    """Run every batch of cells (`plan_batches`) through `encode_batch`, reducing each layer into the
    accumulator as soon as it is computed; returns the accumulated attention scores (a value-weighted
    accumulator's second sum is read with `accumulator.value_weighted_result()`)."""
    started, done = time.perf_counter(), 0
    for batch in plan_batches(lengths, batch_size, token_budget):
        slots, layer_outputs = encode_batch(batch)
        selection = accumulator.add_cells(torch.from_numpy(slots))
        for index, probs, *context in layer_outputs:
            if index in accumulator.layers:
                accumulator.add_layer(index, probs, selection, context[0] if context else None)
        done += len(batch)
        if progress is not None:
            progress(done, len(lengths), time.perf_counter() - started)
    return accumulator.result()


@dataclass(frozen=True)
class CellSelection:
    """The accumulated token positions of each cell in one batch.

    positions: per cell, int64 (K_b,) token positions in the padded batch
    slots:     per cell, int64 (K_b,) accumulator gene index in [0, G) of those positions, all distinct
    pairs:     per cell, int64 (K_b * K_b,) flattened (source * G + target) accumulator index of every ordered
               pair, computed once and reused for the counts and every layer
    spans:     per cell, (first, stop) when the positions are one contiguous run (then a layer's block is a
               cheap slice instead of a gather; always so when every token of a cell is a requested gene)
    """

    positions: tuple[torch.Tensor, ...]
    slots: tuple[torch.Tensor, ...]
    pairs: tuple[torch.Tensor, ...]
    spans: tuple[tuple[int, int] | None, ...]

    def __post_init__(self) -> None:
        if not len(self.positions) == len(self.slots) == len(self.pairs) == len(self.spans):
            raise ValueError("CellSelection needs one positions, slots, pairs and span entry per cell")
        for pos, slot, pair in zip(self.positions, self.slots, self.pairs):
            if pos.shape != slot.shape or pos.ndim != 1 or pair.numel() != pos.numel() ** 2:
                raise ValueError(f"CellSelection: positions {tuple(pos.shape)} != slots {tuple(slot.shape)}")


class AttentionAccumulator:
    """Float64 sum (L, H, G, G) and int64 pair count (G, G) accumulators, kept on the compute device.

    Use per batch: `selection = acc.add_cells(slots)` once, then `acc.add_layer(layer, probs, selection)` for
    each requested layer; `acc.result()` moves everything to numpy at the end.

    value_weighted=True adds a second float64 (L, H, G, G) sum, `value_sum`, of the cosine similarity of
    the two genes' per-head context vectors; `add_layer` then needs the layer's context vectors too, and
    `value_weighted_result()` returns that sum with the shared pair counts.
    """

    def __init__(
        self,
        genes: Sequence[str],
        layers: Sequence[int],
        n_heads: int,
        device: str | torch.device,
        *,
        value_weighted: bool = False,
    ):
        self.genes = tuple(genes)
        self.layers = tuple(int(layer) for layer in layers)
        self._layer_row = {layer: row for row, layer in enumerate(self.layers)}
        n_genes = len(self.genes)
        self.device = torch.device(device)
        shape = (len(self.layers), n_heads, n_genes, n_genes)
        self.sum = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.count = torch.zeros((n_genes, n_genes), dtype=torch.int64, device=self.device)
        self.value_weighted = bool(value_weighted)
        self.value_sum = None
        if value_weighted:
            self.value_sum = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.n_cells = 0

    def _pair_index(self, slots: torch.Tensor) -> torch.Tensor:
        """Flattened (source * G + target) index of every ordered pair of a cell's slots: (K * K,)."""
        return (slots[:, None] * len(self.genes) + slots[None, :]).reshape(-1)

    def add_cells(self, slots: torch.Tensor) -> CellSelection:
        """Count the gene pairs of one batch of cells (once per cell) and return their selection.

        slots: int64 (B, n) accumulator gene index of each token position, NOT_ACCUMULATED (-1) for positions
        that are skipped (padding, special tokens, genes outside the requested set).
        """
        if slots.ndim != 2:
            raise ValueError(f"slots must be (B, n), got {tuple(slots.shape)}")
        slots = slots.to(self.device)
        positions, cell_slots, pairs, spans = [], [], [], []
        flat_count = self.count.view(-1)
        for row in slots:
            pos = torch.nonzero(row != NOT_ACCUMULATED).squeeze(1)
            slot = row[pos]
            # A repeated gene within one cell would be counted twice and break mean() = sum / count.
            if torch.unique(slot).numel() != slot.numel():
                raise ValueError("a cell maps two token positions to the same accumulator gene")
            pair = self._pair_index(slot)
            flat_count.index_add_(0, pair, torch.ones_like(pair))
            positions.append(pos)
            cell_slots.append(slot)
            pairs.append(pair)
            first, last = (int(pos[0]), int(pos[-1])) if pos.numel() else (0, -1)
            spans.append((first, last + 1) if last - first + 1 == pos.numel() else None)
        self.n_cells += int(slots.shape[0])
        return CellSelection(tuple(positions), tuple(cell_slots), tuple(pairs), tuple(spans))

    def add_layer(
        self, layer: int, probs: torch.Tensor, selection: CellSelection, context: torch.Tensor | None = None
    ) -> None:
        """Add one layer's attention probabilities (B, H, n, n), query x key, for the selected positions.

        context: per-head context vectors (B, H, n, d_head) of the same layer; required by (and only by) a
        value-weighted accumulator, which adds cos(c_i, c_j) of each selected pair (i, j) to `value_sum`.
        """
        row = self._layer_row[layer]
        n_heads = self.sum.shape[1]
        if probs.ndim != 4 or probs.shape[1] != n_heads or probs.shape[0] != len(selection.positions):
            raise ValueError(
                f"probs must be (B={len(selection.positions)}, H={n_heads}, n, n), got {tuple(probs.shape)}"
            )
        if (context is not None) != self.value_weighted:
            raise ValueError(
                "context vectors are required by a value-weighted accumulator and refused by any other "
                f"(value_weighted={self.value_weighted}, context given: {context is not None})"
            )
        if context is not None and (
            context.ndim != 4 or context.shape[:3] != (probs.shape[0], n_heads, probs.shape[2])
        ):
            raise ValueError(
                f"context must be (B={probs.shape[0]}, H={n_heads}, n={probs.shape[2]}, d_head), got "
                f"{tuple(context.shape)}"
            )
        target = self.sum[row].view(n_heads, -1)
        value_target = None if self.value_sum is None else self.value_sum[row].view(n_heads, -1)
        # One cell at a time bounds the float64 temporary to H * K^2 whatever the batch size.
        for cell, (pos, pair, span) in enumerate(zip(selection.positions, selection.pairs, selection.spans)):
            if pos.numel() == 0:
                continue
            if span is not None:
                block = probs[cell, :, span[0] : span[1], span[0] : span[1]]
            else:
                block = probs[cell][:, pos][:, :, pos]  # two 1-D gathers beat one broadcast 2-D gather
            target.index_add_(1, pair, block.reshape(n_heads, -1).to(torch.float64))
            if value_target is not None:
                value_target.index_add_(1, pair, pairwise_cosine(context[cell][:, pos]).reshape(n_heads, -1))

    def result(self) -> AttentionScores:
        """The accumulated scores as numpy arrays on the host."""
        return self._scores(self.sum)

    def value_weighted_result(self) -> AttentionScores:
        """The summed context-vector cosines (value-weighted accumulators only) and the shared pair counts."""
        if self.value_sum is None:
            raise ValueError("this accumulator was built without value_weighted=True")
        return self._scores(self.value_sum)

    def _scores(self, summed: torch.Tensor) -> AttentionScores:
        return AttentionScores(genes=self.genes, layers=self.layers, sum=summed.cpu().numpy(),
                               count=self.count.cpu().numpy(), n_cells=self.n_cells)


def pairwise_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every ordered pair of vectors, per head: (H, K, d) -> float64 (H, K, K).

    Computed in float64; a zero vector has cosine 0 with everything (its norm is clamped at 1e-12)."""
    unit = torch.nn.functional.normalize(vectors.to(torch.float64), dim=-1, eps=1e-12)
    return unit @ unit.transpose(-2, -1)
