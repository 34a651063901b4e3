import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold

from scinterp_assets.core.analyses.calibration_worlds import WorldShape, calibration_world
from scinterp_assets.core.analyses.layer_selection import (
    LAYER_PROFILE_COLUMNS,
    layer_profile,
    layer_selection_tests,
    nested_cv_layer_selection,
)
from scinterp_assets.core.analyses.perturbation_prediction import (
    PF_AUROC_COLUMNS,
    PerturbationFilter,
    PFResamples,
    per_perturbation_auroc,
    resampled_pf_auroc,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.stats.bootstrap import wald_test
from scinterp_assets.core.stats.registry import registry_rows


def _pf_table(columns: dict[tuple, list[float]]) -> pd.DataFrame:
    """Long PF AUROC table from {(method, layer, aggregation): per-perturbation AUROCs}."""
    rows = []
    for (method, layer, aggregation), values in columns.items():
        rows += [(f"P{index}", method, layer, aggregation, value, 20, 4)
                 for index, value in enumerate(values)]
    return pd.DataFrame(rows, columns=list(PF_AUROC_COLUMNS))


def _resamples(cells: dict[tuple, np.ndarray], n_bootstrap: int = 40, seed: int = 0) -> PFResamples:
    """PFResamples from {(method, layer, aggregation): (P, F) cell AUROCs}; replicates jitter the cells."""
    keys = tuple(cells)
    point = np.stack([np.asarray(cells[key], dtype=float) for key in keys], axis=-1)
    n_perturbations, n_folds, _ = point.shape
    rng = np.random.default_rng(seed)
    return PFResamples(
        keys=keys, perturbations=tuple(f"P{i:02d}" for i in range(n_perturbations)),
        n_positives=np.full(n_perturbations, 4), target_fold=np.arange(10 * n_folds) % n_folds, point=point,
        replicates=point + rng.normal(0, 0.01, (n_bootstrap, *point.shape)),
        perturbation_counts=rng.multinomial(n_perturbations, np.full(n_perturbations, 1 / n_perturbations),
                                            n_bootstrap).astype(float),
        target_counts=np.ones((n_bootstrap, 10 * n_folds)),
    )


CORRELATION_KEY = ("correlation", -1, "none")


def _random_cells(seed=4, n=23, n_layers=4, n_folds=5, aggregation="head_max"):
    rng = np.random.default_rng(seed)
    cells = {("attention", layer, aggregation): rng.uniform(0.5, 0.8, (n, n_folds)) for layer in range(n_layers)}
    cells[CORRELATION_KEY] = rng.uniform(0.5, 0.8, (n, n_folds))
    cells[("attention", 1, aggregation)][3, 2] = np.nan  # a cell without both classes
    return cells


def test_matches_a_slow_loop_over_perturbation_and_target_folds():
    cells = _random_cells()
    selection = nested_cv_layer_selection(_resamples(cells), "attention", "head_max", seed=7)
    layers = np.stack([cells[("attention", layer, "head_max")] for layer in range(4)], axis=-1)  # (P, F, L)
    expected_selected = np.empty((23, 5))
    for train, test in KFold(5, shuffle=True, random_state=7).split(np.arange(23)):
        for fold in range(5):
            training = np.delete(layers[train], fold, axis=1)  # (train, F - 1, L)
            criterion = [np.nanmean(np.nanmean(training[:, :, layer], axis=1)) for layer in range(4)]
            best = max(range(4), key=lambda layer: (criterion[layer], -layer))
            expected_selected[test, fold] = layers[test, fold, best]
    got = selection.per_cell.pivot(index="perturbation", columns="target_fold", values="selected_auroc")
    np.testing.assert_allclose(got.to_numpy(), expected_selected)
    difference = np.nanmean(expected_selected - cells[CORRELATION_KEY], axis=1)
    assert selection.effect == pytest.approx(difference.mean())
    assert selection.mean_selected_auroc == pytest.approx(np.nanmean(expected_selected, axis=1).mean())
    assert sum(selection.selection_counts.values()) == 25


def test_a_held_out_block_never_influences_its_own_selection():
    cells = _random_cells()
    selection = nested_cv_layer_selection(_resamples(cells), "attention", "head_max", seed=7)
    block = selection.per_cell.iloc[0]
    p, fold, chosen = int(block["perturbation"][1:]), int(block["target_fold"]), int(block["selected_layer"])
    other = (chosen + 1) % 4
    cells[("attention", other, "head_max")][p, fold] = 1.0  # make another layer perfect on the held-out cell only
    again = nested_cv_layer_selection(_resamples(cells), "attention", "head_max", seed=7)
    assert int(again.per_cell.iloc[0]["selected_layer"]) == chosen


def _world_sets(seed=0, planted_layer=3):
    world = calibration_world(seed, WorldShape(n_perturbations=25, n_genes=80))
    rng = np.random.default_rng(seed)
    sets = [ScoreSet("attention", layer, "head_mean",
                     world.score_set("planted").matrix if layer == planted_layer else rng.normal(size=(80, 80)))
            for layer in range(6)]
    return world, sets + [ScoreSet("correlation", -1, "none", world.score_set("noise").matrix)]


def test_planted_best_layer_is_selected_in_every_block():
    world, sets = _world_sets()
    rule = PerturbationFilter(3, 3)
    table = per_perturbation_auroc(world.labels, list(world.genes), sets, rule)
    resamples = resampled_pf_auroc(world.labels, list(world.genes), sets, rule, n_bootstrap=100, seed=0,
                                   n_target_folds=5)
    selection = nested_cv_layer_selection(resamples, "attention", "head_mean", seed=1)
    assert selection.selection_counts[3] == 25 and selection.modal_layer == 3
    rows = {row["test_id"]: row for row in layer_selection_tests(table, resamples, seed=1)}
    stability = rows["A02:attention_head_mean_nested_cv_selection_stability"]
    assert stability["layer"] == 3 and stability["statistic"] == 1.0 and stability["effect"] == 1.0
    assert not stability["confirmatory"]
    confirmatory = rows["A02:attention_head_mean_nested_cv_vs_correlation"]
    assert confirmatory["ci_low"] > 0 and confirmatory["p_value"] < 0.05 and confirmatory["confirmatory"]


def test_ties_go_to_the_lowest_layer():
    same = np.random.default_rng(3).uniform(0.5, 0.9, (6, 5))
    resamples = _resamples({("attention", 2, "head_mean"): same, ("attention", 5, "head_mean"): same,
                            CORRELATION_KEY: np.full((6, 5), 0.5)})
    selection = nested_cv_layer_selection(resamples, "attention", "head_mean", seed=3)
    assert selection.selection_counts == {2: 25, 5: 0}


def test_per_layer_rows_are_bonferroni_across_layers_and_descriptive():
    cells = _random_cells(aggregation="head_mean")
    resamples = _resamples(cells)
    table = _pf_table({key: np.nanmean(values, axis=1) for key, values in cells.items()})
    rows = {row["test_id"]: row for row in layer_selection_tests(table, resamples, seed=0)}
    for layer in range(4):
        row = rows[f"A02:attention_L{layer}_head_mean_vs_correlation_bonferroni"]
        raw = wald_test(*resamples.mean_difference(("attention", layer, "head_mean"), CORRELATION_KEY)).p_value
        assert row["p_value"] == pytest.approx(min(1.0, raw * 4))
        assert row["statistic"] == pytest.approx(np.nanmean(cells[("attention", layer, "head_mean")], axis=1).mean())
        assert not row["confirmatory"]
    assert not any("best" in test_id for test_id in rows)
    frame = registry_rows(list(rows.values()), model="m", cell_type="c")
    assert set(frame["analysis_id"]) == {"A02"} and frame["confirmatory"].sum() == 1


def test_profile_and_one_selection_per_variant():
    cells = _random_cells(aggregation="head_mean", n_layers=2)
    cells.update({("value_weighted", layer, "head_mean"): cells[("attention", 1 - layer, "head_mean")]
                  for layer in range(2)})
    table = _pf_table({key: np.nanmean(values, axis=1) for key, values in cells.items()})
    profile = layer_profile(table)
    assert tuple(profile.columns) == LAYER_PROFILE_COLUMNS
    assert len(profile) == 4
    row = profile[(profile["method"] == "attention") & (profile["layer"] == 0)].iloc[0]
    expected = np.nanmean(cells[("attention", 0, "head_mean")], axis=1).mean()
    assert row["mean_auroc"] == pytest.approx(expected) and row["n_perturbations"] == 23
    confirmatory = [r["test_id"] for r in layer_selection_tests(table, _resamples(cells), seed=0)
                    if r["confirmatory"]]
    assert confirmatory == ["A02:attention_head_mean_nested_cv_vs_correlation",
                            "A02:value_weighted_head_mean_nested_cv_vs_correlation"]


def test_seeded_and_reproducible():
    world, sets = _world_sets(seed=2)
    rule = PerturbationFilter(3, 3)
    runs = [nested_cv_layer_selection(
        resampled_pf_auroc(world.labels, list(world.genes), sets, rule, n_bootstrap=40, seed=5, n_target_folds=5),
        "attention", "head_mean", seed=11) for _ in range(2)]
    pd.testing.assert_frame_equal(runs[0].per_cell, runs[1].per_cell)
    assert runs[0].test == runs[1].test


def test_too_few_perturbations_says_how_many_are_needed():
    cells = {key: values[:4] for key, values in _random_cells().items()}
    with pytest.raises(ValueError, match="5 evaluable perturbations; got 4"):
        nested_cv_layer_selection(_resamples(cells), "attention", "head_max", seed=0)


def test_table_without_attention_layers_is_refused():
    cells = _random_cells()
    table = _pf_table({CORRELATION_KEY: cells[CORRELATION_KEY][:, 0],
                       ("baseline_variance", -1, "none"): cells[CORRELATION_KEY][:, 1]})
    with pytest.raises(ValueError, match="A02 needs attention scores with layers"):
        layer_selection_tests(table, _resamples(cells), seed=0)


def test_resamples_without_correlation_are_refused():
    cells = _random_cells()
    table = _pf_table({key: values[:, 0] for key, values in cells.items()})
    del cells[CORRELATION_KEY]
    with pytest.raises(ValueError, match="has no correlation"):
        layer_selection_tests(table, _resamples(cells), seed=0)
