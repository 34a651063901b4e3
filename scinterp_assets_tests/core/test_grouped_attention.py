"""Grouped accumulation (FRAMEWORK A20-A21): one pass gives each group of cells the sums a run over that group
alone gives, leaves the pooled sums as they were, and stores and reads back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from scinterp_assets.core.attention.grouped import CellGroups, GroupedScores
from scinterp_assets.core.models import load_model
from scinterp_assets_tests.core.tiny_models import (
    assert_within,
    build_tiny_geneformer,
    build_tiny_scgpt,
    float32_sum_tolerance,
    tiny_counts,
)

GENES = ["GENE2", "GENE5", "NOVEL1", "GENE9", "GENE11", "GENE30", "GENE1"]
SOURCES = ["GENE2", "NOVEL1", "GENE9"]
ROWS = ("GENE2", "GENE9")
N_CELLS = 14
# grouping 0: three strata over every cell; grouping 1: two buckets, cells 0-3 in neither; grouping 2: everyone
STRATA = np.array([0, 1, 2] * 4 + [0, 1])
BUCKETS = np.array([-1] * 4 + [3] * 5 + [4] * 5)
NAMES = ("stratum0", "stratum1", "stratum2", "bucket0", "bucket1", "everyone")


def cell_groups(layer: int) -> CellGroups:
    membership = np.stack([STRATA, BUCKETS, np.full(N_CELLS, 5)], axis=1)
    return CellGroups(NAMES, membership, ROWS, layer)


def dense_rows(scores, layer_row: int, genes=GENES) -> np.ndarray:
    """Head-mean sums of ROWS from a dense (every gene a source) result, float64 from the per-head sums."""
    rows = [genes.index(gene) for gene in ROWS]
    return scores.sum[layer_row].mean(axis=0)[rows]


def tolerance(model, count: np.ndarray) -> np.ndarray:
    config = model.bert.config  # a run over a subset pads its batches differently: float32 attention differs
    return float32_sum_tolerance(count, model.n_layers, max(config.max_position_embeddings, config.intermediate_size))


def test_geneformer_groups_equal_runs_over_each_group_alone(tmp_path):
    model = load_model(build_tiny_geneformer(tmp_path / "m", version="V2"))
    adata = tiny_counts(n_cells=N_CELLS)
    plain, plain_weighted = model.attention_scores(adata, GENES, batch_size=3, value_weighted=True, sources=SOURCES)
    scores, weighted, grouped = model.attention_scores(adata, GENES, batch_size=3, value_weighted=True,
                                                       sources=SOURCES, groups=cell_groups(layer=1))
    np.testing.assert_array_equal(scores.sum, plain.sum)  # the pooled sums do not change
    np.testing.assert_array_equal(weighted.head_mean_sum, plain_weighted.head_mean_sum)
    assert grouped.layer == 1 and grouped.rows == ROWS and grouped.groups == NAMES
    for name, cells in (("stratum0", STRATA == 0), ("stratum2", STRATA == 2), ("bucket1", BUCKETS == 4)):
        alone, alone_weighted = model.attention_scores(adata[cells], GENES, batch_size=3, value_weighted=True)
        g = NAMES.index(name)
        np.testing.assert_array_equal(grouped.count[g], alone.count[[GENES.index(r) for r in ROWS]])
        assert grouped.n_cells[g] == cells.sum()
        assert_within(grouped.attention_sum[g], dense_rows(alone, 1), tolerance(model, grouped.count[g]))
        assert_within(grouped.value_weighted_sum[g], alone_weighted.head_mean_sum[1][[GENES.index(r) for r in ROWS]],
                      tolerance(model, grouped.count[g]))


def test_scgpt_groups_partition_the_pooled_rows(tmp_path):
    """scGPT's tokeniser draws ties per cell in order, so a run over a subset is not an oracle; instead the
    group of every cell must equal the pooled rows and the groups of a partition must add up to it."""
    model = load_model(build_tiny_scgpt(tmp_path / "m"))
    adata = tiny_counts(n_cells=N_CELLS)
    dense, dense_weighted, grouped = model.attention_scores(adata, GENES, batch_size=4, value_weighted=True,
                                                            groups=cell_groups(layer=0), seed=3)
    everyone, rows = NAMES.index("everyone"), [GENES.index(r) for r in ROWS]
    eps = 64 * np.finfo(np.float64).eps
    np.testing.assert_array_equal(grouped.count[everyone], dense.count[rows])
    np.testing.assert_allclose(grouped.attention_sum[everyone], dense_rows(dense, 0), rtol=eps, atol=0)
    np.testing.assert_allclose(grouped.value_weighted_sum[everyone], dense_weighted.head_mean_sum[0][rows],
                               rtol=eps, atol=1e-12)
    strata = [NAMES.index(f"stratum{k}") for k in range(3)]
    np.testing.assert_array_equal(grouped.count[strata].sum(axis=0), grouped.count[everyone])
    np.testing.assert_allclose(grouped.attention_sum[strata].sum(axis=0), grouped.attention_sum[everyone],
                               rtol=eps, atol=1e-12)
    mean, count = grouped.mean(["stratum0", "stratum1", "stratum2"])
    expected = dense_rows(dense, 0) / np.where(dense.count[rows] > 0, dense.count[rows], np.nan)
    expected[np.arange(2), rows] = np.nan  # a gene's attention to itself is not an edge
    np.testing.assert_allclose(mean, expected, rtol=1e-12)


def test_grouped_scores_round_trip_and_refuse_bad_groups(tmp_path):
    model = load_model(build_tiny_geneformer(tmp_path / "m"))
    adata = tiny_counts(n_cells=N_CELLS)
    *_, grouped = model.attention_scores(adata, GENES, groups=cell_groups(layer=0), sources=SOURCES)
    path = grouped.save(tmp_path / "grouped.npz")
    loaded = GroupedScores.load(path)
    for name in ("attention_sum", "count", "n_cells", "value_weighted_sum"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(grouped, name))
    assert (loaded.genes, loaded.rows, loaded.groups, loaded.layer) == (grouped.genes, ROWS, NAMES, 0)
    with pytest.raises(ValueError, match="per-head sources"):
        model.attention_scores(adata, GENES, sources=["GENE2"], groups=cell_groups(layer=0))
    with pytest.raises(ValueError, match="not among the accumulated layers"):
        model.attention_scores(adata, GENES, layers=[0], groups=cell_groups(layer=1))
    with pytest.raises(ValueError, match="membership must lie"):
        CellGroups(NAMES, np.full((N_CELLS, 1), 6), ROWS, 0)
