import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats
from statsmodels.stats.multitest import multipletests

from scinterp_assets.core.datasets.de_labels import DELabelRule, compute_de_labels
from scinterp_assets.core.datasets.preprocessing import log_normalize, sample_control_cells


def _screen(seed=0):
    rng = np.random.default_rng(seed)
    genes = ["KD", "UP", "FLAT1", "FLAT2", "FLAT3"]
    n_control, n_perturbed = 200, 60
    means = np.array([40.0, 10.0, 20.0, 15.0, 5.0])
    control = rng.poisson(means, size=(n_control, 5))
    perturbed_means = means * np.array([0.2, 4.0, 1, 1, 1])  # knockdown of KD drives UP
    perturbed = rng.poisson(perturbed_means, size=(n_perturbed, 5))
    few = rng.poisson(means, size=(5, 5))
    screen = ad.AnnData(
        X=sparse.csr_matrix(np.vstack([control, perturbed, few]).astype(np.float32)),
        obs=pd.DataFrame({"perturbation": ["non-targeting"] * n_control + ["KD"] * n_perturbed + ["RARE"] * 5},
                         index=[f"c{i}" for i in range(n_control + n_perturbed + 5)]),
        var=pd.DataFrame(index=genes),
    )
    screen.uns.update(control_label="non-targeting", modality="CRISPRi")
    return screen


def test_labels_match_a_scipy_loop_and_report_knockdown():
    screen = _screen()
    controls = sample_control_cells(screen, 10_000, seed=0, target_sum=1e4)
    universe = list(screen.var_names)
    rule = DELabelRule(q_threshold=0.05, min_abs_log_difference=0.5, min_cells=30)
    result = compute_de_labels(screen, controls, universe, rule, 1e4)
    labels = result.labels.set_index("target")
    assert set(result.labels["perturbation"]) == {"KD"}  # RARE has 5 < 30 cells
    assert "KD" not in labels.index  # the perturbed gene is removed
    log_all = log_normalize(screen.X, 1e4)
    pert = log_all[(screen.obs["perturbation"] == "KD").to_numpy()]
    ctrl = log_all[(screen.obs["perturbation"] == "non-targeting").to_numpy()]
    others = [1, 2, 3, 4]
    p = [stats.ttest_ind(pert[:, j], ctrl[:, j], equal_var=False).pvalue for j in others]
    np.testing.assert_allclose(labels["p_value"].to_numpy(), p, rtol=1e-10)
    np.testing.assert_allclose(labels["q_value"].to_numpy(), multipletests(p, method="fdr_bh")[1], rtol=1e-10)
    assert labels.loc["UP", "is_de"] and not labels.loc["FLAT1", "is_de"]
    summary = result.summary.set_index("perturbation")
    assert summary.loc["KD", "on_target_status"] == "moved" and summary.loc["KD", "on_target_log_difference"] < -1
    assert not summary.loc["RARE", "tested"]


def test_mann_whitney_rule_matches_a_scipy_loop():
    screen = _screen(seed=1)
    controls = sample_control_cells(screen, 10_000, seed=0, target_sum=1e4)
    rule = DELabelRule(q_threshold=0.05, min_abs_log_difference=0.1, min_cells=30, test="mann_whitney")
    result = compute_de_labels(screen, controls, list(screen.var_names), rule, 1e4)
    labels = result.labels.set_index("target")
    log_all = log_normalize(screen.X, 1e4)
    pert = log_all[(screen.obs["perturbation"] == "KD").to_numpy()]
    ctrl = log_all[(screen.obs["perturbation"] == "non-targeting").to_numpy()]
    expected = [stats.mannwhitneyu(pert[:, j], ctrl[:, j], alternative="two-sided", method="asymptotic").pvalue
                for j in [1, 2, 3, 4]]
    np.testing.assert_allclose(labels["p_value"].to_numpy(), expected, rtol=1e-10)
    own = stats.mannwhitneyu(pert[:, 0], ctrl[:, 0], alternative="two-sided", method="asymptotic").pvalue
    assert result.summary.set_index("perturbation").loc["KD", "on_target_p_value"] == pytest.approx(own, rel=1e-10)
    assert "mann_whitney" in rule.describe()


def test_log_normalised_screens_are_not_logged_twice():
    counted = _screen(seed=2)
    logged = counted.copy()
    logged.X = sparse.csr_matrix(log_normalize(counted.X, 1e4))
    logged.uns["expression_scale"] = "log1p_normalized"
    rule = DELabelRule(q_threshold=0.05, min_abs_log_difference=0.5, min_cells=30)
    from_counts = compute_de_labels(counted, sample_control_cells(counted, 10_000, 0, 1e4), list(counted.var_names), rule, 1e4)
    from_logs = compute_de_labels(logged, sample_control_cells(logged, 10_000, 0, 1e4), list(logged.var_names), rule, 1e4)
    np.testing.assert_allclose(from_logs.labels["log_difference"], from_counts.labels["log_difference"], rtol=1e-5)
    assert from_logs.labels["is_de"].tolist() == from_counts.labels["is_de"].tolist()


def test_knockdown_that_did_not_happen_is_flagged():
    screen = _screen(seed=3)
    screen.uns["modality"] = "CRISPRa"  # KD went down, but activation was expected
    controls = sample_control_cells(screen, 10_000, seed=0, target_sum=1e4)
    rule = DELabelRule(q_threshold=0.05, min_abs_log_difference=0.5, min_cells=30)
    summary = compute_de_labels(screen, controls, list(screen.var_names), rule, 1e4).summary.set_index("perturbation")
    assert summary.loc["KD", "on_target_status"] == "not_moved"
    assert summary.loc["RARE", "on_target_status"] == "not_measured"  # RARE is not a gene of the screen


def test_relabelling_within_a_smaller_universe_recomputes_bh():
    from scinterp_assets.core.datasets.de_labels import relabel_within

    screen = _screen(seed=4)
    controls = sample_control_cells(screen, 10_000, seed=0, target_sum=1e4)
    rule = DELabelRule(q_threshold=0.05, min_abs_log_difference=0.5, min_cells=30)
    full = compute_de_labels(screen, controls, list(screen.var_names), rule, 1e4)
    smaller = ["UP", "FLAT1"]
    relabelled = relabel_within(full.labels, smaller, rule)
    direct = compute_de_labels(screen, controls, ["KD", *smaller], rule, 1e4).labels
    pd.testing.assert_frame_equal(relabelled[list(direct.columns)], direct, check_dtype=False)


def test_on_target_overview_never_reads_unmeasured_targets_as_success():
    from scinterp_assets.core.datasets.de_labels import on_target_overview

    def summary(statuses):
        return pd.DataFrame({"perturbation": [f"P{i}" for i in range(len(statuses))], "on_target_status": statuses})

    counts, line = on_target_overview(summary(["not_measured", "not_measured", "too_few_cells"]))
    assert counts == {"moved": 0, "not_moved": 0, "too_few_cells": 1, "not_measured": 2}
    assert line.startswith("unverified: none of the 3 perturbed genes could be measured")
    assert on_target_overview(summary(["moved", "moved", "not_measured"]))[1] == "none: all 2 measured targets moved"
    assert on_target_overview(summary(["moved", "not_moved", "not_moved"]))[1] == (
        "2 of 3 measured targets did not move: P1, P2")
