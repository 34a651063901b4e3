import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.model_selection import KFold

from scinterp_assets.core.analyses.layer_selection import (
    LAYER_PROFILE_COLUMNS,
    layer_profile,
    layer_selection_tests,
    nested_cv_layer_selection,
)
from scinterp_assets.core.analyses.perturbation_prediction import PF_AUROC_COLUMNS
from scinterp_assets.core.stats.registry import registry_rows


def _pf_table(columns: dict[tuple, list[float]]) -> pd.DataFrame:
    """Long PF AUROC table from {(method, layer, aggregation): per-perturbation AUROCs}."""
    rows = []
    for (method, layer, aggregation), values in columns.items():
        rows += [(f"P{index}", method, layer, aggregation, value, 20, 4)
                 for index, value in enumerate(values)]
    return pd.DataFrame(rows, columns=list(PF_AUROC_COLUMNS))


# Five perturbations, five folds: every outer test fold is one perturbation (whatever the seed), so the
# nested CV can be done by hand. Held out P0, the training set prefers layer 1; otherwise layer 0.
LAYER_0 = [0.95, 0.60, 0.60, 0.60, 0.60]  # mean 0.67: the best layer on all perturbations
LAYER_1 = [0.55, 0.70, 0.70, 0.70, 0.65]  # mean 0.66
CORRELATION = [0.50, 0.55, 0.58, 0.52, 0.61]
TINY = _pf_table({("attention", 0, "head_mean"): LAYER_0, ("attention", 1, "head_mean"): LAYER_1,
                  ("correlation", -1, "none"): CORRELATION})


def test_nested_cv_by_hand_differs_from_best_layer_on_test():
    selection = nested_cv_layer_selection(TINY, "attention", "head_mean", seed=0, n_folds=5)
    chosen = selection.per_perturbation.set_index("perturbation")["selected_layer"].to_dict()
    assert chosen == {"P0": 1, "P1": 0, "P2": 0, "P3": 0, "P4": 0}
    assert selection.selection_counts == {0: 4, 1: 1}
    nested = (0.55 + 4 * 0.60) / 5
    best_layer_on_test = max(np.mean(LAYER_0), np.mean(LAYER_1))
    assert selection.mean_selected_auroc == pytest.approx(nested)
    assert best_layer_on_test == pytest.approx(0.67)
    assert selection.mean_selected_auroc != pytest.approx(best_layer_on_test)
    row = next(r for r in layer_selection_tests(TINY, seed=0)
               if r["test_id"] == "A02:attention_head_mean_nested_cv_vs_correlation")
    assert row["statistic"] == pytest.approx(nested) and row["confirmatory"]
    assert row["effect"] == pytest.approx(nested - np.mean(CORRELATION))


def test_comparison_is_scipy_wilcoxon_on_pooled_held_out_perturbations():
    selection = nested_cv_layer_selection(TINY, "attention", "head_mean", seed=0, n_folds=5)
    selected = [0.55, 0.60, 0.60, 0.60, 0.60]
    expected = stats.wilcoxon(selected, CORRELATION)
    assert selection.comparison.p_value == pytest.approx(expected.pvalue)
    assert selection.comparison.statistic == pytest.approx(expected.statistic)
    assert selection.comparison.n == 5


def test_matches_a_slow_kfold_loop():
    rng = np.random.default_rng(4)
    n = 23
    layers = {layer: rng.uniform(0.5, 0.8, n) for layer in range(4)}
    table = _pf_table({**{("attention", layer, "head_max"): values for layer, values in layers.items()},
                       ("correlation", -1, "none"): rng.uniform(0.5, 0.8, n)})
    selection = nested_cv_layer_selection(table, "attention", "head_max", seed=7, n_folds=5)
    names = np.array(sorted(f"P{i}" for i in range(n)))
    matrix = pd.DataFrame({layer: pd.Series(values, index=[f"P{i}" for i in range(n)])
                           for layer, values in layers.items()}).loc[names].to_numpy()
    expected = {}
    for train, test in KFold(5, shuffle=True, random_state=7).split(names):
        best = max(range(4), key=lambda layer: (matrix[train, layer].mean(), -layer))
        expected.update({names[i]: matrix[i, best] for i in test})
    got = selection.per_perturbation.set_index("perturbation")["selected_auroc"]
    np.testing.assert_allclose(got.loc[names].to_numpy(), [expected[name] for name in names])


