"""What an intervention does to a model's outputs (FRAMEWORK.md family C: A17-A19 readouts (a)-(d)).

The study read ablations off re-extracted attention only, a readout that cannot move for interventions at or
after its own layer. These readouts look at what the model computes instead, for either family:

  fidelity             how far an intervention moves the model: the mean cosine distance of every layer's
                       hidden states (real tokens) from the clean run's, its maximum over layers, and the mean
                       cosine distance of each cell's output (Geneformer's masked-token logits, centred per
                       token; scGPT's expression-decoder predictions, centred over the cell's gene tokens)
  masked_prediction    masked-gene reconstruction on held-out cells, with the same seeded positions in every
                       condition so that conditions pair cell by cell (Geneformer: cross-entropy and accuracy
                       of the masked tokens; scGPT: squared error of the masked values)
  in_silico_response   the model's predicted response to silencing each perturbed gene in each cell that
                       expresses it (Geneformer deletes the gene's token and measures every other gene's
                       contextual-embedding shift, 1 - cosine, as Geneformer's own in-silico perturbation
                       does; scGPT sets the gene's value to the zero-expression bin and reads the absolute
                       change of the decoder's prediction for every other gene), as a perturbation x target
                       matrix to score against the measured DE labels

`reextracted_attention` is the study's own readout (a), attention edges re-extracted under the intervention,
kept beside them to show where it cannot move. `head_entropy` measures each head's mean attention entropy,
which control heads are matched on.

A model offers them through a few methods: `readout_cells`, `token_slots`, `forward_states`,
`layer_probabilities`, `mask` / `masked_errors` and `silence`, and its `in_silico_readout`
("embedding_shift" or "predicted_change").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from scinterp_assets.core.attention.streaming import NOT_ACCUMULATED, AttentionAccumulator, plan_batches
from scinterp_assets.core.models.interventions import Intervenable, Intervention, intervene


@dataclass(frozen=True)
class ReadoutCell:
    """One tokenised cell: ids int64 (n,), values float32 (n,) (scGPT's binned values; None for Geneformer),
    genes bool (n,) True at positions that hold a gene (not <cls> or <eos>)."""

    ids: np.ndarray
    values: np.ndarray | None
    genes: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.ndim != 1 or self.genes.shape != self.ids.shape:
            raise ValueError(f"ReadoutCell: ids {self.ids.shape} and genes {self.genes.shape} must be equal 1-D")
        if self.values is not None and self.values.shape != self.ids.shape:
            raise ValueError(f"ReadoutCell: values {self.values.shape} must match ids {self.ids.shape}")


@dataclass(frozen=True)
class ForwardStates:
    """A batch's forward pass: every layer's output (B, n, d) in layer order, the real-token mask bool (B, n),
    and `outputs(states (m, d)) -> (m, k)`, the model's output head applied to last-layer states."""

    hidden: tuple[torch.Tensor, ...]
    real: torch.Tensor
    outputs: Callable[[torch.Tensor], torch.Tensor]


class ReadoutModel(Intervenable, Protocol):
    in_silico_readout: Literal["embedding_shift", "predicted_change"]

    def forward_states(self, cells: Sequence[ReadoutCell], device: str) -> ForwardStates: ...

    def mask(self, cell: ReadoutCell, positions: np.ndarray) -> tuple[ReadoutCell, np.ndarray]: ...

    def masked_errors(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def silence(self, cell: ReadoutCell, position: int) -> tuple[ReadoutCell, np.ndarray]: ...

    def layer_probabilities(self, cells: Sequence[ReadoutCell], device: str) -> tuple[torch.Tensor, Iterator]: ...


@dataclass(frozen=True)
class Batching:
    """How readouts batch cells: at most `batch_size` cells and `token_budget` attention entries per head."""

    batch_size: int = 8
    token_budget: int | None = None
    device: str = "cpu"

    def batches(self, cells: Sequence[ReadoutCell]) -> list[np.ndarray]:
        return plan_batches([len(cell.ids) for cell in cells], self.batch_size, self.token_budget)


def cosine_distance(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity along the last axis, in float64, within [0, 2]; exactly 0 for identical vectors
    (an unmoved state reads 0, not rounding noise) and for two zero vectors."""
    first, second = first.double(), second.double()
    norms = first.norm(dim=-1) * second.norm(dim=-1)
    similarity = (first * second).sum(dim=-1) / norms.clamp(min=torch.finfo(torch.float64).tiny)
    unmoved = (first == second).all(dim=-1) | (norms == 0)
    return torch.where(unmoved, torch.zeros_like(similarity), (1.0 - similarity).clamp(0.0, 2.0))


@dataclass(frozen=True)
class Fidelity:
    """hidden_distance: float64 (L,) mean cosine distance of each layer's hidden states (every real token of
    every cell) from the clean run; output_distance: mean over cells of the cosine distance of the cell's
    outputs over its gene tokens. `moved(threshold)`: whether either exceeds the threshold."""

    hidden_distance: np.ndarray
    output_distance: float

    @property
    def max_hidden_distance(self) -> float:
        return float(self.hidden_distance.max())

    def moved(self, threshold: float) -> bool:
        return max(self.max_hidden_distance, self.output_distance) > threshold


def fidelity(model: ReadoutModel, cells: Sequence[ReadoutCell], interventions: Iterable[Intervention],
             batching: Batching) -> Fidelity:  # fmt: skip
    """How far `interventions` move the model on `cells` (each batch run clean, then intervened); no
    intervention moves nothing, and costs no forward pass."""
    interventions = tuple(interventions)
    if not interventions:
        return Fidelity(np.zeros(model.n_layers), 0.0)
    hidden_sums, tokens, output_sum = np.zeros(model.n_layers), 0, 0.0
    with torch.inference_mode():
        for batch in batching.batches(cells):
            chosen = [cells[i] for i in batch]
            clean = model.forward_states(chosen, batching.device)
            with intervene(model, interventions):
                changed = model.forward_states(chosen, batching.device)
            for layer, (before, after) in enumerate(zip(clean.hidden, changed.hidden)):
                hidden_sums[layer] += float(cosine_distance(before[clean.real], after[clean.real]).sum())
            tokens += int(clean.real.sum())
            for row, cell in enumerate(chosen):
                positions = torch.from_numpy(np.flatnonzero(cell.genes))
                before = _comparable(clean.outputs(clean.hidden[-1][row, positions]))
                after = _comparable(changed.outputs(changed.hidden[-1][row, positions]))
                output_sum += float(cosine_distance(before, after))
    return Fidelity(hidden_sums / max(tokens, 1), output_sum / max(len(cells), 1))


def entropy_sums(probs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Summed entropy (nats) per head of every real query's attention over the keys: probs (B, H, n, n),
    real bool (B, n). Returns float64 (H,)."""
    p = probs.double()
    terms = torch.where(p > 0, -p * torch.log(p), torch.zeros_like(p))
    return (terms.sum(dim=-1) * real[:, None, :].double()).sum(dim=(0, 2))


def head_entropy(model: ReadoutModel, cells: Sequence[ReadoutCell], batching: Batching) -> np.ndarray:
    """float64 (L, H): each head's mean attention entropy (nats) over every real query of `cells`: how
    diffuse its attention is, the quantity entropy-matched control heads are matched on."""
    sums, queries = np.zeros((model.n_layers, model.n_heads)), 0
    with torch.inference_mode():
        for batch in batching.batches(cells):
            real, stream = model.layer_probabilities([cells[i] for i in batch], batching.device)
            for layer, probs in stream:
                sums[layer] += entropy_sums(probs, real).cpu().numpy()
            queries += int(real.sum())
    return sums / max(queries, 1)


def _comparable(outputs: torch.Tensor) -> torch.Tensor:
    """A cell's outputs (m, k) flattened and centred for a cosine: logits (k > 1) per token, since a softmax
    reads them only up to a constant; single values (scGPT's predicted bins) over the cell's genes. A shared
    offset (a large bias on special tokens, bins that are all positive) would otherwise make any two output
    vectors look alike, and an intervention that moved the outputs would read as one that did not."""
    centred = outputs - outputs.mean(dim=-1 if outputs.shape[-1] > 1 else 0, keepdim=True)
    return centred.flatten()


@dataclass(frozen=True)
class MaskedPrediction:
    """Per cell (in `cells` order): mean loss over its masked genes, float64 (n_cells,) (Geneformer:
    cross-entropy of the true token; scGPT: squared error of the binned value), and the fraction of them
    predicted exactly (Geneformer's top-1 token; NaN for scGPT, whose output is a value)."""

    loss: np.ndarray
    accuracy: np.ndarray
    n_masked: int


def masked_positions(cells: Sequence[ReadoutCell], fraction: float, seed: int) -> list[np.ndarray]:
    """Seeded positions to mask in each cell: round(fraction x its genes), at least one, gene positions only
    (never <cls>, <eos> or padding). The same seed gives the same positions in every condition."""
    if not 0 < fraction < 1:
        raise ValueError(f"masked fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cell in cells:
        candidates = np.flatnonzero(cell.genes)
        count = min(len(candidates), max(1, round(fraction * len(candidates))))
        chosen.append(np.sort(rng.choice(candidates, count, replace=False)))
    return chosen


def masked_prediction(model: ReadoutModel, cells: Sequence[ReadoutCell], positions: Sequence[np.ndarray],
                      interventions: Iterable[Intervention], batching: Batching) -> MaskedPrediction:  # fmt: skip
    """Masked-gene reconstruction of `cells` with `positions` masked, under `interventions` (none: clean)."""
    masked = [model.mask(cell, where) for cell, where in zip(cells, positions)]
    loss, accuracy = np.full(len(cells), np.nan), np.full(len(cells), np.nan)
    with torch.inference_mode(), intervene(model, interventions):
        for batch in batching.batches([cell for cell, _ in masked]):
            states = model.forward_states([masked[i][0] for i in batch], batching.device)
            for row, index in enumerate(batch):
                where = torch.from_numpy(positions[index])
                errors, correct = model.masked_errors(
                    states.outputs(states.hidden[-1][row, where]), torch.from_numpy(masked[index][1])
                )
                loss[index] = float(errors.double().mean())
                if correct is not None:
                    accuracy[index] = float(correct.double().mean())
    return MaskedPrediction(loss, accuracy, int(sum(len(where) for where in positions)))


@dataclass(frozen=True)
class InSilicoResponse:
    """sums, counts: float64 / int64 (P, G): over the cells expressing perturbed gene p (row, in `perturbed`
    order) in which target g (column, in the genes' order) was present too, the summed response of g to
    silencing p and the number of such cells. `mean()` is NaN where a pair never met."""

    perturbed: tuple[int, ...]
    sums: np.ndarray
    counts: np.ndarray

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)


def in_silico_response(model: ReadoutModel, cells: Sequence[ReadoutCell], slot_of_token: np.ndarray,
                       perturbed: Sequence[int], n_genes: int, interventions: Iterable[Intervention],
                       batching: Batching, max_cells_per_gene: int | None = None, seed: int = 0) -> InSilicoResponse:  # fmt: skip
    """The model's response to silencing each perturbed gene (`perturbed`: gene slots) in the cells of
    `cells` that express it (with `max_cells_per_gene`, that many of them, drawn with `seed`: one forward
    pass per cell and silenced gene is the readout's cost; the same seed draws the same cells in every
    condition), under `interventions` (none: clean), read out on the genes whose tokens `slot_of_token`
    maps to slots 0..n_genes-1 (NOT_ACCUMULATED elsewhere)."""
    row_of_slot = {int(slot): row for row, slot in enumerate(perturbed)}
    silenced_in, chosen = np.zeros(len(perturbed), dtype=np.int64), set()  # chosen: (cell, perturbed row)
    for index in np.random.default_rng(seed).permutation(len(cells)):
        cell = cells[index]
        for slot in slot_of_token[cell.ids[cell.genes]]:
            row = row_of_slot.get(int(slot))
            if row is not None and (max_cells_per_gene is None or silenced_in[row] < max_cells_per_gene):
                silenced_in[row] += 1
                chosen.add((int(index), row))
    sums, counts = np.zeros((len(perturbed), n_genes)), np.zeros((len(perturbed), n_genes), dtype=np.int64)
    silenced_cells = sorted({index for index, _ in chosen})  # only these need a forward pass
    with torch.inference_mode(), intervene(model, interventions):
        for positions in batching.batches([cells[i] for i in silenced_cells]):
            batch = [silenced_cells[i] for i in positions]
            batch_cells = [cells[i] for i in batch]
            clean = model.forward_states(batch_cells, batching.device)
            variants = []  # (row of the perturbed gene, clean features, slots read, silenced cell, kept)
            for row, (index, cell) in enumerate(zip(batch, batch_cells)):
                slots = np.where(cell.genes, slot_of_token[cell.ids], NOT_ACCUMULATED)
                read = np.flatnonzero(slots != NOT_ACCUMULATED)
                features = _response_features(model, clean, row, read)
                for position in read:
                    row_of_gene = row_of_slot.get(int(slots[position]))
                    if (int(index), row_of_gene) in chosen:
                        silenced, kept = model.silence(cell, int(position))
                        variants.append((row_of_gene, features, slots, read, position, silenced, kept))
            for chunk in batching.batches([variant[5] for variant in variants]):
                states = model.forward_states([variants[i][5] for i in chunk], batching.device)
                for row, index in enumerate(chunk):
                    perturbed_row, features, slots, read, position, _, kept = variants[index]
                    others = read[read != position]
                    after = _response_features(model, states, row, kept[others])
                    before = features[np.searchsorted(read, others)]
                    sums[perturbed_row, slots[others]] += _response(model, before, after)
                    counts[perturbed_row, slots[others]] += 1
    return InSilicoResponse(tuple(int(slot) for slot in perturbed), sums, counts)


def reextracted_attention(model: ReadoutModel, cells: Sequence[ReadoutCell], slot_of_token: np.ndarray,
                          n_genes: int, layer: int, interventions: Iterable[Intervention],
                          batching: Batching) -> np.ndarray:  # fmt: skip
    """The study's readout (a): attention edges re-extracted under `interventions` (none: clean), float64
    (n_genes, n_genes), query gene x key gene, the head-mean attention probability at `layer` averaged over
    the cells of `cells` holding both genes (NaN where none does, and for a gene with itself); genes are the
    slots `slot_of_token` maps tokens to. Heads set to uniform attention at `layer` contribute the uniform
    attention the model then uses (the probabilities it computed are discarded); zeroing heads or an MLP block
    at or after `layer` cannot change the readout (`Intervention.changes_attention_at`)."""
    interventions = list(interventions)
    uniform = sorted({head for intervention in interventions if intervention.kind == "uniform_attention"
                      and intervention.layer == layer for head in intervention.heads})
    # the extraction engine's own accumulator: head-mean sums of every pair, no per-head rows
    accumulator = AttentionAccumulator(tuple(map(str, range(n_genes))), (layer,), model.n_heads, batching.device,
                                       sources=())
    with torch.inference_mode(), intervene(model, interventions):
        for batch in batching.batches(cells):
            batch_cells = [cells[i] for i in batch]
            real, stream = model.layer_probabilities(batch_cells, batching.device)
            slots = np.full(tuple(real.shape), NOT_ACCUMULATED, dtype=np.int64)
            for row, cell in enumerate(batch_cells):
                slots[row, : len(cell.ids)] = np.where(cell.genes, slot_of_token[cell.ids], NOT_ACCUMULATED)
            selection = accumulator.add_cells(torch.from_numpy(slots))
            for index, probs in stream:
                if index != layer:
                    continue
                probs = probs.double()  # a copy: the uniform heads are written into it
                if uniform:  # every real key weighted alike, padding never
                    weights = real.double() / real.double().sum(dim=-1, keepdim=True)
                    probs[:, uniform] = weights.to(probs.device)[:, None, None, :]
                accumulator.add_layer(layer, probs, selection)
                break  # later layers are not read
    return accumulator.result().head_mean(layer)


def _response_features(model: ReadoutModel, states: ForwardStates, row: int, positions: np.ndarray) -> torch.Tensor:
    """What the in-silico readout compares at `positions` of one cell: its last-layer states (embedding
    shift) or the model's output there (predicted change)."""
    last = states.hidden[-1][row, torch.from_numpy(np.asarray(positions, dtype=np.int64))]
    return last if model.in_silico_readout == "embedding_shift" else states.outputs(last)


def _response(model: ReadoutModel, before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    if model.in_silico_readout == "embedding_shift":
        return cosine_distance(before, after).cpu().numpy()
    return (after.double() - before.double()).abs().sum(dim=-1).cpu().numpy()
