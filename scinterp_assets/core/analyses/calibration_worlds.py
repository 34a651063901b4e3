"""Seeded perturbation-prediction worlds for calibration: null scores of several shapes and planted signal.

A world has genes with gene-level features (mean, variance, detection rate), perturbations of the first
n_perturbations genes, and DE labels drawn from

    logit P(DE[p, t]) = a_p + (1 + 0.4 z(mean_p)) h(target features) + u_t + edge_effect e[p, t]

a_p: perturbation strength ~ N(base_logit, 0.7); h: a nonlinear function of the target's features
(1.2 z(variance) + 0.5 z(mean)^2 + 0.8 [detection > its median]); the perturbed gene's mean scales it (a
source x target interaction); u_t ~ N(0, 0.5): a target effect no feature explains, shared by every
perturbation (so targets are a second sampling unit); e[p, t] ~ N(0, 1): pair-specific regulation, the only
thing an edge score can know beyond the features.

Edge-score classes (each a (G, G) matrix over the world's genes, rows = perturbed gene):

  noise              i.i.d. N(0, 1): nothing at all
  target_nonlinear   exp(mean_t) + variance_t^2: a nonlinear function of the target's features
  source_features    mean_s: the perturbed gene's feature (constant within a perturbation)
  pair_nonlinear     sqrt(mean_s mean_t) + detection_s variance_t^2: a nonlinear function of both genes'
                     features
  planted            e[p, t] + N(0, noise) + target_nonlinear / its sd: carries the pair signal plus
                     feature-driven structure (attention-like: mostly co-expression, some regulation)

The first four carry no information about the labels beyond the features (they are functions of the
features, or independent noise): a calibrated incremental-value test rejects them at most at its nominal
rate. The planted class carries e and must be detected.

Comparisons of two scores (A01, A02, A04: is a better than b?) need a different null, two scores of equal
quality. `comparison_score_sets` draws them from one law, so neither is better in the population of
perturbations and targets, though one always wins on a given sample. Each draw is a target-level component
(the target's standardised variance plus N(0, 1) noise of its own: every perturbation sees the same
target preferences, as gene-level baselines and much of attention do), plus, for edge-like scores, N(0, 1)
pair noise. Classes, as the platform's score sets:

  exchangeable_target_level     baseline_variance vs correlation, both target-level draws (A04)
  exchangeable_target_and_pair  attention L0 vs correlation, both target-level + pair draws (A01)
  exchangeable_layers           attention L0-L5 and correlation, all target-level + pair draws (A02, A01)
  planted_layer (signal)        the same, but layer 3 is the planted score (pair signal e): A01 L3 and A02
                                must find it; and baseline_variance = the true target drive h, which A04
                                must find better than the correlation draw
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.attention.grouped import CellGroups, GroupedScores
from scinterp_assets.core.edges import NO_LAYER

NULL_CLASSES = ("noise", "target_nonlinear", "source_features", "pair_nonlinear")
SIGNAL_CLASSES = ("planted",)
COMPARISON_NULL_CLASSES = ("exchangeable_target_level", "exchangeable_target_and_pair", "exchangeable_layers")
COMPARISON_SIGNAL_CLASSES = ("planted_layer",)
PLANTED_LAYER = 3
N_LAYERS = 6


@dataclass(frozen=True)
class WorldShape:
    """Size and effect sizes of a calibration world."""

    n_perturbations: int = 30
    n_genes: int = 100
    base_logit: float = -2.3
    edge_effect: float = 1.0
    planted_noise: float = 0.7


@dataclass(frozen=True)
class CalibrationWorld:
    labels: pd.DataFrame  # perturbation, target, is_de
    features: pd.DataFrame  # gene, mean, variance, detection_rate
    genes: tuple[str, ...]
    scores: dict[str, ScoreSet]  # class name -> score set over genes
    target_drive: np.ndarray  # (G,) h: the nonlinear function of the target's features in the label model

    def score_set(self, name: str) -> ScoreSet:
        return self.scores[name]


def _z(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def _gene_features(rng: np.random.Generator, n: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray,
                                                                 pd.DataFrame]:
    """Gene names and features of a world: mean ~ Gamma(2, 0.6), variance = mean x U(0.5, 1.5), detection
    rate rising with the mean. Returns (genes, mean, variance, detection, features frame)."""
    genes = tuple(f"G{i:04d}" for i in range(n))
    mean = rng.gamma(2.0, 0.6, n)
    variance = mean * rng.uniform(0.5, 1.5, n)
    detection = np.clip(1 - np.exp(-1.5 * mean) + rng.normal(0, 0.03, n), 0.01, 0.999)
    features = pd.DataFrame({"gene": genes, "mean": mean, "variance": variance, "detection_rate": detection})
    return genes, mean, variance, detection, features


def _feature_score_matrices(rng: np.random.Generator, mean: np.ndarray, variance: np.ndarray,
                            detection: np.ndarray) -> dict[str, np.ndarray]:
    """The (G, G) scores that know nothing beyond the genes' features: noise, target_nonlinear,
    source_features, pair_nonlinear (module docstring)."""
    n = mean.size
    return {
        "noise": rng.normal(size=(n, n)),
        "target_nonlinear": np.tile(np.exp(mean) + variance**2, (n, 1)),
        "source_features": np.tile(mean[:, None], (1, n)),
        "pair_nonlinear": np.sqrt(np.outer(mean, mean)) + np.outer(detection, variance**2),
    }


def calibration_world(seed: int, shape: WorldShape = WorldShape()) -> CalibrationWorld:
    """One seeded world (module docstring)."""
    rng = np.random.default_rng(seed)
    n = shape.n_genes
    genes, mean, variance, detection, features = _gene_features(rng, n)
    h = 1.2 * _z(variance) + 0.5 * _z(mean) ** 2 + 0.8 * (detection > np.median(detection))
    strength = rng.normal(shape.base_logit, 0.7, n)
    target_effect = rng.normal(0, 0.5, n)
    pair_signal = rng.normal(size=(n, n))
    logit = (
        strength[:, None]
        + (1 + 0.4 * _z(mean))[:, None] * h[None, :]
        + target_effect[None, :]
        + shape.edge_effect * pair_signal
    )
    is_de = rng.random((n, n)) < 1 / (1 + np.exp(-logit))
    matrices = _feature_score_matrices(rng, mean, variance, detection)
    target_nonlinear = matrices["target_nonlinear"][0]
    matrices = {
        **matrices,
        "planted": pair_signal
        + rng.normal(0, shape.planted_noise, (n, n))
        + np.tile(target_nonlinear / target_nonlinear.std(), (n, 1)),
    }
    perturbed, targets = np.meshgrid(np.arange(shape.n_perturbations), np.arange(n), indexing="ij")
    keep = perturbed != targets
    labels = pd.DataFrame(
        {
            "perturbation": np.asarray(genes)[perturbed[keep]],
            "target": np.asarray(genes)[targets[keep]],
            "is_de": is_de[perturbed[keep], targets[keep]],
        }
    )
    scores = {name: ScoreSet("attention", 0, name, matrix) for name, matrix in matrices.items()}
    return CalibrationWorld(labels, features, genes, scores, h)


def comparison_score_sets(world: CalibrationWorld, name: str, seed: int) -> list[ScoreSet]:
    """The score sets of one comparison class (module docstring), seeded."""
    rng = np.random.default_rng(seed)
    genes = len(world.genes)
    variance = _z(world.features["variance"].to_numpy())

    def draw(pair_noise: bool) -> np.ndarray:
        matrix = np.tile(variance + rng.normal(size=genes), (genes, 1))
        return matrix + rng.normal(size=(genes, genes)) if pair_noise else matrix

    def layer(index: int, matrix: np.ndarray) -> ScoreSet:
        return ScoreSet("attention", index, "head_mean", matrix)

    correlation = ScoreSet("correlation", NO_LAYER, "none", draw(name != "exchangeable_target_level"))
    if name == "exchangeable_target_level":
        return [ScoreSet("baseline_variance", NO_LAYER, "none", draw(False)), correlation]
    if name == "exchangeable_target_and_pair":
        return [layer(0, draw(True)), correlation]
    if name == "exchangeable_layers":
        return [layer(index, draw(True)) for index in range(N_LAYERS)] + [correlation]
    if name == "planted_layer":
        layers = [layer(index, world.score_set("planted").matrix if index == PLANTED_LAYER else draw(True))
                  for index in range(N_LAYERS)]
        return layers + [correlation, ScoreSet("baseline_variance", NO_LAYER, "none",
                                               np.tile(world.target_drive, (genes, 1)))]
    raise ValueError(f"unknown comparison class {name!r}; expected one of "
                     f"{COMPARISON_NULL_CLASSES + COMPARISON_SIGNAL_CLASSES}")


# ----------------------------------------------------------------------------------------------------------
# Reference-network worlds (family R: A09, A10, A12)

REFERENCE_FEATURE_CLASSES = ("noise", "target_nonlinear", "source_features", "pair_nonlinear")
REFERENCE_INDEPENDENT_CLASSES = ("independent_target_level", "independent_source_target")
REFERENCE_SIGNAL_CLASSES = ("planted",)
REFERENCE_RESOURCE = "planted_reference"


@dataclass(frozen=True)
class ReferenceWorldShape:
    """Size and effect sizes of a reference-network calibration world."""

    n_genes: int = 150
    n_tfs: int = 20
    base_logit: float = -3.5
    edge_effect: float = 1.0
    planted_noise: float = 0.7


@dataclass(frozen=True)
class ReferenceWorld:
    genes: tuple[str, ...]
    features: pd.DataFrame  # gene, mean, variance, detection_rate
    reference: pd.DataFrame  # source, target, resource, relation, sign
    scores: dict[str, ScoreSet]  # class name -> score set over genes


def reference_world(seed: int, shape: ReferenceWorldShape = ReferenceWorldShape()) -> ReferenceWorld:
    """One seeded world with a directed TF -> target reference:

        logit P(s -> t in the reference) = base + alpha_s + beta_t + edge_effect r[s, t]   (s among the TFs)

    alpha_s ~ N(0, 0.8) + 0.6 z(mean_s): TF activity, partly explained by the TF's expression; beta_t =
    0.8 z(variance_t) + 0.4 z(mean_t)^2: targets with some expression profiles are better studied (a
    nonlinear function of the target's features); r[s, t] ~ N(0, 1): the pair-specific regulation a score
    can know beyond the genes' features.

    Score classes: the four of `calibration_world` (noise, target_nonlinear, source_features,
    pair_nonlinear: no information beyond the features, so null for A09 and A10, though the last three are
    associated with the reference through alpha and beta, as real gene-level scores are), two with
    gene-level structure independent of the reference (independent_target_level: a random preference per
    target plus pair noise; independent_source_target: random source and target effects plus pair noise:
    null for A12 as well), and planted = r + N(0, noise) + target_nonlinear / its sd (must be detected).
    """
    rng = np.random.default_rng(seed)
    n = shape.n_genes
    genes, mean, variance, detection, features = _gene_features(rng, n)
    activity = rng.normal(0, 0.8, n) + 0.6 * _z(mean)
    propensity = 0.8 * _z(variance) + 0.4 * _z(mean) ** 2
    regulation = rng.normal(size=(n, n))
    logit = shape.base_logit + activity[:, None] + propensity[None, :] + shape.edge_effect * regulation
    member = rng.random((n, n)) < 1 / (1 + np.exp(-logit))
    member[shape.n_tfs:] = False
    np.fill_diagonal(member, False)
    sources, targets = np.nonzero(member)
    reference = pd.DataFrame({"source": np.asarray(genes)[sources], "target": np.asarray(genes)[targets],
                              "resource": REFERENCE_RESOURCE, "relation": "regulates", "sign": 0})
    matrices = _feature_score_matrices(rng, mean, variance, detection)
    target_nonlinear = matrices["target_nonlinear"][0]
    matrices = {
        **matrices,
        "independent_target_level": np.tile(rng.normal(size=n), (n, 1)) + 0.5 * rng.normal(size=(n, n)),
        "independent_source_target": (rng.normal(size=n)[:, None] + rng.normal(size=n)[None, :]
                                      + 0.5 * rng.normal(size=(n, n))),
        "planted": regulation + rng.normal(0, shape.planted_noise, (n, n))
        + np.tile(target_nonlinear / target_nonlinear.std(), (n, 1)),
    }
    scores = {name: ScoreSet("attention", layer, "head_mean", matrix)
              for layer, (name, matrix) in enumerate(matrices.items())}
    return ReferenceWorld(genes, features, reference, scores)


# ---------------------------------------------------------------------------------------------------------
# CSSI (A21) worlds: a simulated screen with state-specific wiring and per-cell edge scores of known content
#
# The A21 test asks whether scoring within the estimated strata recovers the reference better than scoring
# within random strata of the same sizes. Its per-cell score classes, each additive over cells as attention is
# (a group's score is the sum of its cells'), over the world's TF rows x every gene:
#
#   noise          i.i.d. N(0, 1) per cell and pair: independent of cells' states and of the reference
#   target_level   the target's standardised expression in the cell, the same for every row: gene-level and
#                  state-dependent, but without pair information
#   coexpression   the product of the two genes' standardised expression in the cell (signal: its within-state
#                  mean is the within-state covariance, which the state-specific edges drive)
#
# and, as a check of the null itself, coexpression scored on the primary labels shuffled over cells
# (exchangeable with the null's random strata by construction).

CSSI_NULL_CLASSES = ("noise", "target_level", "coexpression, shuffled strata")
CSSI_SIGNAL_CLASSES = ("coexpression",)


@dataclass(frozen=True)
class CssiWorld:
    expression: np.ndarray  # (cells, G) log1p of counts per 10,000 of the control cells
    genes: tuple[str, ...]
    rows: tuple[str, ...]  # the TFs: the planted network's sources
    truth_edges: pd.DataFrame  # source, target (state-specific edges included)
    state_edges: pd.DataFrame  # state, source, target: the edges active in one state only
    states: np.ndarray  # str (cells,) each cell's true state


def cssi_world(seed: int, n_cells: int = 500) -> CssiWorld:
    """`n_cells` control cells of a synthetic screen (wiring and cells from the seed) with three states, 40
    edges of each state's own and strong state offsets of TF activity (the world of the A20/A21 tests)."""
    from scinterp_assets.core.datasets.synthetic import SyntheticWorldSpec, simulate_world

    screen = simulate_world(SyntheticWorldSpec(wiring_seed=seed, seed=seed, n_control_cells=n_cells,
                                               cells_per_perturbation=10, state_specific_edges=40,
                                               state_effect_sd=1.2))
    controls = (screen.obs["perturbation"] == screen.uns["control_label"]).to_numpy()
    counts = screen.X[controls].toarray()
    genes = tuple(screen.var_names)
    return CssiWorld(np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4), genes,
                     genes[: int(screen.var["is_tf"].sum())], pd.DataFrame(screen.uns["truth_edges"]),
                     pd.DataFrame(screen.uns["truth_state_edges"]), screen.obs["cell_state"].to_numpy()[controls])