def test_planted_best_layer_is_selected_in_every_fold():
    rng = np.random.default_rng(0)
    n = 40
    columns = {("attention", layer, "head_mean"): 0.6 + rng.normal(0, 0.02, n) + (0.1 if layer == 3 else 0.0)
               for layer in range(6)}
    columns[("correlation", -1, "none")] = 0.6 + rng.normal(0, 0.02, n)
    table = _pf_table(columns)
    selection = nested_cv_layer_selection(table, "attention", "head_mean", seed=1)
    assert selection.selection_counts[3] == 5 and selection.modal_layer == 3
    rows = {row["test_id"]: row for row in layer_selection_tests(table, seed=1)}
    stability = rows["A02:attention_head_mean_nested_cv_selection_stability"]
    assert stability["layer"] == 3 and stability["statistic"] == 1.0 and stability["effect"] == 1.0
    assert not stability["confirmatory"]
    confirmatory = rows["A02:attention_head_mean_nested_cv_vs_correlation"]
    assert confirmatory["p_value"] < 1e-6 and confirmatory["effect"] > 0.05


def test_ties_go_to_the_lowest_layer():
    same = [0.7, 0.6, 0.8, 0.65, 0.75, 0.7]
    table = _pf_table({("attention", 2, "head_mean"): same, ("attention", 5, "head_mean"): same,
                       ("correlation", -1, "none"): [0.5] * 6})
    selection = nested_cv_layer_selection(table, "attention", "head_mean", seed=3)
    assert selection.selection_counts == {2: 5, 5: 0}


def test_per_layer_rows_are_bonferroni_across_layers_and_descriptive():
    rows = {row["test_id"]: row for row in layer_selection_tests(TINY, seed=0)}
    for layer, values in ((0, LAYER_0), (1, LAYER_1)):
        row = rows[f"A02:attention_L{layer}_head_mean_vs_correlation_bonferroni"]
        raw = stats.wilcoxon(values, CORRELATION).pvalue
        assert row["p_value"] == pytest.approx(min(1.0, raw * 2))
        assert row["statistic"] == pytest.approx(np.mean(values)) and not row["confirmatory"]
    assert not any("best" in test_id for test_id in rows)
    frame = registry_rows(list(rows.values()), model="m", cell_type="c")
    assert set(frame["analysis_id"]) == {"A02"} and frame["confirmatory"].sum() == 1


def test_profile_and_one_selection_per_variant():
    table = pd.concat([TINY, _pf_table({("value_weighted", 0, "head_mean"): LAYER_1,
                                        ("value_weighted", 1, "head_mean"): LAYER_0})])
    profile = layer_profile(table)
    assert tuple(profile.columns) == LAYER_PROFILE_COLUMNS
    assert len(profile) == 4
    row = profile[(profile["method"] == "attention") & (profile["layer"] == 0)].iloc[0]
    assert row["mean_auroc"] == pytest.approx(0.67) and row["n_perturbations"] == 5
    confirmatory = [r["test_id"] for r in layer_selection_tests(table, seed=0) if r["confirmatory"]]
    assert confirmatory == ["A02:attention_head_mean_nested_cv_vs_correlation",
                            "A02:value_weighted_head_mean_nested_cv_vs_correlation"]


def test_seeded_and_reproducible():
    rng = np.random.default_rng(2)
    table = _pf_table({**{("attention", layer, "head_mean"): rng.uniform(0.5, 0.9, 30) for layer in range(3)},
                       ("correlation", -1, "none"): rng.uniform(0.5, 0.9, 30)})
    first = nested_cv_layer_selection(table, "attention", "head_mean", seed=11)
    again = nested_cv_layer_selection(table, "attention", "head_mean", seed=11)
    pd.testing.assert_frame_equal(first.per_perturbation, again.per_perturbation)


def test_too_few_perturbations_says_how_many_are_needed():
    table = TINY[TINY["perturbation"].isin(["P0", "P1", "P2", "P3"])]
    with pytest.raises(ValueError, match="needs at least 5 perturbations.*got 4"):
        nested_cv_layer_selection(table, "attention", "head_mean", seed=0)


def test_table_without_attention_layers_is_refused():
    table = _pf_table({("correlation", -1, "none"): CORRELATION, ("baseline_variance", -1, "none"): LAYER_0})
    with pytest.raises(ValueError, match="A02 needs attention scores with layers"):
        layer_selection_tests(table, seed=0)


def test_table_without_correlation_is_refused():
    with pytest.raises(ValueError, match="no correlation rows"):
        layer_selection_tests(TINY[TINY["method"] != "correlation"], seed=0)
