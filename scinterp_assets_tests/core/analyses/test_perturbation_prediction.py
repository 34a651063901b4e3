import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.analyses.calibration_worlds import WorldShape, calibration_world
from scinterp_assets.core.analyses.perturbation_prediction import (
    PerturbationFilter,
    PFResamples,
    per_perturbation_auroc,
    perturbation_prediction_tests,
    pf_auroc_wide,
    resampled_pf_auroc,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet, gene_level_score_sets, tf_out_degree_score_sets
from scinterp_assets.core.stats.bootstrap import resample_counts

GENES = ["A", "B", "C", "D", "E", "F"]
RULE = PerturbationFilter(min_positives=3, min_negatives=3)


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


def resamples_from_table(pf_auroc: pd.DataFrame, n_bootstrap: int = 200, seed: int = 0) -> PFResamples:
    """PFResamples with one target fold whose observed values are a PF AUROC table's and whose resamples
    reweight its perturbations (targets held fixed): for tests of code that reads the resamples."""
    wide = pf_auroc_wide(pf_auroc).sort_index()
    point = wide.to_numpy(dtype=float)[:, None, :]
    n = len(wide)
    counts = resample_counts(n, n_bootstrap, seed)
    return PFResamples(
        keys=tuple(wide.columns), perturbations=tuple(wide.index),
        n_positives=pf_auroc.drop_duplicates("perturbation").set_index("perturbation")
        .loc[wide.index, "n_positives"].to_numpy(),
        target_fold=np.zeros(1, dtype=np.int64), point=point,
        replicates=np.broadcast_to(point, (n_bootstrap, *point.shape)).copy(),
        perturbation_counts=counts, target_counts=np.ones((n_bootstrap, 1)),
    )


def _world(seed=0, n_perturbations=16, n_genes=60):
    """A seeded calibration world: attention carries the planted pair signal, correlation is noise, and the
    gene-level baseline ranks targets by their variance."""
    world = calibration_world(seed, WorldShape(n_perturbations=n_perturbations, n_genes=n_genes))
    genes = list(world.genes)
    variance = world.features.set_index("gene").loc[genes, "variance"].to_numpy()
    sets = [ScoreSet("attention", 0, "head_mean", world.score_set("planted").matrix),
            ScoreSet("correlation", -1, "none", world.score_set("noise").matrix),
            ScoreSet("baseline_variance", -1, "none", np.tile(variance, (n_genes, 1)))]
    return world.labels, genes, sets


def test_resampled_pf_auroc_observed_values_are_the_pf_auroc_table():
    labels, genes, sets = _world()
    sets[1].matrix[0, 5] = np.nan  # an undefined score ranks lowest in both
    table = per_perturbation_auroc(labels, genes, sets, RULE)
    resamples = resampled_pf_auroc(labels, genes, sets, RULE, n_bootstrap=40, seed=0)
    wide = pf_auroc_wide(table)
    assert list(resamples.perturbations) == list(wide.index)
    for column, key in enumerate(resamples.keys):
        np.testing.assert_allclose(resamples.point[:, 0, column], wide[key].to_numpy(), rtol=0, atol=1e-12)
    assert (resamples.n_positives == table.drop_duplicates("perturbation")["n_positives"].to_numpy()).all()


def test_resampled_pf_auroc_weights_targets_by_their_bootstrap_multiplicity():
    labels, genes, sets = _world()
    resamples = resampled_pf_auroc(labels, genes, sets, RULE, n_bootstrap=40, seed=3)
    target_counts = resamples.target_counts
    assert target_counts.shape == (40, len(genes)) and (target_counts.sum(axis=1) == len(genes)).all()
    group = labels[labels["perturbation"] == resamples.perturbations[2]]
    source, targets = genes.index(resamples.perturbations[2]), [genes.index(t) for t in group["target"]]
    for b in (0, 17, 39):
        expected = roc_auc_score(group["is_de"], sets[0].matrix[source, targets], sample_weight=target_counts[b, targets])
        assert resamples.replicates[b, 2, 0, 0] == pytest.approx(expected, abs=1e-12)
    # the resampled mean weights each perturbation's AUROC by its multiplicity
    effect, replicated = resamples.mean(("attention", 0, "head_mean"))
    counts = resamples.perturbation_counts[5]
    assert replicated[5] == pytest.approx((counts * resamples.replicates[5, :, 0, 0]).sum() / counts.sum())
    assert effect == pytest.approx(resamples.point[:, 0, 0].mean())


def test_target_folds_split_each_perturbations_targets():
    labels, genes, sets = _world()
    resamples = resampled_pf_auroc(labels, genes, sets, RULE, n_bootstrap=40, seed=0, n_target_folds=3)
    assert np.bincount(resamples.target_fold).tolist() == [20, 20, 20]
    checked = 0
    for p, perturbation in enumerate(resamples.perturbations):
        group = labels[labels["perturbation"] == perturbation]
        targets = np.array([genes.index(t) for t in group["target"]])
        for fold in range(3):
            cell = resamples.target_fold[targets] == fold
            is_de = group["is_de"].to_numpy()[cell]
            if is_de.all() or not is_de.any():
                assert np.isnan(resamples.point[p, fold, 0])  # a cell without both classes is undefined
                continue
            expected = roc_auc_score(is_de, sets[0].matrix[genes.index(perturbation), targets[cell]])
            assert resamples.point[p, fold, 0] == pytest.approx(expected, abs=1e-12)
            checked += 1
    assert checked > 10


def test_tests_compare_mean_pf_auroc_with_a_two_way_bootstrap():
    labels, genes, sets = _world()
    table = per_perturbation_auroc(labels, genes, sets, RULE)
    resamples = resampled_pf_auroc(labels, genes, sets, RULE, n_bootstrap=200, seed=0)
    tests = {row["test_id"]: row for row in perturbation_prediction_tests(table, resamples, alpha=0.05)}
    a01 = tests["A01:attention_L0_head_mean_vs_correlation"]
    wide = pf_auroc_wide(table)
    expected = (wide[("attention", 0, "head_mean")] - wide[("correlation", -1, "none")]).mean()
    assert a01["confirmatory"] and a01["n"] == len(wide) and a01["effect"] == pytest.approx(expected)
    assert a01["ci_low"] > 0 and a01["p_value"] < 0.05  # the planted pair signal against noise
    # interval and p agree: p < 0.05 exactly when the interval excludes 0
    for row in tests.values():
        if row["confirmatory"]:
            assert (row["p_value"] < 0.05) == (row["ci_low"] > 0 or row["ci_high"] < 0)
    study = tests["A01:attention_L0_head_mean_vs_correlation:study_wilcoxon"]
    assert not study["confirmatory"] and study["statistic_name"] == "wilcoxon_W"
    assert study["p_value"] == pytest.approx(stats.wilcoxon(wide[("attention", 0, "head_mean")],
                                                            wide[("correlation", -1, "none")]).pvalue)
    assert tests["A04:baseline_variance_vs_correlation"]["confirmatory"]
    chance = tests["A04:baseline_variance_vs_chance"]
    assert not chance["confirmatory"] and chance["ci_low"] < chance["effect"] < chance["ci_high"]


def test_one_target_fold_is_required_for_whole_perturbation_comparisons():
    labels, genes, sets = _world()
    table = per_perturbation_auroc(labels, genes, sets, RULE)
    resamples = resampled_pf_auroc(labels, genes, sets, RULE, n_bootstrap=40, seed=0, n_target_folds=2)
    with pytest.raises(ValueError, match="target folds"):
        perturbation_prediction_tests(table, resamples, alpha=0.05)


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
    labels, genes, sets = _world()
    degree = np.random.default_rng(2).integers(0, 5, len(genes)).astype(float)
    sets = sets + [ScoreSet("tf_out_degree_trrust", -1, "none", np.tile(degree, (len(genes), 1)))]
    table = per_perturbation_auroc(labels, genes, sets, RULE)
    resamples = resampled_pf_auroc(labels, genes, sets, RULE, n_bootstrap=40, seed=0)
    tests = {row["test_id"]: row for row in perturbation_prediction_tests(table, resamples, alpha=0.05)}
    counterexample = {key: row for key, row in tests.items() if "tf_out_degree_trrust" in key}
    assert set(counterexample) == {"A04:tf_out_degree_trrust_vs_correlation",
                                   "A04:tf_out_degree_trrust_vs_attention_L0_head_mean",
                                   "A04:tf_out_degree_trrust_vs_correlation:study_wilcoxon",
                                   "A04:tf_out_degree_trrust_vs_attention_L0_head_mean:study_wilcoxon",
                                   "A04:tf_out_degree_trrust_vs_chance"}
    assert all(row["analysis_id"] == "A04" and not row["confirmatory"] for row in counterexample.values())
    assert tests["A04:baseline_variance_vs_correlation"]["confirmatory"]  # gene-level baselines stay confirmatory


def test_resampled_pf_auroc_ranks_undefined_lowest_and_infinite_or_huge_scores_as_auroc_does():
    labels, genes, sets = _world(n_genes=40)
    odd = sets[0].matrix.copy()
    odd[:, :5] = np.inf
    odd[:, 5:10] = np.nan
    odd[:, 10:20] *= 1e17
    sets = [ScoreSet("attention", 0, "head_mean", odd)]
    table = per_perturbation_auroc(labels, genes, sets, RULE)
    resamples = resampled_pf_auroc(labels, genes, sets, RULE, n_bootstrap=2, seed=0)
    np.testing.assert_allclose(resamples.point[:, 0, 0], table["auroc"].to_numpy(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="n_bootstrap must be >= 2"):
        resampled_pf_auroc(labels, genes, sets, RULE, n_bootstrap=1, seed=0)
