"""A08 propensity-matched incremental value: SMD by hand, the matching rules, balance, and A05 re-run."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scinterp_assets.core.analyses.incremental_value import DesignTable, build_design
from scinterp_assets.core.analyses.propensity import (
    balance,
    match_within_perturbation,
    propensity_logit,
    propensity_matched,
    propensity_matched_tests,
    standardized_mean_difference,
)
from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS, registry_rows
from scinterp_assets_tests.core.analyses.test_incremental_value import RULE, SMALL, planted_world



def _design(is_de, features, perturbation=None):
    n = len(is_de)
    perturbation = np.zeros(n, dtype=np.int64) if perturbation is None else np.asarray(perturbation)
    return DesignTable(
        perturbations=tuple(f"P{p}" for p in range(perturbation.max() + 1)),
        genes=tuple(f"G{i}" for i in range(n + 1)),
        perturbation=perturbation,
        source=np.full(n, n, dtype=np.int64),
        target=np.arange(n, dtype=np.int64),
        is_de=np.asarray(is_de, dtype=bool),
        features=np.asarray(features, dtype=np.float64).reshape(n, -1),
        feature_names=tuple(f"f{j}" for j in range(np.asarray(features).reshape(n, -1).shape[1])),
        source_features=np.zeros_like(np.asarray(features, dtype=np.float64).reshape(n, -1)),
    )


def test_smd_by_hand():
    values = np.array([1.0, 3.0, 5.0, 0.0, 2.0, 1.0, 3.0])
    positive = np.array([True, True, True, False, False, False, False])
    # positives: mean 3, var 4; negatives: mean 1.5, var 5/3 (ddof 1)
    expected = (3 - 1.5) / np.sqrt((4 + 5 / 3) / 2)
    assert standardized_mean_difference(values, positive) == pytest.approx([expected])
    # after matching: the subset's means over the reference's spread
    subset = np.array([0, 1, 2, 5, 6])
    after = standardized_mean_difference(values[subset], positive[subset], reference=(values, positive))
    assert after == pytest.approx([(3 - 2) / np.sqrt((4 + 5 / 3) / 2)])
    assert standardized_mean_difference(np.ones(4), np.array([True, False, True, False])) == [0.0]


def test_matching_takes_the_k_nearest_negatives_hardest_positive_first_without_replacement():
    logit = np.array([0.0, 1.0, 0.9, 0.8, 0.1, 0.2, 1.05, 5.0])
    is_de = np.array([False, True, False, False, True, False, False, False])
    design = _design(is_de, logit)
    matching = match_within_perturbation(design, logit, k=2, replace=False)
    # positive 1 (logit 1.0, hardest) takes 6 (1.05) and 2 (0.9); positive 4 (0.1) then 0 and 5 (ties at
    # distance 0.1: the lower row first), never 2 again
    served = {
        int(p): sorted(int(r) for r in matching.rows[matching.matched_to == p] if r != p) for p in (1, 4)
    }
    assert served == {1: [2, 6], 4: [0, 5]}
    assert list(matching.rows) == [0, 1, 2, 4, 5, 6] and matching.n_short == 0


def test_matching_with_and_without_replacement_differ_where_positives_compete():
    logit = np.array([1.0, 0.97, 0.98, 0.0, 2.0])
    is_de = np.array([True, True, False, False, False])
    design = _design(is_de, logit)
    shared = match_within_perturbation(design, logit, k=1)  # the default: with replacement
    assert shared.replace and list(shared.rows) == [0, 1, 2, 2]  # both positives take 0.98
    assert sorted(shared.matched_to[shared.rows == 2]) == [0, 1]
    greedy = match_within_perturbation(design, logit, k=1, replace=False)
    # hardest (1.0) first takes 0.98; 0.97 then takes the nearest left, 0.0 (0.97 away) over 2.0 (1.03)
    assert list(greedy.rows) == [0, 1, 2, 3] and greedy.matched_to[3] == 1


def test_matching_stays_inside_each_perturbation_and_counts_shortfalls():
    is_de = np.array([True, False, False, True, True, False])
    logit = np.array([0.0, 0.1, 0.2, 0.0, 0.1, 0.3])
    design = _design(is_de, logit, perturbation=[0, 0, 0, 1, 1, 1])
    for replace in (True, False):
        matching = match_within_perturbation(design, logit, k=2, replace=replace)
        group = design.perturbation
        assert (group[matching.rows] == group[matching.matched_to]).all()
        assert (design.is_de[matching.matched_to]).all()
        # perturbation 1 has one negative for two positives asking 2 each
        assert matching.n_short == 2
    assert len(np.unique(matching.rows)) == len(matching.rows)  # without replacement: no copies


def test_propensity_is_the_standardised_logistic_logit():
    labels, features, genes, _ = planted_world(10, 40, seed=1)
    design = build_design(labels, features, genes, RULE)
    expected = (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        .fit(design.features, design.is_de)
        .decision_function(design.features)
    )
    assert propensity_logit(design, SMALL) == pytest.approx(expected)


def _sparse_world(null=False, seed=4):
    """Few positives among many targets, as in a real screen: room to find matches."""
    return planted_world(30, 400, base_logit=-4.0, edge_effect=2.0, null=null, seed=seed)


def test_matching_improves_balance_and_the_edge_signal_survives():
    labels, features, genes, score_set = _sparse_world()
    design = build_design(labels, features, genes, RULE)
    outcome = propensity_matched(design, [score_set], rule=RULE, n_bootstrap=200, settings=SMALL)
    smd = outcome.balance
    assert smd.names == ("mean", "variance", "detection_rate", "propensity_logit")
    assert (np.abs(smd.after) < np.abs(smd.before)).all()
    assert abs(smd.after[-1]) < 0.1 < abs(smd.before[-1])
    for result in outcome.results:
        auroc = result.comparison("auroc")
        assert result.split == "perturbation_split" and auroc.ci_low > 0
        assert auroc.gene_only < 0.6  # matched negatives look like positives on the features
    assert outcome.matched.is_de.sum() == design.is_de.sum()  # every positive kept


def test_a08_rows_are_descriptive_registry_rows():
    labels, features, genes, score_set = _sparse_world(null=True, seed=5)
    rows = propensity_matched_tests(
        labels,
        features,
        genes,
        [score_set],
        rule=RULE,
        n_bootstrap=50,
        settings=SMALL,
        recall_at=(10,),
        seed=2,
        label_rule="welch",
    )
    for row in rows:
        assert set(row) <= set(REGISTRY_COLUMNS)
    table = registry_rows(rows).set_index("test_id")
    assert (table["analysis_id"] == "A08").all() and not table["confirmatory"].any()
    assert {
        "A08:balance:mean",
        "A08:balance:propensity_logit",
        "A08:logistic:perturbation_split:study:gene_only:auroc",
        "A08:boosted:perturbation_split:study:attention_L3_head_mean:auroc",
    } <= set(table.index)
    assert table["negatives"].str.contains("propensity-matched").all()
    assert (table["seed"] == 2).all() and (table["label_rule"] == "welch").all()
    assert len(table) == 4 + 2 * (4 + 4)


def test_balance_reports_before_and_after_for_every_feature():
    labels, features, genes, _ = _sparse_world(seed=6)
    design = build_design(labels, features, genes, RULE)
    logit = propensity_logit(design, SMALL)
    matching = match_within_perturbation(design, logit, k=5)
    result = balance(design, logit, matching)
    values = np.column_stack([design.features, logit])
    assert result.before == pytest.approx(standardized_mean_difference(values, design.is_de))
    rows = matching.rows
    assert result.after == pytest.approx(
        standardized_mean_difference(values[rows], design.is_de[rows], reference=(values, design.is_de))
    )