def cssi_cell_scores(world: CssiWorld, name: str, seed: int) -> np.ndarray:
    """float64 (cells, R, G) per-cell scores of one class (see above; the shuffled check uses coexpression)."""
    z = (world.expression - world.expression.mean(axis=0)) / (world.expression.std(axis=0) + 1e-9)
    n_rows = len(world.rows)
    if name == "noise":
        return np.random.default_rng(seed).normal(size=(z.shape[0], n_rows, z.shape[1]))
    if name == "target_level":
        return np.broadcast_to(z[:, None, :], (z.shape[0], n_rows, z.shape[1]))
    return z[:, :n_rows, None] * z[:, None, :]  # the TFs are the first genes of a synthetic world


def grouped_cell_scores(groups: CellGroups, genes: tuple[str, ...], cell_scores: np.ndarray) -> GroupedScores:
    """What grouped accumulation would hold for per-cell scores (cells, R, G) of a model that scores every pair
    in every cell: per group the sum over its cells, the pair count its number of cells."""
    n_groups = len(groups.names)
    total = np.zeros((n_groups, *cell_scores.shape[1:]))
    n_cells = np.zeros(n_groups, dtype=np.int64)
    for column in groups.membership.T:
        for group in np.unique(column[column >= 0]):
            members = column == group
            total[group] = cell_scores[members].sum(axis=0)
            n_cells[group] = members.sum()
    count = np.broadcast_to(n_cells[:, None, None], total.shape).astype(np.int32)
    return GroupedScores(genes, groups.rows, groups.layer, groups.names, total, np.zeros((0, *total.shape[1:])),
                         count, n_cells)
