import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.analyses.perturbation_prediction import (
    PerturbationFilter,
    per_perturbation_auroc,
    perturbation_prediction_tests,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet, gene_level_score_sets, tf_out_degree_score_sets

GENES = ["A", "B", "C", "D", "E", "F"]


def _labels(perturbation, positives):
    targets = [g for g in GENES if g != perturbation]
    return pd.DataFrame({"perturbation": perturbation, "target": targets, "is_de": [t in positives for t in targets]})


def test_pf_auroc_by_hand():
    labels = pd.concat([_labels("A", {"B", "C"}), _labels("B", {"D"})])
    matrix = np.zeros((6, 6))
    matrix[0] = [0, 0.9, 0.8, 0.1, 0.2, 0.3]  # A ranks its positives B, C on top: AUROC 1
    matrix[1] = [0.5, 0, 0.4, 0.1, 0.3, 0.2]  # B's positive D ranked last: AUROC 0
    table = per_perturbation_auroc(labels, GENES, [ScoreSet("attention", 0, "head_mean", matrix)],
                                   PerturbationFilter(min_positives=1, min_negatives=1))
    assert table.set_index("perturbation")["auroc"].to_dict() == {"A": 1.0, "B": 0.0}


def test_filter_drops_perturbations_with_too_few_positives():
    labels = pd.concat([_labels("A", {"B", "C"}), _labels("B", {"D"})])
    table = per_perturbation_auroc(labels, GENES, [ScoreSet("x", -1, "none", np.eye(6))],
                                   PerturbationFilter(min_positives=2, min_negatives=2))
    assert table["perturbation"].tolist() == ["A"]


def test_genes_outside_the_evaluable_set_are_excluded():
    labels = _labels("A", {"B", "C"})
    rng = np.random.default_rng(0)
    matrix = rng.random((5, 5))
    genes = ["A", "B", "C", "D", "E"]  # F not evaluable
    table = per_perturbation_auroc(labels, genes, [ScoreSet("x", -1, "none", matrix)], PerturbationFilter(1, 1))
    expected = roc_auc_score([1, 1, 0, 0], matrix[0, 1:])
    assert table["auroc"].iloc[0] == pytest.approx(expected)
    assert table["n_targets"].iloc[0] == 4


def test_baselines_rank_targets_identically_for_every_source():
    features = pd.DataFrame({"gene": GENES, "mean": np.arange(6.0), "variance": np.arange(6.0)[::-1],
                             "detection_rate": np.ones(6) * 0.5})
    sets = {s.method: s.matrix for s in gene_level_score_sets(features, GENES)}
    assert (sets["baseline_mean"] == np.arange(6.0)).all()
    assert sets["baseline_variance"][3, 0] == 5.0


def test_tests_compare_methods_perturbation_by_perturbation():
    rng = np.random.default_rng(1)
    rows = []
    for index in range(30):
        better = 0.8 + rng.normal(0, 0.03)
        rows += [(f"P{index}", "attention", 0, "head_mean", better, 20, 4),
                 (f"P{index}", "correlation", -1, "none", better - 0.1 + rng.normal(0, 0.02), 20, 4),
                 (f"P{index}", "baseline_variance", -1, "none", 0.5 + rng.normal(0, 0.05), 20, 4)]
    table = pd.DataFrame(rows, columns=["perturbation", "method", "layer", "aggregation", "auroc", "n_targets",
                                        "n_positives"])
    tests = {row["test_id"]: row for row in perturbation_prediction_tests(table)}
    a01 = tests["A01:attention_L0_head_mean_vs_correlation"]
    assert a01["confirmatory"] and a01["n"] == 30 and a01["p_value"] < 1e-4 and a01["effect"] > 0
    a04 = tests["A04:baseline_variance_vs_correlation"]
    assert a04["effect"] < 0 and a04["p_value"] < 1e-4
    chance = tests["A04:baseline_variance_vs_chance"]
    assert not chance["confirmatory"] and chance["p_value"] > 0.01


def _reference(rows, resource, relation):
    frame = pd.DataFrame(rows, columns=["source", "target"])
    return frame.assign(resource=resource, sign=0, confidence="", weight=np.nan, relation=relation)


def test_tf_out_degree_scores_each_target_by_its_own_out_degree_in_each_regulates_reference():
    trrust = _reference([("A", "B"), ("A", "C"), ("A", "D"), ("C", "B"), ("C", "B"), ("G", "A")],
                        "trrust", "regulates")
    chip = _reference([("E", "F")], "chip", "regulates")
    string = _reference([("B", "D"), ("D", "B")], "string_700", "interacts")  # not TF -> target: no baseline
    sets = {s.method: s.matrix for s in tf_out_degree_score_sets(pd.concat([trrust, chip, string]), GENES)}
    assert set(sets) == {"tf_out_degree_trrust", "tf_out_degree_chip"}
    # A regulates B, C, D; C regulates B (the duplicate counts once); G is outside the genes; the rest 0
    assert (sets["tf_out_degree_trrust"] == [3, 0, 1, 0, 0, 0]).all()
    assert (sets["tf_out_degree_chip"] == [0, 0, 0, 0, 1, 0]).all()
    assert tf_out_degree_score_sets(string, GENES) == []


def test_tf_out_degree_pf_auroc_ranks_targets_by_degree():
    reference = _reference([("A", "B"), ("A", "C"), ("A", "D"), ("C", "B"), ("C", "E")], "trrust", "regulates")
    labels = _labels("F", {"A", "C"})  # the two TFs respond: degrees A 3, C 2 top the targets of F
    table = per_perturbation_auroc(labels, GENES, tf_out_degree_score_sets(reference, GENES),
                                   PerturbationFilter(1, 1))
    assert table["method"].tolist() == ["tf_out_degree_trrust"] and table["auroc"].tolist() == [1.0]


def test_tf_out_degree_rows_are_descriptive_a04_rows_named_by_their_reference():
    rng = np.random.default_rng(2)
    rows = []
    for index in range(20):
        correlation = 0.7 + rng.normal(0, 0.03)
        rows += [(f"P{index}", "attention", 0, "head_mean", correlation + rng.normal(0, 0.02), 20, 4),
                 (f"P{index}", "correlation", -1, "none", correlation, 20, 4),
                 (f"P{index}", "baseline_variance", -1, "none", 0.85 + rng.normal(0, 0.02), 20, 4),
                 (f"P{index}", "tf_out_degree_trrust", -1, "none", 0.5 + rng.normal(0, 0.05), 20, 4)]
    table = pd.DataFrame(rows, columns=["perturbation", "method", "layer", "aggregation", "auroc", "n_targets",
                                        "n_positives"])
    tests = {row["test_id"]: row for row in perturbation_prediction_tests(table)}
    counterexample = {key: row for key, row in tests.items() if "tf_out_degree_trrust" in key}
    assert set(counterexample) == {"A04:tf_out_degree_trrust_vs_correlation",
                                   "A04:tf_out_degree_trrust_vs_attention_L0_head_mean",
                                   "A04:tf_out_degree_trrust_vs_chance"}
    assert all(row["analysis_id"] == "A04" and not row["confirmatory"] for row in counterexample.values())
    assert counterexample["A04:tf_out_degree_trrust_vs_correlation"]["effect"] < 0
    assert tests["A04:baseline_variance_vs_correlation"]["confirmatory"]  # gene-level baselines stay confirmatory
