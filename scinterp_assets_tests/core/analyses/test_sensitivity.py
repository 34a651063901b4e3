import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scinterp_assets.core.analyses.perturbation_prediction import PF_AUROC_COLUMNS
from scinterp_assets.core.analyses.sensitivity import (
    SENSITIVITY_CELL_COLUMNS,
    cell_id,
    hvg_protocol_confound,
    sensitivity_grid,
)
from scinterp_assets.core.stats.registry import registry_rows


def _pf_table(columns: dict[tuple, np.ndarray], names: list[str] | None = None, n_targets: int = 20):
    rows = []
    for (method, layer, aggregation), values in columns.items():
        labels = names or [f"P{index}" for index in range(len(values))]
        rows += [(label, method, layer, aggregation, float(value), n_targets, 4)
                 for label, value in zip(labels, values)]
    return pd.DataFrame(rows, columns=list(PF_AUROC_COLUMNS))


def _world(lfc: float, n_ctrl: int, n_hvg: int) -> pd.DataFrame:
    """Baseline clearly beats attention at lfc 0.5; at lfc 1.0 they are the same scores (no dominance)."""
    rng = np.random.default_rng(n_ctrl + n_hvg)
    n = 25
    attention = 0.6 + rng.normal(0, 0.03, n)
    baseline = attention + (0.15 if lfc == 0.5 else 0.0)
    return _pf_table({("attention", 3, "head_mean"): attention, ("correlation", -1, "none"): attention - 0.02,
                      ("baseline_variance", -1, "none"): baseline,
                      ("baseline_mean", -1, "none"): baseline - 0.05}, n_targets=n_hvg // 10)


class Recorder:
    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, lfc, n_ctrl, n_hvg):
        self.calls.append((lfc, n_ctrl, n_hvg))
        return self.function(lfc, n_ctrl, n_hvg)


def _grid(evaluate, **overrides):
    arguments = {"n_available_controls": 3000, "n_available_genes": 4000, "alpha": 0.05}
    return sensitivity_grid(evaluate, [0.5, 1.0], [500, 2000, 10000], [1000, 2000, 5000],
                            **{**arguments, **overrides})


def test_cells_beyond_the_data_are_skipped_with_the_reason_not_capped():
    evaluate = Recorder(_world)
    grid = _grid(evaluate)
    cells = grid.cells.set_index("cell")
    assert tuple(grid.cells.columns) == SENSITIVITY_CELL_COLUMNS and len(cells) == 18
    assert cells.loc["lfc0.5_ctrl10000_hvg1000", "status"] == "skipped"
    assert (cells.loc["lfc0.5_ctrl10000_hvg1000", "reason"]
            == "N_ctrl=10000 exceeds the 3000 available control cells")
    assert cells.loc["lfc1_ctrl2000_hvg5000", "reason"] == "HVG=5000 exceeds the 4000 available genes"
    assert "; " in cells.loc["lfc1_ctrl10000_hvg5000", "reason"]
    # only the 2 x 2 x 2 feasible cells were computed, with their own settings
    feasible = [(lfc, c, h) for lfc in (0.5, 1.0) for c in (500, 2000) for h in (1000, 2000)]
    assert sorted(evaluate.calls) == sorted(feasible)
    assert (cells["status"] == "evaluated").sum() == 8
    assert not any("ctrl10000" in row["test_id"] or "hvg5000" in row["test_id"] for row in grid.rows)


def test_chance_tests_match_scipy_and_use_the_cell_in_the_test_id():
    grid = _grid(_world)
    rows = {row["test_id"]: row for row in grid.rows}
    row = rows["A03:lfc0.5_ctrl2000_hvg2000:attention_L3_head_mean_vs_chance"]
    values = _world(0.5, 2000, 2000).query("method == 'attention'")["auroc"].to_numpy()
    expected = stats.wilcoxon(values - 0.5)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["statistic"] == pytest.approx(expected.statistic)
    assert row["effect"] == pytest.approx(values.mean()) and not row["confirmatory"]
    assert row["n"] == 25 and row["universe_size"] == 201 and "0.5" in row["label_rule"]
    chance = grid.chance_tests
    assert len(chance) == 8 * 4  # evaluated cells x methods


