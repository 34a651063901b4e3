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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.score_sets import ScoreSet

NULL_CLASSES = ("noise", "target_nonlinear", "source_features", "pair_nonlinear")
SIGNAL_CLASSES = ("planted",)


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

    def score_set(self, name: str) -> ScoreSet:
        return self.scores[name]


def _z(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def calibration_world(seed: int, shape: WorldShape = WorldShape()) -> CalibrationWorld:
    """One seeded world (module docstring)."""
    rng = np.random.default_rng(seed)
    n = shape.n_genes
    genes = tuple(f"G{i:04d}" for i in range(n))
    mean = rng.gamma(2.0, 0.6, n)
    variance = mean * rng.uniform(0.5, 1.5, n)
    detection = np.clip(1 - np.exp(-1.5 * mean) + rng.normal(0, 0.03, n), 0.01, 0.999)
    features = pd.DataFrame({"gene": genes, "mean": mean, "variance": variance, "detection_rate": detection})
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
    target_nonlinear = np.exp(mean) + variance**2
    matrices = {
        "noise": rng.normal(size=(n, n)),
        "target_nonlinear": np.tile(target_nonlinear, (n, 1)),
        "source_features": np.tile(mean[:, None], (1, n)),
        "pair_nonlinear": np.sqrt(np.outer(mean, mean)) + np.outer(detection, variance**2),
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
    return CalibrationWorld(labels, features, genes, scores)
