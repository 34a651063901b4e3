"""Which heads and layers the causal interventions act on (FRAMEWORK.md A17-A18), and how a targeted
intervention is tested against random ones.

Heads are ranked by their per-head reference AUROC (`head_reference_auroc`: each head's mean attention from
the reference's sources, the TF rows, to every other gene). For every k (capped by the model's head count):
  top_k              the k heads with the highest AUROC (the "regulatory heads")
  random_k           every other set of k heads when there are at most `exhaustive_up_to` of them (the
                     rank test is then exact), else `n_random_draws` seeded draws of k heads from all heads
  entropy_matched_k  for each top head, the not-yet-chosen other head whose mean attention entropy is
                     closest: as diffuse or as sharp as the regulatory heads (their AUROC is not constrained)
  bottom_k           the k heads with the lowest AUROC
and per layer:
  regulatory layer   the layer with the highest mean head AUROC: all its heads, and its MLP block
  random layers      every other layer in a seeded order, up to `n_random_draws`: all heads, and the MLP

The test (`rank_p_value`): a targeted condition's effect is compared with the effects of the random
conditions of the same size, p = (1 + #{random effect >= targeted effect}) / (1 + N); with every other set
enumerated, p is the exact fraction of all k-sets that harm at least as much. Under the null that the
AUROC ranking says nothing about which heads matter, the top-k set is one more exchangeable draw and the
p-value is valid whatever the readout; a paired test over cells between two fixed head sets would not be (two
different head sets differ in effect for reasons unrelated to regulation, and enough cells detect that).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scinterp_assets.core.analyses.reference_battery import ReferenceLabels
from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.models.interventions import (
    Intervention,
    InterventionKind,
    uniform_attention,
    zero_heads,
    zero_mlp,
)
from scinterp_assets.core.stats.auroc import auroc

HEAD_CONDITIONS = ("top_k", "random_k", "entropy_matched_k", "bottom_k")
LAYER_CONDITIONS = ("regulatory_layer", "random_layer")


@dataclass(frozen=True)
class Condition:
    """One intervention condition: `name` (HEAD_CONDITIONS, LAYER_CONDITIONS or "clean"), `k` heads (a
    layer condition counts the layer's heads; 0 for an MLP block or clean), the random `draw` (0 otherwise),
    the heads as (layer, head) pairs, and the interventions that realise it."""

    name: str
    k: int
    draw: int
    target: str  # "heads", "mlp" or "none"
    heads: tuple[tuple[int, int], ...]
    interventions: tuple[Intervention, ...]

    @property
    def label(self) -> str:
        draw = f"#{self.draw}" if self.name.startswith("random") else ""
        return f"{self.name}{draw} k={self.k}" if self.target == "heads" else f"{self.name}{draw} {self.target}"

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({intervention.layer for intervention in self.interventions}))


CLEAN = Condition("clean", 0, 0, "none", (), ())


def head_reference_auroc(per_head: np.ndarray, sources: Sequence[str], labels: ReferenceLabels) -> np.ndarray:
    """float64 (L, H): AUROC of each head's mean attention from the reference's TF rows that are sources
    (rows of `per_head`, (L, H, S, G) over `sources` x labels.genes) to every other gene, against membership.
    NaN for every head when no TF is a source (nothing to rank)."""
    n_layers, n_heads, n_sources, n_genes = per_head.shape
    if n_genes != len(labels.genes) or n_sources != len(sources):
        raise ValueError(f"per-head scores are {per_head.shape}; expected (L, H, {len(sources)}, {len(labels.genes)})")
    gene_index = {gene: i for i, gene in enumerate(labels.genes)}
    rows = np.array([gene_index[gene] for gene in sources], dtype=np.int64)
    is_tf = np.isin(rows, labels.tf_rows)
    if not is_tf.any():
        return np.full((n_layers, n_heads), np.nan)
    tf_rows, tf_sources = rows[is_tf], np.flatnonzero(is_tf)
    pairs = np.ones((len(tf_rows), n_genes), dtype=bool)
    pairs[np.arange(len(tf_rows)), tf_rows] = False  # no self pairs
    truth = labels.membership[tf_rows][pairs]
    scores = per_head[:, :, tf_sources][..., pairs]  # (L, H, pairs)
    return np.asarray(auroc(truth, scores.reshape(n_layers * n_heads, -1).T)).reshape(n_layers, n_heads)


def accumulated_head_auroc(scores: AttentionScores, genes: Sequence[str], labels: ReferenceLabels,
                           n_layers: int) -> np.ndarray:
    """float64 (n_layers, H): `head_reference_auroc` of every accumulated layer's heads over `genes` (the
    evaluable genes, labels over them), reading one layer's per-head TF rows at a time; NaN for layers the
    scores do not hold (attention.layers)."""
    column_of = {gene: i for i, gene in enumerate(scores.genes)}
    wanted = set(genes)
    sources = [gene for gene in scores.sources if gene in wanted]
    row_of = {gene: i for i, gene in enumerate(scores.sources)}
    rows, columns = [row_of[gene] for gene in sources], [column_of[gene] for gene in genes]
    result = np.full((n_layers, scores.n_heads), np.nan)
    for layer in scores.layers:
        per_head = scores.mean(layer)[:, rows][:, :, columns]
        result[layer] = head_reference_auroc(per_head[None], sources, labels)[0]
    return result


def _ranked(head_auroc: np.ndarray, descending: bool) -> list[tuple[int, int]]:
    """Heads ordered by AUROC (NaN last either way), ties by (layer, head)."""
    n_layers, n_heads = head_auroc.shape
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    values = head_auroc.ravel()
    key = np.where(np.isnan(values), np.inf, -values if descending else values)
    return [heads[i] for i in np.lexsort((np.arange(len(heads)), key))]


def _as_interventions(heads: Sequence[tuple[int, int]], kind: InterventionKind) -> tuple[Intervention, ...]:
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    make = zero_heads if kind == "zero_heads" else uniform_attention
    return tuple(make(layer, by_layer[layer]) for layer in sorted(by_layer))


def _entropy_matched(top: Sequence[tuple[int, int]], candidates: Sequence[tuple[int, int]],
                     entropy: np.ndarray) -> list[tuple[int, int]]:
    """For each top head in turn, the closest-entropy head of `candidates` outside the top set not chosen
    yet (ties by (layer, head))."""
    available = [head for head in candidates if head not in set(top)]
    matched = []
    for layer, head in top:
        if not available:
            break
        distances = [abs(entropy[candidate] - entropy[layer, head]) for candidate in available]
        matched.append(available.pop(int(np.argmin(distances))))
    return matched


def head_conditions(head_auroc: np.ndarray, head_entropy: np.ndarray, ks: Sequence[int], *, kind: InterventionKind,
                    n_random_draws: int, seed: int, exhaustive_up_to: int = 0) -> list[Condition]:  # fmt: skip
    """The head conditions for every k in `ks` below the number of ranked heads (heads with an AUROC; a k of
    every head or more has no other set to compare with and is left out): top-k, bottom-k, entropy-matched
    (when enough heads remain outside the top k) and the random_k sets (every k-set other than the top k
    when there are at most `exhaustive_up_to` of them, else `n_random_draws` seeded draws), each realised with
    `kind` ("zero_heads" or "uniform_attention")."""
    if head_auroc.shape != head_entropy.shape:
        raise ValueError(f"head AUROC {head_auroc.shape} and entropy {head_entropy.shape} must have one shape")
    if np.isnan(head_auroc).all():
        raise ValueError("no head has a reference AUROC (no TF of the reference is a source); cannot rank heads")
    # only heads with an AUROC (layers accumulated) are ranked or drawn: targeted and random sets come
    # from the same layers
    all_heads = [(layer, head) for layer, head in zip(*np.nonzero(~np.isnan(head_auroc)))]
    all_heads = [(int(layer), int(head)) for layer, head in all_heads]
    total = len(all_heads)
    rng = np.random.default_rng(seed)
    descending = [head for head in _ranked(head_auroc, True) if head in set(all_heads)]
    ascending = descending[::-1]
    conditions = []
    for k in sorted({int(k) for k in ks if 0 < int(k) < total}):  # k = every head leaves nothing to compare
        top = descending[:k]
        picks = {"top_k": top, "bottom_k": ascending[:k]}
        matched = _entropy_matched(top, sorted(all_heads), head_entropy)
        if len(matched) == k:
            picks["entropy_matched_k"] = matched
        for name, heads in picks.items():
            conditions.append(Condition(name, k, 0, "heads", tuple(sorted(heads)), _as_interventions(heads, kind)))
        if math.comb(total, k) - 1 <= exhaustive_up_to:
            others = [list(heads) for heads in itertools.combinations(all_heads, k) if set(heads) != set(top)]
        else:
            others = [[all_heads[i] for i in rng.choice(total, k, replace=False)] for _ in range(n_random_draws)]
        for draw, heads in enumerate(others):
            conditions.append(Condition("random_k", k, draw, "heads", tuple(sorted(heads)), _as_interventions(heads, kind)))
    return conditions


def layer_conditions(head_auroc: np.ndarray, *, target: str, kind: InterventionKind = "zero_heads",
                     n_random_draws: int, seed: int) -> list[Condition]:  # fmt: skip
    """The regulatory layer (highest mean head AUROC) and up to `n_random_draws` other layers in a seeded
    order, each as all its heads (target "heads", realised with `kind`) or its MLP block (target "mlp"); only
    layers with a head AUROC take part. With L such layers the smallest rank p-value is 1 / L."""
    if target not in ("heads", "mlp"):
        raise ValueError(f"layer condition target must be 'heads' or 'mlp', got {target!r}")
    n_layers, n_heads = head_auroc.shape
    if np.isnan(head_auroc).all():
        raise ValueError("no head has a reference AUROC (no TF of the reference is a source); cannot rank layers")
    defined = ~np.isnan(head_auroc)
    ranked_layers = np.flatnonzero(defined.any(axis=1))  # layers not accumulated are neither chosen nor drawn
    layer_means = np.where(defined, head_auroc, 0.0).sum(axis=1) / np.maximum(defined.sum(axis=1), 1)
    regulatory = int(ranked_layers[np.argmax(layer_means[ranked_layers])])
    order = np.random.default_rng(seed).permutation(ranked_layers).tolist()
    others = [int(layer) for layer in order if layer != regulatory]

    def condition(name: str, layer: int, draw: int) -> Condition:
        if target == "mlp":
            return Condition(name, 0, draw, "mlp", (), (zero_mlp(layer),))
        heads = tuple((layer, head) for head in range(n_heads))
        return Condition(name, n_heads, draw, "heads", heads, _as_interventions(heads, kind))

    return [condition("regulatory_layer", regulatory, 0)] + [
        condition("random_layer", layer, draw) for draw, layer in enumerate(others[:n_random_draws])]


def rank_p_value(targeted: float, random_effects: Sequence[float]) -> float:
    """One-sided p-value of a targeted condition's effect among random conditions' effects (larger = more
    harm): (1 + #{random >= targeted}) / (1 + N). NaN effects are left out; NaN without any random effect."""
    effects = np.asarray(random_effects, dtype=np.float64)
    effects = effects[~np.isnan(effects)]
    if np.isnan(targeted) or effects.size == 0:
        return float("nan")
    return float((1 + np.count_nonzero(effects >= targeted)) / (1 + effects.size))
