"""The model-independent half of attention extraction: batching cells and reducing attention on the fly.

All layers' attention for one long cell is gigabytes on large models (FRAMEWORK.md section 4), so a model
adapter runs its encoder one layer at a time and hands each layer's probabilities (B, H, n, n) to
`AttentionAccumulator.add_layer`, which scatter-adds the selected gene pairs into float64 accumulators and
lets the tensor go: per head only for the source rows the analyses read (S x G), and the head mean over
every pair (G x G). Adapters only have to say, per batch, which accumulator gene each token position is
(`slots`, -1 for padding, special tokens and genes outside the requested set).

Value-weighted variant (opt-in, `AttentionAccumulator(..., value_weighted=True)`): the adapter also hands
over each layer's per-head context vectors (softmax(QK^T / sqrt(d)) V, before the output projection,
(B, H, n, d_head)); the accumulator adds the head mean of cos(c_i, c_j) of every selected gene pair into a
float64 (L, G, G) sum in the same pass, with the same pair counts.

Grouped accumulation (opt-in, `AttentionAccumulator(..., groups=CellGroups(...))`, FRAMEWORK A20-A21): each cell
also adds one layer's head-mean rows of a few genes into the sums of the groups it belongs to (scaling rungs,
cell-state strata, null blocks; see `core.attention.grouped`), in the same pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scinterp_assets.core.attention.grouped import CellGroups, GroupedScores
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
                     value_weighted: bool) -> AttentionScores | tuple[AttentionScores, ...]:
    """The streamed attention scores with their provenance, then the value-weighted scores of the same pass
    when they were accumulated (each records which score it holds), then the grouped scores when groups were
    accumulated; a lone attention result is returned as itself."""
    results = [dataclasses.replace(scores, provenance=provenance | {"score": ATTENTION_PROBABILITY})]
    if value_weighted:
        weighted = accumulator.value_weighted_result()
        results.append(dataclasses.replace(weighted, provenance=provenance | {"score": VALUE_WEIGHTED_COSINE}))
    if accumulator.groups is not None:
        results.append(dataclasses.replace(accumulator.grouped_result(), provenance=provenance))
    return results[0] if len(results) == 1 else tuple(results)


def stream_attention(
    accumulator: AttentionAccumulator,
    lengths: Sequence[int],
    batch_size: int,
    encode_batch: BatchEncoder,
    progress: ProgressCallback | None = None,
    token_budget: int | None = None,
    cell_rows: np.ndarray | None = None,
) -> AttentionScores:
    """Run every batch of cells (`plan_batches`) through `encode_batch`, reducing each layer into the
    accumulator as soon as it is computed; returns the accumulated attention scores (a value-weighted
    accumulator's second sum is read with `accumulator.value_weighted_result()`, a grouped one's with
    `accumulator.grouped_result()`). cell_rows: int64 (len(lengths),) the input (adata) row of each cell, which
    a grouped accumulator looks its groups up by."""
    started, done = time.perf_counter(), 0
    for batch in plan_batches(lengths, batch_size, token_budget):
        slots, layer_outputs = encode_batch(batch)
        selection = accumulator.add_cells(torch.from_numpy(slots), None if cell_rows is None else cell_rows[batch])
        for index, probs, *context in layer_outputs:
            if index in accumulator.layers:
                accumulator.add_layer(index, probs, selection, context[0] if context else None)
            del probs, context  # released before the next layer's forward pass allocates its own
        done += len(batch)
        if progress is not None:
            progress(done, len(lengths), time.perf_counter() - started)
    return accumulator.result()


# Entries a chunk of one cell's accumulated block holds: every index and value temporary of a cell's layer is
# bounded by this (2^18 entries: 2 MiB of int64 indices) instead of growing with the square of its genes, so
# peak memory does not creep up with the rare long cells a larger sample holds.
CHUNK_ENTRIES = 1 << 18


@dataclass(frozen=True)
class CellSelection:
    """The accumulated token positions of each cell in one batch.

    positions:   per cell, int64 (K_b,) token positions in the padded batch
    slots:       per cell, int64 (K_b,) accumulator gene index in [0, G) of those positions, all distinct
    source_at:   per cell, int64 (S_b,) indices into `positions` of the cell's source genes (rows kept per head)
    source_rows: per cell, int64 (S_b,) the per-head row of each of those source genes
    spans:       per cell, (first, stop) when the positions are one contiguous run (then a layer's block is a
                 cheap slice instead of a gather; always so when every token of a cell is a requested gene)
    groups:      per cell, int64 the groups it adds to (grouped accumulators; empty otherwise)
    """

    positions: tuple[torch.Tensor, ...]
    slots: tuple[torch.Tensor, ...]
    source_at: tuple[torch.Tensor, ...]
    source_rows: tuple[torch.Tensor, ...]
    spans: tuple[tuple[int, int] | None, ...]
    groups: tuple[torch.Tensor, ...]

    def __post_init__(self) -> None:
        fields = (self.positions, self.slots, self.source_at, self.source_rows, self.spans, self.groups)
        if len({len(field) for field in fields}) != 1:
            raise ValueError("CellSelection needs one entry per cell in every field")
        for pos, slot, at, rows in zip(self.positions, self.slots, self.source_at, self.source_rows):
            if pos.shape != slot.shape or pos.ndim != 1 or at.shape != rows.shape:
                raise ValueError(f"CellSelection: positions {tuple(pos.shape)} != slots {tuple(slot.shape)}")


class AttentionAccumulator:
    """Float64 per-head sums (L, H, S, G) over the source rows, head-mean sums (L, G, G) over every pair, and
    an int64 pair count (G, G), kept on the compute device.

    sources (default: every gene) are the rows (query genes) kept per head; memory and work per head scale
    with S x G instead of G^2. Where S < G the head mean over every pair is accumulated directly (one (K, K)
    block per cell and layer instead of H); where every gene is a source it is derived from the per-head sums.

    Use per batch: `selection = acc.add_cells(slots)` once, then `acc.add_layer(layer, probs, selection)` for
    each requested layer; `acc.result()` moves everything to numpy at the end.

    value_weighted=True also sums, per layer, the head mean of the cosine similarity of the two genes' per-head
    context vectors over every pair (FRAMEWORK section 4 averages it over heads; no per-head rows are kept);
    `add_layer` then needs the layer's context vectors too, and `value_weighted_result()` returns that sum
    with the shared pair counts.

    groups (`CellGroups`) also sums, for its one layer, the head mean of its row genes against every gene per
    group, with per-group pair counts (and value-weighted cosines when value_weighted); `add_cells` then needs
    each batch cell's input row, and `grouped_result()` returns the sums.
    """

    def __init__(
        self,
        genes: Sequence[str],
        layers: Sequence[int],
        n_heads: int,
        device: str | torch.device,
        *,
        value_weighted: bool = False,
        sources: Sequence[str] | None = None,
        groups: CellGroups | None = None,
    ):
        self.genes = tuple(genes)
        self.sources = source_rows(self.genes, sources)
        self.layers = tuple(int(layer) for layer in layers)
        self._layer_row = {layer: row for row, layer in enumerate(self.layers)}
        self.n_heads = int(n_heads)
        n_genes, n_layers = len(self.genes), len(self.layers)
        self.device = torch.device(device)
        row_of_gene = {gene: row for row, gene in enumerate(self.sources)}
        self._source_row = torch.tensor([row_of_gene.get(gene, -1) for gene in self.genes], dtype=torch.int64,
                                        device=self.device)
        self._every_gene_a_source = len(self.sources) == n_genes
        self.sum = torch.zeros((n_layers, self.n_heads, len(self.sources), n_genes), dtype=torch.float64,
                               device=self.device)
        pair_shape = (n_layers, n_genes, n_genes)
        self.head_sum = None if self._every_gene_a_source else torch.zeros(pair_shape, dtype=torch.float64,
                                                                             device=self.device)
        self.count = torch.zeros((n_genes, n_genes), dtype=torch.int64, device=self.device)
        self.value_weighted = bool(value_weighted)
        self.value_head_sum = None
        if value_weighted:
            self.value_head_sum = torch.zeros(pair_shape, dtype=torch.float64, device=self.device)
        self.n_cells = 0
        self.groups = groups
        if groups is not None:
            self._init_groups(groups)

    def _init_groups(self, groups: CellGroups) -> None:
        if groups.layer not in self.layers:
            raise ValueError(f"grouped layer {groups.layer} is not among the accumulated layers {self.layers}")
        unknown = sorted(set(groups.rows) - set(self.sources))
        if unknown:
            raise ValueError(f"grouped rows must be per-head sources; not sources: {unknown[:10]}")
        row_of_gene = {gene: row for row, gene in enumerate(groups.rows)}
        self._group_row = torch.tensor([row_of_gene.get(gene, -1) for gene in self.genes], dtype=torch.int64,
                                       device=self.device)
        if [gene for gene in self.genes if gene in row_of_gene] != list(groups.rows):
            raise ValueError("CellGroups.rows must be in the order of the accumulated genes")
        shape = (len(groups.names), len(groups.rows), len(self.genes))
        self.group_sum = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.group_value_sum = (torch.zeros(shape, dtype=torch.float64, device=self.device) if self.value_weighted
                                else None)
        self.group_count = torch.zeros(shape, dtype=torch.int32, device=self.device)
        self.group_cells = torch.zeros(len(groups.names), dtype=torch.int64, device=self.device)

    def add_cells(self, slots: torch.Tensor, cell_rows: np.ndarray | None = None) -> CellSelection:
        """Count the gene pairs of one batch of cells (once per cell) and return their selection.

        slots: int64 (B, n) accumulator gene index of each token position, NOT_ACCUMULATED (-1) for positions
        that are skipped (padding, special tokens, genes outside the requested set).
        cell_rows: int64 (B,) input row of each cell; required by a grouped accumulator
        """
        if slots.ndim != 2:
            raise ValueError(f"slots must be (B, n), got {tuple(slots.shape)}")
        if self.groups is not None and (cell_rows is None or len(cell_rows) != slots.shape[0]):
            raise ValueError("a grouped accumulator needs the input row of every cell of the batch (cell_rows)")
        slots = slots.to(self.device)
        n_genes = len(self.genes)
        presence = torch.zeros((slots.shape[0], n_genes), dtype=torch.float32, device=self.device)
        fields: dict[str, list] = {name: [] for name in (
            "positions", "slots", "source_at", "source_rows", "spans", "groups")}
        for cell, row in enumerate(slots):
            pos = torch.nonzero(row != NOT_ACCUMULATED).squeeze(1)
            slot = row[pos]
            # A repeated gene within one cell would be counted twice and break mean() = sum / count.
            if torch.unique(slot).numel() != slot.numel():
                raise ValueError("a cell maps two token positions to the same accumulator gene")
            presence[cell, slot] = 1.0
            source_row = self._source_row[slot]
            at = torch.nonzero(source_row >= 0).squeeze(1)
            fields["positions"].append(pos)
            fields["slots"].append(slot)
            fields["source_at"].append(at)
            fields["source_rows"].append(source_row[at])
            first, last = (int(pos[0]), int(pos[-1])) if pos.numel() else (0, -1)
            fields["spans"].append((first, last + 1) if last - first + 1 == pos.numel() else None)
            fields["groups"].append(self._count_group_pairs(slot, None if cell_rows is None else int(cell_rows[cell])))
        # Pair counts of the whole batch as one product: exact (a batch's counts are small integers in float32).
        self.count += torch.round(presence.T @ presence).to(torch.int64)
        self.n_cells += int(slots.shape[0])
        return CellSelection(**{name: tuple(values) for name, values in fields.items()})

    def _count_group_pairs(self, slot: torch.Tensor, cell_row: int | None) -> torch.Tensor:
        """The groups of one cell (none without grouping), after adding its pairs of grouped rows x genes to
        each group's counts."""
        if self.groups is None:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        membership = self.groups.membership[cell_row]
        groups = torch.from_numpy(membership[membership >= 0]).to(self.device)
        self.group_cells[groups] += 1
        group_row = self._group_row[slot]
        ones = torch.ones((1, 1), dtype=torch.int32, device=self.device).expand(slot.numel(), slot.numel())  # a view
        self._add_to_groups(self.group_count, group_row, slot, ones, groups)
        return groups

    def add_layer(
        self, layer: int, probs: torch.Tensor, selection: CellSelection, context: torch.Tensor | None = None
    ) -> None:
        """Add one layer's attention probabilities (B, H, n, n), query x key, for the selected positions.

        context: per-head context vectors (B, H, n, d_head) of the same layer; required by (and only by) a
        value-weighted accumulator, which adds the head mean of cos(c_i, c_j) of each selected pair (i, j).
        """
        row = self._layer_row[layer]
        n_heads = self.n_heads
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
        per_head = self.sum[row].view(n_heads, -1)
        n_genes = len(self.genes)
        # One cell at a time, and within it a chunk of rows at a time: the temporaries (indices, float64
        # copies, cosines) stay below CHUNK_ENTRIES per head whatever the batch size or the cell's genes.
        for cell, (pos, slot, at, source_row, span) in enumerate(zip(
                selection.positions, selection.slots, selection.source_at, selection.source_rows, selection.spans)):
            n_kept = pos.numel()
            if n_kept == 0:
                continue
            step = max(1, CHUNK_ENTRIES // n_kept)
            if self._every_gene_a_source:  # the rows are the cell's genes themselves
                rows_at, row_targets = None, slot
            else:
                rows_at, row_targets = at, source_row
            groups = selection.groups[cell] if self.groups is not None and layer == self.groups.layer else None
            row_groups = None if groups is None else self._group_row[slot if rows_at is None else slot[rows_at]]
            for start in range(0, row_targets.numel(), step):
                chunk = slice(start, start + step)
                block = _rows_block(probs[cell], pos, span, chunk, rows_at).to(torch.float64)  # (H, rows, K)
                index = (row_targets[chunk, None] * n_genes + slot[None, :]).reshape(-1)
                per_head.index_add_(1, index, block.reshape(n_heads, -1))
                if groups is not None:  # the grouped rows of this chunk, summed over heads, into each group
                    self._add_to_groups(self.group_sum, row_groups[chunk], slot, block.sum(0), groups)
            if self.head_sum is None and self.value_head_sum is None:
                continue
            # Summed over heads before the gather (one pass over the layer's (n, n) block, then K^2 picked instead
            # of H K^2), in float32: relative error at most (H - 1) eps32 (see AttentionScores).
            summed = probs[cell].sum(0) if self.head_sum is not None else None
            unit = head_unit_vectors(context[cell][:, pos]) if self.value_head_sum is not None else None  # (K, H d)
            for start in range(0, n_kept, step):
                chunk = slice(start, start + step)
                index = (slot[chunk, None] * n_genes + slot[None, :]).reshape(-1)
                if summed is not None:
                    self.head_sum[row].view(-1).index_add_(
                        0, index, _rows_block(summed, pos, span, chunk).reshape(-1).to(torch.float64))
                if unit is not None:
                    cosines = unit[chunk] @ unit.T
                    self.value_head_sum[row].view(-1).index_add_(0, index, cosines.reshape(-1))
                    if groups is not None:  # value-weighted accumulators group the cosines too
                        self._add_to_groups(self.group_value_sum, self._group_row[slot[chunk]], slot, cosines, groups)

    def _add_to_groups(self, sums: torch.Tensor, row_groups: torch.Tensor, slot: torch.Tensor, block: torch.Tensor,
                       groups: torch.Tensor) -> None:
        """Add the rows of a (rows, K) block whose grouped row (`row_groups`, -1: not grouped) is kept to each of
        the cell's `groups` in `sums` (groups, R, G): one index_add for all of them."""
        kept = torch.nonzero(row_groups >= 0).squeeze(1)
        if not kept.numel() or not groups.numel():
            return
        entries = (row_groups[kept, None] * len(self.genes) + slot[None, :]).reshape(-1)  # within one group
        index = (groups[:, None] * sums[0].numel() + entries[None, :]).reshape(-1)  # group after group
        sums.view(-1).index_add_(0, index, block[kept].reshape(-1).repeat(groups.numel()))

    def grouped_result(self) -> GroupedScores:
        """The per-group head means' sums of the grouped layer (grouped accumulators only)."""
        if self.groups is None:
            raise ValueError("this accumulator was built without groups")
        value_sum = (self.group_value_sum / self.n_heads if self.group_value_sum is not None
                     else torch.zeros((0, *self.group_sum.shape[1:]), dtype=torch.float64))
        return GroupedScores(genes=self.genes, rows=self.groups.rows, layer=self.groups.layer,
                             groups=self.groups.names, attention_sum=(self.group_sum / self.n_heads).cpu().numpy(),
                             value_weighted_sum=value_sum.cpu().numpy(), count=self.group_count.cpu().numpy(),
                             n_cells=self.group_cells.cpu().numpy())

    def result(self) -> AttentionScores:
        """The accumulated attention scores as numpy arrays on the host."""
        head_mean_sum = None if self.head_sum is None else (self.head_sum / self.n_heads).cpu().numpy()
        return AttentionScores(genes=self.genes, layers=self.layers, sum=self.sum.cpu().numpy(),
                               count=self.count.cpu().numpy(), n_cells=self.n_cells, sources=self.sources,
                               head_mean_sum=head_mean_sum)

    def value_weighted_result(self) -> AttentionScores:
        """The head-mean context-vector cosines summed over cells (value-weighted accumulators only), with the
        shared pair counts; no per-head rows (sources = ())."""
        if self.value_head_sum is None:
            raise ValueError("this accumulator was built without value_weighted=True")
        no_rows = np.zeros((len(self.layers), self.n_heads, 0, len(self.genes)))
        return AttentionScores(genes=self.genes, layers=self.layers, sum=no_rows, count=self.count.cpu().numpy(),
                               n_cells=self.n_cells, sources=(),
                               head_mean_sum=(self.value_head_sum / self.n_heads).cpu().numpy())


def _rows_block(values: torch.Tensor, positions: torch.Tensor, span: tuple[int, int] | None, chunk: slice,
                rows_at: torch.Tensor | None = None) -> torch.Tensor:
    """values[..., rows, :][..., positions] of a (..., n, n) tensor for one chunk of rows: the rows are
    positions[chunk], or positions[rows_at[chunk]] given `rows_at`. `span` (first, stop) says the positions
    are one contiguous run, which is then sliced (the rows too, when they are the positions themselves)
    instead of gathered. Two 1-D gathers beat one broadcast 2-D gather."""
    if span is not None and rows_at is None:
        first = span[0] + (chunk.start or 0)
        return values[..., first: min(first + chunk.stop - chunk.start, span[1]), span[0]: span[1]]
    rows = positions[chunk] if rows_at is None else positions[rows_at[chunk]]
    picked = values.index_select(-2, rows)
    return picked[..., span[0]: span[1]] if span is not None else picked.index_select(-1, positions)


def source_rows(genes: Sequence[str], sources: Sequence[str] | None) -> tuple[str, ...]:
    """The per-head rows: `sources` (default every gene) in the order of `genes`; each must be one of them."""
    if sources is None:
        return tuple(genes)
    wanted = {str(source) for source in sources}
    unknown = sorted(wanted - set(genes))
    if unknown:
        raise ValueError(f"sources must be among the requested genes; not requested: {unknown[:10]}")
    return tuple(gene for gene in genes if gene in wanted)


def head_unit_vectors(vectors: torch.Tensor) -> torch.Tensor:
    """Per-head vectors (H, K, d) -> float64 (K, H d): each head's unit vector, laid side by side, so that
    row_i . row_j is the sum over heads of cos(v_hi, v_hj), without an (H, K, K) temporary. A zero vector
    has cosine 0 with everything (its norm is clamped at 1e-12)."""
    unit = torch.nn.functional.normalize(vectors.to(torch.float64), dim=-1, eps=1e-12)
    return unit.transpose(0, 1).reshape(unit.shape[1], -1)
