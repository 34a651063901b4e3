import numpy as np
import pandas as pd
import pytest

from scinterp_assets.core.analyses.context_tables import (
    CROSS_CONTEXT_COLUMNS,
    METRIC_MAP_COLUMNS,
    cross_context_table,
    metric_map,
)
from scinterp_assets.core.analyses.perturbation_prediction import (
    PF_AUROC_COLUMNS,
    perturbation_prediction_tests,
)
from scinterp_assets.core.stats.registry import apply_framework_bh, empty_registry, registry_rows
from scinterp_assets_tests.core.analyses.test_perturbation_prediction import resamples_from_table

WELCH = "welch_t q<0.05 |dlog1p|>=0.5"


def _pf(seed: int, attention_shift: float, baseline_shift: float, n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    correlation = 0.65 + rng.normal(0, 0.03, n)
    columns = {
        ("attention", 0, "head_mean"): correlation + attention_shift + rng.normal(0, 0.01, n),
        ("attention", 1, "head_mean"): correlation + attention_shift / 2 + rng.normal(0, 0.01, n),
        ("correlation", -1, "none"): correlation,
        ("baseline_variance", -1, "none"): correlation + baseline_shift + rng.normal(0, 0.01, n),
        ("baseline_mean", -1, "none"): correlation + baseline_shift + rng.normal(0, 0.01, n),
    }
    rows = []
    for (method, layer, aggregation), values in columns.items():
        rows += [(f"P{i}", method, layer, aggregation, float(v), 100, 5) for i, v in enumerate(values)]
    return pd.DataFrame(rows, columns=list(PF_AUROC_COLUMNS))


def _context(model, cell_type, modality, pf, extra=()):
    rows = [{**row, "test_id": f"{model}|{cell_type}|{row['test_id']}"}
            for row in perturbation_prediction_tests(pf, resamples_from_table(pf), alpha=0.05) + list(extra)]
    return registry_rows(rows, model=model, cell_type=cell_type, modality=modality, universe_size=2000,
                         negatives="non-DE universe targets", label_rule=WELCH)


A05 = [
    {"analysis_id": "A05", "test_id": "A05:logistic_attention", "family": "P", "effect_name": "delta_auroc",
     "effect": -0.0004, "ci_low": -0.002, "ci_high": 0.001, "p_value": 0.6, "confirmatory": True},
    {"analysis_id": "A05", "test_id": "A05:logistic_correlation", "family": "P", "effect_name": "delta_auroc",
     "effect": -0.002, "ci_low": -0.004, "ci_high": -0.0005, "p_value": 0.04, "confirmatory": True},
    {"analysis_id": "A05", "test_id": "A05:logistic_attention_auprc", "family": "P",
     "effect_name": "delta_auprc",
     "effect": -0.05, "ci_low": -0.1, "ci_high": 0.0, "p_value": 0.5, "confirmatory": False},
]


def _registry():
    dominated = _context("geneformer", "k562", "CRISPRi", _pf(0, 0.0, 0.15), extra=A05)
    attention_better = _context("scgpt", "rpe1", "CRISPRi", _pf(1, 0.08, 0.0))
    return apply_framework_bh(pd.concat([dominated, attention_better], ignore_index=True))


def test_cross_context_table_reads_outcomes_per_context():
    table = cross_context_table(_registry(), alpha=0.05)
    assert tuple(table.columns) == CROSS_CONTEXT_COLUMNS and len(table) == 2
    k562 = table.set_index("cell_type").loc["k562"]
    assert k562["a01_outcome"] == "equal" and k562["a01_n_equal"] == 2
    assert k562["a04_gene_level_dominance"] == "holds" and k562["a04_n_baselines"] == 2
    assert k562["a05_status"] == "run" and k562["a05_n_tests"] == 2  # the AUPRC row is not a delta AUROC
    assert k562["a05_delta_auroc"] == pytest.approx(-0.002) and k562["a05_ci_low"] == pytest.approx(-0.004)
    assert k562["a05_all_lower_bounds_positive"] is False
    rpe1 = table.set_index("cell_type").loc["rpe1"]
    assert rpe1["a01_outcome"] == "better" and rpe1["a01_n_better"] == 2
    assert rpe1["a01_best_attention"] == "attention_L0_head_mean"
    assert rpe1["a04_best_edge"] == "attention_L0_head_mean"
    assert rpe1["a04_gene_level_dominance"] == "fails" and rpe1["a04_n_baselines_beating_best_edge"] == 0
    assert rpe1["a05_status"] == "not run" and np.isnan(rpe1["a05_delta_auroc"])


def test_gene_level_dominance_ignores_the_tf_out_degree_counterexample():
    pf = _pf(0, 0.0, 0.15)
    chance_level = pf[pf["method"] == "correlation"].assign(method="tf_out_degree_trrust", auroc=0.5)
    table = cross_context_table(apply_framework_bh(_context("geneformer", "k562", "CRISPRi",
                                                            pd.concat([pf, chance_level]))), alpha=0.05)
    assert table["a04_gene_level_dominance"].tolist() == ["holds"] and table["a04_n_baselines"].tolist() == [2]


def test_worse_and_mixed_outcomes():
    rows = [
        {"analysis_id": "A01", "test_id": "A01:attention_L0_head_mean_vs_correlation", "effect": -0.1,
         "p_value": 1e-6, "confirmatory": True},
        {"analysis_id": "A01", "test_id": "A01:attention_L1_head_mean_vs_correlation", "effect": 0.1,
         "p_value": 1e-6, "confirmatory": True},
    ]
    mixed = registry_rows(rows, model="m", cell_type="a", modality="CRISPRa")
    worse = registry_rows(rows[:1], model="m", cell_type="b", modality="CRISPRa")
    worse["test_id"] = "m|b|" + worse["test_id"]
    table = cross_context_table(apply_framework_bh(pd.concat([mixed, worse], ignore_index=True)), alpha=0.05)
    outcomes = table.set_index("cell_type")["a01_outcome"].to_dict()
    assert outcomes == {"a": "mixed", "b": "worse"}
    assert set(table["a04_gene_level_dominance"]) == {"not run"}


def test_cross_context_table_needs_q_values_and_rows():
    with pytest.raises(ValueError, match="non-empty test registry"):
        cross_context_table(empty_registry(), alpha=0.05)
    raw = _context("m", "c", "CRISPRi", _pf(0, 0.0, 0.1))
    with pytest.raises(ValueError, match="apply_framework_bh"):
        cross_context_table(raw, alpha=0.05)


def test_metric_map_lists_auroc_rows_with_comparable_groups():
    reference = registry_rows([
        {"analysis_id": "A12", "test_id": f"m|k562|A12:{resource}:correlation", "statistic_name": "auroc",
         "statistic": value, "n_positives": positives, "confirmatory": True, "p_value": 0.01}
        for resource, value, positives in (("trrust", 0.63, 175), ("string700", 0.70, 4000))
    ], model="m", cell_type="k562", universe_size=2000, negatives="all non-reference ordered pairs",
        label_rule="reference membership")
    stability = registry_rows([{"analysis_id": "A02", "test_id": "m|k562|A02:x_nested_cv_selection_stability",
                                "statistic_name": "modal_layer_selection_share",
                                "effect_name": "n_distinct_layers_selected", "statistic": 1.0,
                                "confirmatory": False}],
                              model="m", cell_type="k562")
    registry = pd.concat([_registry(), reference, stability], ignore_index=True)
    table = metric_map(registry)
    assert tuple(table.columns) == METRIC_MAP_COLUMNS
    assert not table["test_id"].str.contains("stability").any()
    pf_rows = registry[registry["analysis_id"].isin(["A01", "A04"])]
    assert len(table) == len(pf_rows) + 2 + 2  # + the A05 delta-AUROC rows (not the AUPRC one) + A12
    assert set(table.loc[table["analysis_id"] == "A05", "effect_name"]) == {"delta_auroc"}
    assert set(table.loc[table["analysis_id"] == "A12", "auroc_field"]) == {"statistic"}
    a01 = table[table["analysis_id"] == "A01"]
    study = a01["test_id"].str.endswith(":study_wilcoxon")  # the Wilcoxon W sits in the statistic
    assert set(a01.loc[study, "auroc_field"]) == {"effect"} and set(a01.loc[~study, "auroc_field"]) == {"statistic"}
    groups = table.groupby("comparable_group")["test_id"].apply(set)
    # the two references share label rule and negatives but not positives: never one group
    references = {"m|k562|A12:trrust:correlation", "m|k562|A12:string700:correlation"}
    assert not any(references <= ids for ids in groups)
    # one context's PF rows share one group; the two contexts never do
    k562_pf = set(pf_rows.loc[pf_rows["cell_type"] == "k562", "test_id"])
    assert any(k562_pf <= ids for ids in groups)
    assert not any(ids & k562_pf and ids - k562_pf for ids in groups)
    assert table["comparable_group"].str.contains("label_rule=reference membership").sum() == 2


def test_metric_map_refuses_an_empty_registry():
    with pytest.raises(ValueError, match="A24 needs a non-empty test registry"):
        metric_map(empty_registry())