def test_gene_level_dominance_per_cell_every_row_descriptive():
    grid = _grid(_world)
    cells = grid.cells.set_index("cell")
    assert cells.loc["lfc0.5_ctrl500_hvg1000", "gene_level_dominance"] is True
    assert cells.loc["lfc0.5_ctrl500_hvg1000", "best_baseline"] == "baseline_variance"
    assert cells.loc["lfc0.5_ctrl500_hvg1000", "best_edge"] == "attention_L3_head_mean"
    assert cells.loc["lfc1_ctrl500_hvg1000", "gene_level_dominance"] is False
    assert not any(row["confirmatory"] for row in grid.rows)
    world = _world(0.5, 2000, 2000).pivot(index="perturbation", columns="method", values="auroc")
    dominance = next(row for row in grid.rows if row["test_id"] == "A03:lfc0.5_ctrl2000_hvg2000:gene_level_dominance")
    expected = stats.wilcoxon(world["baseline_variance"], world["attention"])
    assert dominance["p_value"] == pytest.approx(expected.pvalue)
    frame = registry_rows(grid.rows, model="m", cell_type="c")
    assert set(frame["analysis_id"]) == {"A03"}


def test_empty_cell_and_bad_tables():
    def empty_at_high_threshold(lfc, n_ctrl, n_hvg):
        return _world(lfc, n_ctrl, n_hvg).iloc[:0] if lfc == 1.0 else _world(lfc, n_ctrl, n_hvg)

    grid = _grid(empty_at_high_threshold)
    assert set(grid.cells.loc[grid.cells["lfc"] == 1.0, "status"]) == {"skipped", "empty"}
    with pytest.raises(ValueError, match="without column"):
        _grid(lambda lfc, n_ctrl, n_hvg: pd.DataFrame({"perturbation": ["P0"]}))


def test_cell_id():
    assert cell_id(0.5, 2000, 2000) == "lfc0.5_ctrl2000_hvg2000"
    assert cell_id(0.1, 500, 1000) == "lfc0.1_ctrl500_hvg1000"


def test_hvg_confound_on_shared_perturbations_with_scipy_oracle():
    rng = np.random.default_rng(5)
    plain_values = 0.6 + rng.normal(0, 0.05, 7)
    forced_values = np.concatenate([plain_values + 0.04 + rng.normal(0, 0.01, 7), [0.9, 0.9, 0.9]])
    forced = _pf_table({("attention", 0, "head_mean"): forced_values})
    plain = _pf_table({("attention", 0, "head_mean"): plain_values})
    summary, rows = hvg_protocol_confound(forced, plain)
    record = summary.iloc[0]
    assert record["n_shared"] == 7 and record["n_only_forced"] == 3 and record["n_only_plain"] == 0
    assert record["mean_difference"] == pytest.approx(np.mean(forced_values[:7] - plain_values))
    assert record["p_value"] == pytest.approx(stats.wilcoxon(forced_values[:7], plain_values).pvalue)
    by_id = {row["test_id"]: row for row in rows}
    assert by_id["A22:perturbations_only_with_forcing"]["statistic"] == 3
    assert by_id["A22:perturbations_only_with_forcing"]["effect"] == pytest.approx(0.3)
    assert by_id["A22:attention_L0_head_mean_forced_vs_plain"]["n"] == 7
    assert not any(row["confirmatory"] for row in rows)
    assert set(registry_rows(rows)["analysis_id"]) == {"A22"}


def test_hvg_confound_refuses_empty_or_disjoint_tables():
    table = _pf_table({("attention", 0, "head_mean"): [0.6, 0.7]})
    with pytest.raises(ValueError, match="both universes"):
        hvg_protocol_confound(table, table.iloc[:0])
    with pytest.raises(ValueError, match="share no method"):
        hvg_protocol_confound(table, _pf_table({("correlation", -1, "none"): [0.6, 0.7]}))
