"""Shared fixtures: a small project configuration in a temporary folder, and its Dagster instance."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from scinterp_assets.config import ScinterpConfig, load_config

# The code location module reads its configuration at import; point it at the repository's file.
os.environ.setdefault("SCINTERP_CONFIG", str(Path(__file__).parents[1] / "scinterp.yaml"))

SMALL_PROJECT = """
home: out
checkpoint_dir: checkpoints
cell_types:
  synthetic_a:
    kind: synthetic
    modality: CRISPRi
    wiring_seed: 1
    seed: 3
    n_control_cells: 300
    n_perturbed_genes: 30
    cells_per_perturbation: 40
  synthetic_b:
    kind: synthetic
    modality: CRISPRa
    wiring_seed: 2
    seed: 4
    n_control_cells: 300
    n_perturbed_genes: 30
    cells_per_perturbation: 40
preprocessing: {n_control_cells: 300, n_hvg: 150}
attention: {batch_size: 16, max_cells: 120}
# the full battery runs, with the cheaper model and fewer resamples (the configuration decides, not the code)
analyses: {incremental_value_models: [logistic], incremental_value_bootstrap: 40, bootstrap_resamples: 100,
           incremental_value_repeats: 1, incremental_value_folds: 3, residualisation_folds: 3, threads: 1,
           sensitivity_lfc: [0.5, 1.0], sensitivity_n_ctrl: [300], sensitivity_n_hvg: [75, 150]}
reference_null: {n_draws: 200}
interventions: {max_cells: 6, in_silico_cells: 2, ks: [1], random_draws: 2, exhaustive_up_to: 0}
scaling: {k_values: [2, 3], primary_k: 3, rung_sizes: [40, 80, 120], heterogeneity_cells: 40, ladder_seeds: 3,
          null_draws: 20, null_blocks: 30, min_stratum_size: 10}
random_weights_twins: false  # on by default; test_user_screen runs a twin through the graph
tiny_checkpoints:
  - {family: geneformer, folder_name: tiny-geneformer, max_steps: 60}
  - {family: scgpt, folder_name: tiny-scgpt, max_steps: 60}
"""


def write_project(folder: Path, text: str = SMALL_PROJECT) -> ScinterpConfig:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scinterp.yaml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture
def small_project(tmp_path) -> ScinterpConfig:
    return write_project(tmp_path / "project")


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance
