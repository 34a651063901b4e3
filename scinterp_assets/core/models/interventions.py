"""Causal interventions on a loaded model (FRAMEWORK.md family C, A17-A18), scoped and always undone.

`intervene(model, interventions)` is a context manager: it registers forward hooks on the model's modules for
the duration of the block and removes them on the way out, also when the block raises, so that afterwards the
model computes bit for bit what it computed before. The model's weights are never written. Three kinds, each
made by a small setter:

  zero_heads(layer, heads)         the heads' context vectors are zeroed where they enter the attention output
                                   projection, which removes their contribution to the layer's output (the
                                   projection's bias, shared by all heads, stays). transformers 5 has no
                                   head_mask; this is the same operation for both families.
  uniform_attention(layer, heads)  the heads attend uniformly to the cell's real (non-padding) tokens, values
                                   kept: every query's context vector becomes the mean of the head's value
                                   vectors over the real tokens.
  zero_mlp(layer)                  the feed-forward block's output is zeroed before the residual sum.

An intervention at layer l changes what layer l passes on, never layer l's own attention probabilities: a
readout of attention at layer l or earlier cannot move by construction (`changes_attention_at`).

A model offers interventions through `intervention_sites(layer) -> LayerSites`, which names its modules; the
mechanism here is the same for every family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

InterventionKind = Literal["zero_heads", "uniform_attention", "zero_mlp"]
HEAD_KINDS = ("zero_heads", "uniform_attention")


@dataclass(frozen=True)
class Intervention:
    """One change to a model's computation at one layer (heads: sorted head indices; empty for zero_mlp)."""

    kind: InterventionKind
    layer: int
    heads: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (*HEAD_KINDS, "zero_mlp"):
            raise ValueError(f"unknown intervention kind {self.kind!r}; expected one of {(*HEAD_KINDS, 'zero_mlp')}")
        if self.kind in HEAD_KINDS and not self.heads:
            raise ValueError(f"{self.kind} at layer {self.layer} names no head")
        if self.kind == "zero_mlp" and self.heads:
            raise ValueError(f"zero_mlp acts on a whole layer's feed-forward block; heads {self.heads} given")
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"{self.kind} at layer {self.layer} names a head twice: {self.heads}")

    def describe(self) -> str:
        if self.kind == "zero_mlp":
            return f"zero_mlp L{self.layer}"
        return f"{self.kind} L{self.layer} H{','.join(map(str, self.heads))}"

    def changes_attention_at(self, readout_layer: int) -> bool:
        """Whether the attention the model uses at `readout_layer` can differ from the clean run's: when the
        intervention sits at an earlier layer, or replaces the attention of that layer's heads (uniform
        attention: then the re-extracted probabilities are the uniform ones, `readouts.reextracted_attention`).
        Zeroing heads or an MLP block at or after the layer leaves its probabilities as they were."""
        return self.layer < readout_layer or (self.kind == "uniform_attention" and self.layer == readout_layer)


def zero_heads(layer: int, heads: Iterable[int]) -> Intervention:
    return Intervention("zero_heads", int(layer), tuple(sorted(int(head) for head in heads)))


def uniform_attention(layer: int, heads: Iterable[int]) -> Intervention:
    return Intervention("uniform_attention", int(layer), tuple(sorted(int(head) for head in heads)))


def zero_mlp(layer: int) -> Intervention:
    return Intervention("zero_mlp", int(layer))


@dataclass(frozen=True)
class LayerSites:
    """Where a family's layer can be intervened on.

    attention:       the self-attention module; its call carries the layer's input and padding mask
    read_call:       (args, kwargs) of that call -> (layer input (B, n, d), bool (B, n): True at real tokens)
    values:          layer input (B, n, d) -> the heads' value vectors, concatenated (B, n, H * d_head)
    head_projection: the attention output projection; its input is the heads' context vectors, concatenated
                     (B, n, H * d_head), head h in columns h * d_head .. (h + 1) * d_head
    mlp_output:      the feed-forward block's last linear map; its output is added to the residual stream
    """

    attention: nn.Module
    read_call: Callable[[tuple, dict], tuple[torch.Tensor, torch.Tensor]]
    values: Callable[[torch.Tensor], torch.Tensor]
    head_projection: nn.Module
    mlp_output: nn.Module


class Intervenable(Protocol):
    n_layers: int
    n_heads: int

    def intervention_sites(self, layer: int) -> LayerSites: ...


def check_interventions(model: Intervenable, interventions: Iterable[Intervention]) -> tuple[Intervention, ...]:
    """The interventions as a tuple; ValueError naming the first layer or head the model does not have."""
    checked = tuple(interventions)
    for intervention in checked:
        if not 0 <= intervention.layer < model.n_layers:
            raise ValueError(f"{intervention.describe()}: the model has layers 0..{model.n_layers - 1}")
        outside = [head for head in intervention.heads if not 0 <= head < model.n_heads]
        if outside:
            raise ValueError(f"{intervention.describe()}: the model has heads 0..{model.n_heads - 1}, not {outside}")
    return checked


@contextmanager
def intervene(model: Intervenable, interventions: Iterable[Intervention]) -> Iterator[None]:
    """Apply `interventions` to every forward pass of `model` inside the block; undone on exit, always."""
    checked = check_interventions(model, interventions)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for intervention in checked:
            handles.extend(_register(model.intervention_sites(intervention.layer), intervention, model.n_heads))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _register(sites: LayerSites, intervention: Intervention, n_heads: int) -> list[torch.utils.hooks.RemovableHandle]:
    if intervention.kind == "zero_mlp":
        return [sites.mlp_output.register_forward_hook(lambda _module, _inputs, output: torch.zeros_like(output))]
    heads = list(intervention.heads)
    if intervention.kind == "zero_heads":
        return [sites.head_projection.register_forward_pre_hook(
            lambda _module, inputs: (_with_heads(inputs[0], n_heads, heads, None), *inputs[1:]))]  # fmt: skip
    # uniform attention: the layer input and padding mask are read where attention is called, the values
    # computed from them when the context reaches the projection; nothing is kept once the layer has run.
    call: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def read(_module, args, kwargs):
        call["input"] = sites.read_call(args, kwargs)

    def replace(_module, inputs):
        hidden, real = call.pop("input")
        batch, length, _ = hidden.shape
        values = sites.values(hidden).view(batch, length, n_heads, -1)
        weights = real.to(values.dtype)[:, :, None, None]
        mean = (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, H, d_head)
        return (_with_heads(inputs[0], n_heads, heads, mean[:, None].expand(-1, length, -1, -1)), *inputs[1:])

    return [sites.attention.register_forward_pre_hook(read, with_kwargs=True),
            sites.head_projection.register_forward_pre_hook(replace)]  # fmt: skip


def _with_heads(context: torch.Tensor, n_heads: int, heads: list[int], replacement: torch.Tensor | None) -> torch.Tensor:
    """A copy of the concatenated context (B, n, H * d_head) with the given heads' slices set to
    `replacement` ((B, n, H, d_head), only those heads read) or to zero."""
    batch, length, width = context.shape
    changed = context.clone().view(batch, length, n_heads, width // n_heads)
    changed[:, :, heads] = 0.0 if replacement is None else replacement[:, :, heads]
    return changed.view(batch, length, width)
