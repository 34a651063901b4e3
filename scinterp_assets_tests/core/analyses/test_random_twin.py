"""A25 rows: a checkpoint's attention PF AUROC beside its random-weights twin's, paired over perturbations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scinterp_assets.core.analyses.random_twin import random_twin_registry, random_twin_rows
from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS, registry_rows


def pf_table(model: str, cell_type: str, aurocs: dict[tuple[str, int, str], list[float]], perturbations: list[str]):
    rows = [(perturbation, method, layer, aggregation, value, 50, 5, model, cell_type)
            for (method, layer, aggregation), values in aurocs.items()
            for perturbation, value in zip(perturbations, values)]
    return pd.DataFrame(rows, columns=["perturbation", "method", "layer", "aggregation", "auroc", "n_targets",
                                       "n_positives", "model", "cell_type"])


@pytest.fixture
def table():
    trained = pf_table("m", "a", {("attention", 0, "head_mean"): [0.9, 0.8, 0.7, 0.6],
                                  ("value_weighted", 1, "head_mean"): [0.5, 0.5, 0.5, 0.5],
                                  ("correlation", -1, "none"): [0.9, 0.9, 0.9, 0.9]}, ["p1", "p2", "p3", "p4"])
    twin = pf_table("m.random-weights", "a", {("attention", 0, "head_mean"): [0.5, 0.6, np.nan, 0.4, 0.9],
                                              ("value_weighted", 1, "head_mean"): [0.5, 0.5, 0.5, 0.5, 0.5],
                                              ("correlation", -1, "none"): [0.9] * 5},
                    ["p1", "p2", "p3", "p4", "p5"])
    other_context = pf_table("m.random-weights", "b", {("attention", 0, "head_mean"): [0.1] * 4},
                             ["p1", "p2", "p3", "p4"])
    return pd.concat([trained, twin, other_context], ignore_index=True)


def test_rows_pair_each_attention_score_set_over_the_perturbations_both_ranked(table):
    rows = {row["test_id"]: row for row in random_twin_rows(table, "m", "m.random-weights", "a")}
    assert set(rows) == {"A25:attention_L0_head_mean_trained_vs_random_weights",
                         "A25:value_weighted_L1_head_mean_trained_vs_random_weights"}  # correlation has no weights
    attention = rows["A25:attention_L0_head_mean_trained_vs_random_weights"]
    # p3 is NaN for the twin, p5 absent for the model: differences 0.4, 0.2, 0.2 over p1, p2, p4
    assert attention["n"] == 3 and attention["effect"] == pytest.approx(np.mean([0.4, 0.2, 0.2]))
    assert attention["statistic"] == pytest.approx(np.mean([0.9, 0.8, 0.6]))
    assert np.isnan(attention["p_value"]) and "ci_low" not in attention and not attention["confirmatory"]
    assert "scores a mean PF AUROC of 0.500" in attention["note"]  # the twin's mean over p1, p2, p4
    assert rows["A25:value_weighted_L1_head_mean_trained_vs_random_weights"]["effect"] == 0
    assert random_twin_rows(table, "m", "m.random-weights", "c") == []  # no such context


def test_registry_rows_take_the_trained_partitions_fields_and_qualified_ids(table):
    shared = {"checkpoint": "abc", "modality": "CRISPRi", "universe_size": 100, "negatives": "non-DE",
              "label_rule": "rule", "code_version": "v", "input_data_versions": "{}"}
    registry = registry_rows([
        {**shared, "analysis_id": "A01", "test_id": "m|a|A01:x", "model": "m", "cell_type": "a"},
        {**shared, "analysis_id": "A01", "test_id": "m.random-weights|a|A01:x", "model": "m.random-weights",
         "cell_type": "a", "checkpoint": "twin"},
        {**shared, "analysis_id": "A01", "test_id": "m.random-weights|b|A01:x", "model": "m.random-weights",
         "cell_type": "b", "checkpoint": "twin"},
    ])
    rows = random_twin_registry(registry, table, {"m.random-weights": "m"})
    assert tuple(rows.columns) == REGISTRY_COLUMNS and len(rows) == 2  # cell type b has no trained partition
    assert set(rows["test_id"]) == {"m|a|A25:attention_L0_head_mean_trained_vs_random_weights",
                                    "m|a|A25:value_weighted_L1_head_mean_trained_vs_random_weights"}
    assert (rows["checkpoint"] == "abc").all() and (rows["model"] == "m").all()
    assert rows["ci_low"].isna().all() and rows["p_value"].isna().all()
    assert (rows["family"] == "V").all() and (rows["analysis_id"] == "A25").all()
