"""The family S design of an extraction pass, from the configuration: rebuilt identically, refused when too big."""

import numpy as np
import pytest

from scinterp_assets.core.analyses.strata import Stratification, strata_table
from scinterp_assets.defs.scaling_design import scaling_design


def _strata(n_cells: int = 120):
    labels = np.arange(n_cells) % 3
    return strata_table([f"c{i}" for i in range(n_cells)], [
        Stratification("kmeans_k2", "kmeans", 2, labels % 2), Stratification("kmeans_k3", "kmeans", 3, labels),
        Stratification("leiden_k2", "leiden", 2, (labels > 0).astype(np.int64)),
        Stratification("leiden_k3", "leiden", 3, labels[::-1].copy())])


def test_the_design_is_rebuilt_identically_and_an_oversized_one_is_refused_with_the_fix(small_project):
    rows = ("TF01", "TF02")
    first = scaling_design(_strata(), rows, 300, 1, small_project)
    second = scaling_design(_strata(), rows, 300, 1, small_project)
    assert first.groups.names == second.groups.names and first.groups.layer == 1
    np.testing.assert_array_equal(first.groups.membership, second.groups.membership)
    small = small_project.model_copy(update={"scaling": small_project.scaling.model_copy(
        update={"max_grouped_megabytes": 0.01})})
    with pytest.raises(ValueError, match=r"groups x 2 reference sources x 300 genes need .*"
                                         r"scaling.max_grouped_megabytes.*Fix: fewer scaling.k_values"):
        scaling_design(_strata(), rows, 300, 1, small)


def test_the_study_shape_configuration_fits_its_family_s_design_in_the_memory_limit():
    """scinterp.study-shape.yaml's world: 2,000 extracted cells, 200 planted TFs x 2,000 universe genes."""
    from pathlib import Path

    from scinterp_assets.config import load_config

    config = load_config(Path(__file__).parents[2] / "scinterp.study-shape.yaml")
    rng = np.random.default_rng(0)
    strata = [Stratification(f"{method}_k{k}", method, k, np.sort(rng.integers(0, k, 2000)))
              for method in config.scaling.methods for k in config.scaling.k_values]
    strata += [Stratification("shuffled", "shuffled", None, rng.permutation(strata[0].labels)),
               Stratification("oracle", "oracle", None, np.sort(rng.integers(0, 3, 2000)))]
    table = strata_table([f"c{i}" for i in range(2000)], strata)
    design = scaling_design(table, tuple(f"TF{i}" for i in range(200)), 2000, 5, config)
    assert len(design.groups.names) > 100
