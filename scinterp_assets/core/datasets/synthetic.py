"""A simulated Perturb-seq screen on a planted gene regulatory network (FRAMEWORK A25).

Genes
-----
Genes ``0 .. n_tfs-1`` are transcription factors named ``TF01, TF02, ...``; gene ``i >= n_tfs`` is
``G{i+1:04d}``. Names and synthetic Ensembl ids (``ENSSYN`` + 11 digits of ``i+1``) depend only on the gene
index, so worlds with different ``wiring_seed`` (different "cell types") share one model vocabulary.
Alternatively (``vocabulary_gene_names``) gene ``i`` takes the ``i``-th of a fixed seeded order of real genes
that released model vocabularies hold, so those models' own dictionaries tokenise the world.

Expression, all in natural-log space
------------------------------------
Cell ``c`` has log mean ``base[g] + D[c, g]`` for gene ``g``, with deviations ``D = E @ T``:

- ``E`` (exogenous deviations): for TFs, the offset of the cell's state (states differ in TF activity)
  plus intrinsic log-normal noise; for other genes, small intrinsic noise plus, for module members,
  ``loading[g] * z[c, module]``; in a perturbed cell, the perturbation's log factor on its target gene.
- ``T = (I - W)^-1 = I + W + W^2 + ...`` is the total-effect matrix of the signed GRN ``W[source, target]``.
  Only TFs have out-edges; TFs sit in ``n_tf_tiers`` tiers and TF->TF edges run from one tier to the
  next, so ``W`` is nilpotent and TF noise propagates over several steps to targets. That propagation is
  what lets co-expression among control cells carry signal about planted edges. A gene's incoming
  weights are divided by sqrt(its number of regulators), so multi-regulated genes keep a bounded variance.

State-specific wiring (``state_specific_edges`` > 0, FRAMEWORK A20-A21): each state also has its own TF ->
non-TF edges, active only in its cells, so a cell of state ``s`` has ``T_s = (I - W - dW_s)^-1`` instead of
``T``. Pooled over states, such an edge is diluted by the cells where it is absent; within its state it is as
strong as any other. They are planted truth like the common edges (``truth_edges`` holds both;
``truth_state_edges`` says which state each of the others belongs to).

Modules are groups of non-TF genes sharing a latent factor, like subunits of a protein complex: they are
co-expressed without being regulated (negatives for the TF-target truth that look positive) and are
never GRN targets.

Because the model is linear in log space, a perturbation that multiplies gene ``p`` by ``f`` (CRISPRi:
``f = 1 - knockdown``; CRISPRa: ``f = fold``) multiplies the mean of gene ``g`` by ``f ** T[p, g]`` in every
cell and state, so ``uns["truth_effects"]`` (``log(f) * T[p, g]``) is exact, not estimated. With state-specific
wiring the change in state ``s`` is ``log(f) * T_s[p, g]``, and ``truth_effects`` holds its mean over states
weighted by their shares of cells (the expected log change of a random cell).

Counts are negative binomial (``var = mu + nb_dispersion * mu^2``) with mean ``size[c] * exp(base + D)`` and
log-normal ``size`` of mean 1. ``base`` is rescaled, from the closed-form Gaussian moments of ``D``, so an
average control cell holds ``mean_library_size`` UMIs; dropout arises from the low means.

Seeds: ``wiring_seed`` fixes the whole truth (network, expression levels, states, modules, perturbed genes
and strengths); ``seed``, mixed with ``wiring_seed`` and the modality, fixes the cells.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

MODALITIES: tuple[str, ...] = ("CRISPRi", "CRISPRa")
CONTROL_LABEL = "non-targeting"
_NETWORK_STREAM, _SCREEN_STREAM, _STATE_WIRING_STREAM = 0, 1, 2
_NAMING_SEED = 0  # the order of real genes vocabulary_gene_names draws from (fixed, with numpy's Generator)
# the smallest world in which the evaluation is meaningful (enough genes, TFs, states, perturbations)
_MINIMUMS = {"n_genes": 200, "n_tfs": 20, "n_modules": 0, "n_states": 3, "n_control_cells": 1,
             "n_perturbed_genes": 30, "cells_per_perturbation": 1, "min_non_tf_perturbations": 1,
             "n_tf_tiers": 2, "state_specific_edges": 0}
_INT_RANGES = ("targets_per_tf_range", "tf_targets_per_tf_range", "module_size_range")
_FLOAT_RANGES = ("knockdown_range", "activation_fold_range", "edge_weight_range", "module_loading_range",
                 "state_edge_weight_range")
_CASTS = {"int": int, "float": float}


@dataclass(frozen=True)
class SyntheticWorldSpec:
    """Every knob of one synthetic screen; defaults are the demo's (3,900 cells x 300 genes).

    Ranges are inclusive ``(low, high)`` pairs. Lists and numpy scalars are accepted and normalised, so
    ``SyntheticWorldSpec(**adata.uns["synthetic_spec"])`` rebuilds the spec, also after an h5ad round trip.
    """

    n_genes: int = 300
    n_tfs: int = 24
    n_modules: int = 8
    n_states: int = 3
    n_control_cells: int = 1500
    n_perturbed_genes: int = 40
    cells_per_perturbation: int = 60
    min_non_tf_perturbations: int = 4  # perturbed non-TFs: they change only themselves
    modality: str = "CRISPRi"
    knockdown_range: tuple[float, float] = (0.7, 0.9)  # CRISPRi: fraction of expression removed
    activation_fold_range: tuple[float, float] = (3.0, 6.0)  # CRISPRa: fold increase
    mean_library_size: float = 4000.0  # UMIs of an average control cell over these genes
    library_size_sd: float = 0.4  # sd of log library size across cells
    nb_dispersion: float = 0.1
    expression_log_sd: float = 1.5  # spread of gene log means (about 0.05 to a few hundred counts)
    targets_per_tf_range: tuple[int, int] = (5, 12)
    tf_targets_per_tf_range: tuple[int, int] = (1, 2)  # how many of them are TFs of the next tier
    n_tf_tiers: int = 3  # depth of the TF hierarchy, master regulators first
    edge_weight_range: tuple[float, float] = (0.5, 1.0)  # |d log target / d log TF| before / sqrt(k)
    activating_edge_fraction: float = 0.6
    state_specific_edges: int = 0  # TF -> target edges per state active only in that state (A20-A21)
    state_edge_weight_range: tuple[float, float] = (1.0, 1.5)  # their |d log target / d log TF|, before / sqrt(k)
    tf_noise_sd: float = 0.4  # intrinsic per-cell log noise of TF activity
    state_effect_sd: float = 0.5  # sd of per-state TF log-activity offsets
    gene_noise_sd: float = 0.15  # intrinsic per-cell log noise of non-TF genes
    module_size_range: tuple[int, int] = (5, 15)
    module_loading_range: tuple[float, float] = (0.3, 0.7)  # log-expression response to the module factor
    wiring_seed: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = _normalised(field.name, field.type, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
        for name, minimum in _MINIMUMS.items():
            _require(getattr(self, name) >= minimum, name, f"must be >= {minimum}, got {getattr(self, name)}")
        _require(self.modality in MODALITIES, "modality", f"must be one of {MODALITIES}: {self.modality!r}")
        _require(self.n_tfs <= self.n_genes // 4, "n_tfs", f"must be <= n_genes // 4 = {self.n_genes // 4}")
        _require(0 < self.knockdown_range[0] and self.knockdown_range[1] < 1, "knockdown_range",
                 "fractions must lie in (0, 1)")
        _require(self.activation_fold_range[0] > 1, "activation_fold_range", "folds must exceed 1")
        for name in ("mean_library_size", "nb_dispersion", "expression_log_sd"):
            _require(getattr(self, name) > 0, name, "must be > 0")
        for name in ("library_size_sd", "tf_noise_sd", "state_effect_sd", "gene_noise_sd"):
            _require(getattr(self, name) >= 0, name, "must be >= 0")
        _require(0 <= self.activating_edge_fraction <= 1, "activating_edge_fraction", "must lie in [0, 1]")
        for name in ("edge_weight_range", "state_edge_weight_range"):
            _require(getattr(self, name)[0] > 0, name, "magnitudes must be > 0")
        _require(self.module_size_range[0] >= 2, "module_size_range", "a module needs >= 2 genes")
        half_non_tfs = (self.n_genes - self.n_tfs) // 2
        # modules take at most half of the non-TF genes; the other half are the GRN's non-TF targets
        _require(self.n_modules * self.module_size_range[1] <= half_non_tfs, "n_modules",
                 f"n_modules * module_size_range high must be <= {half_non_tfs} (half the non-TF genes)")
        _require(1 <= self.targets_per_tf_range[0] and self.targets_per_tf_range[1] <= half_non_tfs,
                 "targets_per_tf_range", f"must lie within [1, {half_non_tfs}]")
        _require(0 <= self.tf_targets_per_tf_range[0]
                 and self.tf_targets_per_tf_range[1] <= self.targets_per_tf_range[0],
                 "tf_targets_per_tf_range", "must lie within [0, targets_per_tf_range low]")
        _require(self.min_non_tf_perturbations < self.n_perturbed_genes, "min_non_tf_perturbations",
                 "must be < n_perturbed_genes")
        # non-TF perturbations target the better-expressed half of the non-TF genes
        _require(self.n_perturbed_genes - self.n_tf_perturbations <= half_non_tfs, "n_perturbed_genes",
                 f"leaves more than {half_non_tfs} non-TF perturbations")

    @property
    def n_tf_perturbations(self) -> int:
        """Perturbed TFs: as many as exist, leaving at least ``min_non_tf_perturbations`` for non-TFs."""
        return min(self.n_tfs, self.n_perturbed_genes - self.min_non_tf_perturbations)


def _normalised(name: str, annotation: str, value: object) -> object:
    """The field value in its canonical type (tuples of int/float, int, float), or a ValueError."""
    if name in _INT_RANGES or name in _FLOAT_RANGES:
        cast = int if name in _INT_RANGES else float
        _require(len(value) == 2, name, f"needs (low, high), got {value!r}")
        pair = (cast(value[0]), cast(value[1]))
        _require(pair[0] <= pair[1], name, f"low > high in {pair}")
        return pair
    if annotation == "int":
        integral = not isinstance(value, bool) and float(value).is_integer()
        _require(integral, name, f"must be an integer, got {value!r}")
    return _CASTS[annotation](value) if annotation in _CASTS else str(value)


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"SyntheticWorldSpec.{field}: {message}")


@dataclass(frozen=True)
class _Network:
    """The planted truth of one wiring seed. Shapes: G genes, S states, M modules."""

    base_log_mean: np.ndarray  # (G,) log counts at size factor 1 and zero deviation
    weights: np.ndarray  # (G, G) signed direct effects W[source, target]; rows nonzero only for TFs
    total_effect: np.ndarray  # (G, G) T = I + W + W^2 + ...
    state_offsets: np.ndarray  # (S, G) log-activity offsets; nonzero only in TF columns
    state_fractions: np.ndarray  # (S,) share of cells per state
    module_loadings: np.ndarray  # (G, M) loading of each gene on each module factor
    state_weights: np.ndarray  # (S, n_tfs, G) direct effects active only in each state (TF rows; non-TF targets)
    state_total_effect: np.ndarray  # (S, n_tfs, G) what they add to T's TF rows in that state: T[TFs, TFs] @ dW_s


def gene_symbols(n_genes: int, n_tfs: int) -> list[str]:
    """Stable gene symbols: ``TF01 ..`` for the first ``n_tfs`` genes, ``G{index+1:04d}`` after them."""
    tf_width, gene_width = max(2, len(str(n_tfs))), max(4, len(str(n_genes)))
    return [f"TF{i + 1:0{tf_width}d}" if i < n_tfs else f"G{i + 1:0{gene_width}d}" for i in range(n_genes)]


def vocabulary_gene_names(
    vocabularies: Sequence[tuple[Mapping[str, str], Mapping[str, object]]], n_genes: int
) -> pd.DataFrame:
    """``n_genes`` real genes (columns ``symbol``, ``ensembl_id``) that every vocabulary holds, row ``i``
    naming gene ``i`` of a world (so the first ``n_tfs`` rows name its TFs).

    Each vocabulary is a pair (symbol -> Ensembl id, Ensembl id -> token), as a Geneformer release's
    gene_name_id_dict and token_dictionary. A gene is eligible when every vocabulary maps its symbol to the same
    Ensembl id, no other symbol maps to that id, and every token dictionary holds the id. The eligible genes,
    sorted by symbol, are put in one fixed seeded order and the first ``n_genes`` taken, so a gene's name
    depends only on its index and the vocabularies: worlds of any size and wiring share them.
    """
    if not vocabularies:
        raise ValueError("vocabulary_gene_names: give at least one (symbol -> Ensembl id, token) vocabulary")
    eligible = None
    for name_ids, token_ids in vocabularies:
        ids_per_symbol = pd.Series(name_ids, dtype=object).astype(str)
        unique_ids = ids_per_symbol[~ids_per_symbol.duplicated(keep=False)]
        held = {symbol: gene for symbol, gene in unique_ids.items() if gene in token_ids}
        eligible = held if eligible is None else {s: g for s, g in eligible.items() if held.get(s) == g}
    if len(eligible) < n_genes:
        raise ValueError(
            f"vocabulary_gene_names: the vocabularies share {len(eligible)} one-to-one genes, fewer than the "
            f"{n_genes} asked for; lower n_genes or name fewer vocabularies"
        )
    symbols = np.array(sorted(eligible))
    chosen = symbols[np.random.default_rng(_NAMING_SEED).permutation(symbols.size)[:n_genes]]
    return pd.DataFrame({"symbol": chosen, "ensembl_id": [eligible[symbol] for symbol in chosen]})


def _plant_network(spec: SyntheticWorldSpec) -> _Network:
    rng = np.random.default_rng([spec.wiring_seed, _NETWORK_STREAM])
    n_genes, n_tfs = spec.n_genes, spec.n_tfs
    base = rng.normal(0.0, spec.expression_log_sd, n_genes)
    # TFs sit in the upper half of expression, as screens target genes whose knockdown is measurable
    base[:n_tfs] = rng.normal(0.5 * spec.expression_log_sd, 0.5 * spec.expression_log_sd, n_tfs)

    non_tfs = rng.permutation(np.arange(n_tfs, n_genes))
    sizes = rng.integers(spec.module_size_range[0], spec.module_size_range[1] + 1, spec.n_modules)
    loadings = np.zeros((n_genes, spec.n_modules))
    module_genes = non_tfs[: sizes.sum()]
    loadings[module_genes, np.repeat(np.arange(spec.n_modules), sizes)] = rng.uniform(
        *spec.module_loading_range, module_genes.size)
    target_pool = non_tfs[sizes.sum():]

    weights = np.zeros((n_genes, n_genes))
    tiers = np.array_split(rng.permutation(n_tfs), spec.n_tf_tiers)
    for tier, next_tier in zip(tiers, [*tiers[1:], np.array([], dtype=int)]):
        for tf in tier:
            n_targets = rng.integers(spec.targets_per_tf_range[0], spec.targets_per_tf_range[1] + 1)
            n_tf_targets = min(next_tier.size, rng.integers(spec.tf_targets_per_tf_range[0],
                                                            spec.tf_targets_per_tf_range[1] + 1))
            targets = np.concatenate([rng.choice(next_tier, n_tf_targets, replace=False),
                                      rng.choice(target_pool, n_targets - n_tf_targets, replace=False)])
            signs = np.where(rng.random(targets.size) < spec.activating_edge_fraction, 1.0, -1.0)
            weights[tf, targets] = signs * rng.uniform(*spec.edge_weight_range, targets.size)
    # a gene with k regulators sums k noisy inputs; dividing by sqrt(k) keeps its log variance bounded
    weights /= np.sqrt(np.maximum((weights != 0).sum(axis=0), 1))

    # W is nilpotent, so the series ends; exact zeros stay exact, unlike a numerical inverse. Only TF rows of
    # W are nonzero, so every power W^k (k >= 1) is nonzero only in TF rows: W^(k+1)[TFs] = W^k[TFs, TFs] W[TFs].
    # The full G x G products gave the same sums plus exact zeros; BLAS may order a long sum differently, so
    # worlds with many TFs can differ in the last bit (the demo's worlds are identical: test_synthetic.py)
    total_effect, walk = np.eye(n_genes), weights[:n_tfs]
    while walk.any():
        total_effect[:n_tfs] += walk
        walk = walk[:, :n_tfs] @ weights[:n_tfs]

    state_offsets = np.zeros((spec.n_states, n_genes))
    state_offsets[:, :n_tfs] = rng.normal(0.0, spec.state_effect_sd, (spec.n_states, n_tfs))
    state_fractions = rng.dirichlet(np.full(spec.n_states, 5.0))
    state_weights = _plant_state_wiring(spec, weights, target_pool)
    # A state's edges end at non-TFs, which regulate nothing, so (W + dW)^k = W^k + W^(k-1) dW and the state's
    # total effect is T + T dW: only TF rows change, by T[TFs, TFs] @ dW[TFs]
    state_total_effect = total_effect[:n_tfs, :n_tfs] @ state_weights

    # given its state s, D is Gaussian with mean offsets_s @ T_s and variance diag(T_s' diag(v) T_s + (L' T_s)^2)
    # (module genes are non-TFs, so L' T_s = L' T), so the mean control library is closed-form and the scale
    # does not depend on the cell seed
    exogenous_var = np.where(np.arange(n_genes) < n_tfs, spec.tf_noise_sd**2, spec.gene_noise_sd**2)
    deviation_var = (total_effect**2).T @ exogenous_var + ((loadings.T @ total_effect) ** 2).sum(axis=0)
    tf_rows = total_effect[:n_tfs]
    state_var = np.stack([deviation_var + ((tf_rows + extra) ** 2 - tf_rows**2).T @ exogenous_var[:n_tfs]
                          for extra in state_total_effect])
    state_mean = state_offsets @ total_effect + np.einsum("st,stg->sg", state_offsets[:, :n_tfs], state_total_effect)
    mean_fold = state_fractions @ np.exp(state_mean + state_var / 2)
    base += np.log(spec.mean_library_size) - np.log(np.exp(base) @ mean_fold)
    return _Network(base, weights, total_effect, state_offsets, state_fractions, loadings, state_weights,
                    state_total_effect)


def _plant_state_wiring(spec: SyntheticWorldSpec, weights: np.ndarray, target_pool: np.ndarray) -> np.ndarray:
    """(S, n_tfs, G) TF -> non-TF edges active in one state each: ``state_specific_edges`` distinct pairs per
    state, none shared with the common network or another state, from their own seed stream (the common
    network does not change with them). A target's state edge is divided by sqrt(its regulators in that state)."""
    n_tfs, n_states, per_state = spec.n_tfs, spec.n_states, spec.state_specific_edges
    state_weights = np.zeros((n_states, n_tfs, spec.n_genes))
    if per_state == 0:
        return state_weights
    rng = np.random.default_rng([spec.wiring_seed, _STATE_WIRING_STREAM])
    sources, targets = np.meshgrid(np.arange(n_tfs), np.sort(target_pool), indexing="ij")
    free = weights[sources, targets] == 0
    _require(n_states * per_state <= free.sum(), "state_specific_edges",
             f"{per_state} per state x {n_states} states exceeds the {int(free.sum())} TF -> target pairs the common "
             "network leaves free; lower it or raise n_genes")
    chosen = rng.choice(int(free.sum()), n_states * per_state, replace=False)
    sources, targets = sources[free][chosen], targets[free][chosen]
    signs = np.where(rng.random(chosen.size) < spec.activating_edge_fraction, 1.0, -1.0)
    magnitudes = rng.uniform(*spec.state_edge_weight_range, chosen.size)
    states = np.repeat(np.arange(n_states), per_state)
    state_weights[states, sources, targets] = signs * magnitudes
    regulators = (weights != 0).sum(axis=0)[None, :] + (state_weights != 0).sum(axis=1)  # (S, G)
    return state_weights / np.sqrt(np.maximum(regulators, 1))[:, None, :]


def _design_screen(spec: SyntheticWorldSpec, network: _Network) -> tuple[np.ndarray, np.ndarray]:
    """Perturbed gene indices ``(P,)``, TFs first, and strengths ``(P,)`` (knockdown fraction or fold)."""
    rng = np.random.default_rng([spec.wiring_seed, _SCREEN_STREAM])
    tfs = np.sort(rng.choice(spec.n_tfs, spec.n_tf_perturbations, replace=False))
    # non-TF perturbations target the better-expressed half, so the knockdown itself is measurable
    non_tfs = np.arange(spec.n_tfs, spec.n_genes)
    expressed = non_tfs[np.argsort(-network.base_log_mean[non_tfs], kind="stable")[: non_tfs.size // 2]]
    chosen = np.sort(rng.choice(expressed, spec.n_perturbed_genes - tfs.size, replace=False))
    low, high = spec.knockdown_range if spec.modality == "CRISPRi" else spec.activation_fold_range
    # one uniform draw per perturbation, so the CRISPRi and CRISPRa screens of a wiring rank strengths alike
    strengths = low + rng.random(spec.n_perturbed_genes) * (high - low)
    return np.concatenate([tfs, chosen]), strengths


def simulate_world(spec: SyntheticWorldSpec, gene_names: pd.DataFrame | None = None) -> ad.AnnData:
    """Simulate one screen: control and perturbed cells as raw counts, plus the planted truth.

    ``gene_names`` (columns ``symbol``, ``ensembl_id``, one row per gene, as `vocabulary_gene_names` returns)
    replaces the synthetic names; None keeps them.

    Returns AnnData (cells x genes) in the screen contract: ``X`` raw UMI counts (CSR, float32);
    ``var``: ``ensembl_id``, ``is_tf``; ``obs``: ``perturbation`` (gene symbol or ``"non-targeting"``),
    ``cell_state``; ``uns``: ``control_label``, ``modality``, ``synthetic_spec`` (the spec as a dict), and
    the truth tables ``truth_edges`` (source, target, sign, weight), ``truth_effects`` (perturbation, gene,
    log_fold_change: natural-log change of the mean, omitted when zero), ``truth_perturbation_strength``
    (perturbation, strength) and ``truth_modules`` (module, gene); with state-specific wiring also
    ``truth_state_edges`` (state, source, target): the edges of ``truth_edges`` active only in that state.
    """
    network = _plant_network(spec)
    perturbed_genes, strengths = _design_screen(spec, network)
    log_factors = np.log(1.0 - strengths if spec.modality == "CRISPRi" else strengths)
    symbols, ensembl_ids = _gene_names(spec, gene_names)
    n_tfs = spec.n_tfs

    rng = np.random.default_rng([spec.seed, spec.wiring_seed, MODALITIES.index(spec.modality)])
    # perturbation index per cell: -1 for controls, then cells_per_perturbation cells per perturbed gene
    perturbation_of_cell = np.concatenate([
        np.full(spec.n_control_cells, -1),
        np.repeat(np.arange(perturbed_genes.size), spec.cells_per_perturbation),
    ])
    n_cells = perturbation_of_cell.size
    states = rng.choice(spec.n_states, n_cells, p=network.state_fractions)
    exogenous = network.state_offsets[states]
    exogenous[:, :n_tfs] += rng.normal(0.0, spec.tf_noise_sd, (n_cells, n_tfs))
    exogenous[:, n_tfs:] += rng.normal(0.0, spec.gene_noise_sd, (n_cells, spec.n_genes - n_tfs))
    exogenous += rng.normal(size=(n_cells, spec.n_modules)) @ network.module_loadings.T
    perturbed_cells = np.flatnonzero(perturbation_of_cell >= 0)
    perturbation = perturbation_of_cell[perturbed_cells]
    exogenous[perturbed_cells, perturbed_genes[perturbation]] += log_factors[perturbation]
    log_mean = network.base_log_mean + exogenous @ network.total_effect
    if network.state_weights.any():  # a state's own edges: T_s = T + its extra TF rows
        for state, extra in enumerate(network.state_total_effect):
            in_state = states == state
            log_mean[in_state] += exogenous[in_state, :n_tfs] @ extra
    size_factors = rng.lognormal(-spec.library_size_sd**2 / 2, spec.library_size_sd, n_cells)
    mean = size_factors[:, None] * np.exp(log_mean)
    counts = rng.negative_binomial(1.0 / spec.nb_dispersion, 1.0 / (1.0 + mean * spec.nb_dispersion))

    labels = np.append(symbols[perturbed_genes], CONTROL_LABEL)[perturbation_of_cell]
    state_labels = [f"state_{s}" for s in range(spec.n_states)]
    obs = pd.DataFrame(
        {"perturbation": pd.Categorical(labels, categories=[CONTROL_LABEL, *symbols[perturbed_genes]]),
         "cell_state": pd.Categorical(np.array(state_labels)[states], categories=state_labels)},
        index=pd.Index([f"cell{i:06d}" for i in range(n_cells)]),
    )
    var = pd.DataFrame({"ensembl_id": ensembl_ids,
                        "is_tf": np.arange(spec.n_genes) < n_tfs}, index=pd.Index(symbols))
    adata = ad.AnnData(X=sparse.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    adata.uns.update(
        control_label=CONTROL_LABEL,
        modality=spec.modality,
        synthetic_spec=_as_h5ad_dict(spec),
        **_truth_tables(network, symbols, perturbed_genes, strengths, log_factors),
    )
    return adata


def _gene_names(spec: SyntheticWorldSpec, gene_names: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, Ensembl ids), one per gene: the synthetic ones, or `gene_names` checked against the spec."""
    if gene_names is None:
        return (np.array(gene_symbols(spec.n_genes, spec.n_tfs)),
                np.array([f"ENSSYN{i + 1:011d}" for i in range(spec.n_genes)]))
    if len(gene_names) != spec.n_genes:
        raise ValueError(f"simulate_world: gene_names has {len(gene_names)} rows for n_genes={spec.n_genes}")
    for column in ("symbol", "ensembl_id"):
        if column not in gene_names or gene_names[column].duplicated().any():
            raise ValueError(f"simulate_world: gene_names needs a column {column!r} without repeated values")
    return gene_names["symbol"].astype(str).to_numpy(), gene_names["ensembl_id"].astype(str).to_numpy()


def _as_h5ad_dict(spec: SyntheticWorldSpec) -> dict[str, object]:
    """The spec's fields with tuples as lists, which h5ad can store."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(spec).items()}


def _truth_tables(network: _Network, symbols: np.ndarray, perturbed_genes: np.ndarray,
                  strengths: np.ndarray, log_factors: np.ndarray) -> dict[str, pd.DataFrame]:
    sources, targets = np.nonzero(network.weights)
    edges = pd.DataFrame({"source": symbols[sources], "target": symbols[targets],
                          "sign": np.sign(network.weights[sources, targets]).astype(np.int64),
                          "weight": network.weights[sources, targets]})
    # a perturbation's mean log change over the states of a cell drawn at random: T plus the state-fraction mean
    # of the states' extra TF rows (exact; each state's own change is T_s's row)
    total_effect = network.total_effect[perturbed_genes]
    n_tfs = network.state_total_effect.shape[1]
    tf_perturbations = perturbed_genes < n_tfs
    total_effect[tf_perturbations] += np.einsum(
        "s,stg->tg", network.state_fractions, network.state_total_effect)[perturbed_genes[tf_perturbations]]
    log_fold_changes = log_factors[:, None] * total_effect  # (P, G)
    rows, genes = np.nonzero(np.abs(log_fold_changes) >= 1e-12)
    effects = pd.DataFrame({"perturbation": symbols[perturbed_genes][rows], "gene": symbols[genes],
                            "log_fold_change": log_fold_changes[rows, genes]})
    members, modules = np.nonzero(network.module_loadings)
    by_module = np.lexsort((members, modules))
    tables = {}
    if network.state_weights.any():
        states, state_sources, state_targets = np.nonzero(network.state_weights)
        state_edges = pd.DataFrame({"source": symbols[state_sources], "target": symbols[state_targets],
                                    "sign": np.sign(network.state_weights[states, state_sources, state_targets])
                                    .astype(np.int64),
                                    "weight": network.state_weights[states, state_sources, state_targets]})
        edges = pd.concat([edges, state_edges], ignore_index=True)
        tables["truth_state_edges"] = pd.DataFrame({"state": [f"state_{s}" for s in states],
                                                    "source": state_edges["source"],
                                                    "target": state_edges["target"]})
    return tables | {
        "truth_edges": edges,
        "truth_effects": effects,
        "truth_perturbation_strength": pd.DataFrame({"perturbation": symbols[perturbed_genes],
                                                     "strength": strengths}),
        "truth_modules": pd.DataFrame({"module": modules[by_module].astype(np.int64),
                                       "gene": symbols[members[by_module]]}),
    }
