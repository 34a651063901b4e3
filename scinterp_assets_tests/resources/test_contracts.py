"""The data contracts: clean frames pass, each corruption fails the expectation that names it."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from scinterp_assets.core.edges import EDGE_COLUMNS, edges_from_matrix
from scinterp_assets.core.networks.references import REFERENCE_COLUMNS
from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS, apply_framework_bh, registry_rows
from scinterp_assets.resources.contracts import (
    DEFAULT_CONTRACTS_DIR,
    ContractError,
    ContractRunner,
    contract_check_spec,
)

QC_PARAMETERS = {"min_cells": 10}
EDGE_PARAMETERS = {"max_null_score_fraction": 0.1}
REFERENCE_PARAMETERS = {"min_reference_edges": 3}


@pytest.fixture(scope="module")
def runner() -> ContractRunner:
    return ContractRunner()


def qc_frame(n_cells: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "cell_id": [f"cell{i}" for i in range(n_cells)],
            "perturbation": np.where(np.arange(n_cells) % 5 == 0, "control", "TF1"),
            "total_counts": rng.integers(500, 5000, n_cells).astype(np.float64),
            "n_genes_detected": rng.integers(100, 900, n_cells),
            "min_value": 0.0,
            "n_nonfinite": 0,
        }
    )


def edge_frame() -> pd.DataFrame:
    """20 attention edges over 5 genes, one of them NaN (a pair no cell holds)."""
    scores = np.random.default_rng(1).random((5, 5))
    scores[0, 1] = np.nan
    genes = [f"G{i}" for i in range(5)]
    return edges_from_matrix(scores, genes, method="attention", layer=0, aggregation="head_mean", n_cells=20)


def reference_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["TF1", "TF1", "TF2", "TF2"],
            "target": ["G1", "G2", "G1", "G1"],
            "resource": ["dorothea", "dorothea", "dorothea", "collectri"],
            "sign": [1, -1, 0, 1],
            "confidence": ["A", "B", "C", None],
            "weight": [1.0, -1.0, 0.5, 1.0],
            "relation": "regulates",
        }
    )


def registry_frame() -> pd.DataFrame:
    """Three tests; the descriptive one has no p-value, so its q-values are null too."""
    rows = [
        {"analysis_id": "A01", "test_id": "A01/auroc", "p_value": 0.01, "confirmatory": True},
        {"analysis_id": "A01", "test_id": "A01/auprc", "p_value": 0.20, "confirmatory": False},
        {"analysis_id": "A09", "test_id": "A09/overlap", "p_value": None, "confirmatory": False},
    ]
    return apply_framework_bh(registry_rows(rows, model="tiny", cell_type="K562"))


VERDICT_PARAMETERS = {"min_evaluable_perturbations": 5, "min_reference_edges": 10}
CLEAN_CASES = {
    "expression_qc": (qc_frame, QC_PARAMETERS),
    "edge_table": (edge_frame, EDGE_PARAMETERS),
    "reference_edges": (reference_frame, REFERENCE_PARAMETERS),
    "test_registry": (registry_frame, {}),
    "verdict_preconditions": (lambda: pd.DataFrame([{
        "model": "m", "cell_type": "c", "registry_status": "complete", "evaluable_perturbations": 12,
        "de_positives": 80, "evaluable_references": 1, "fewest_reference_positives": 40}]), VERDICT_PARAMETERS),
}


def test_each_suite_file_loads_and_names_the_parameters_it_needs(runner):
    assert runner.suite_names() == tuple(sorted(CLEAN_CASES))
    for suite, (_, parameters) in CLEAN_CASES.items():
        assert runner.required_parameters(suite) == tuple(sorted(parameters))


def test_suites_hold_the_shared_schemas():
    """The JSON repeats EDGE_COLUMNS, REGISTRY_COLUMNS and REFERENCE_COLUMNS; this keeps the copies equal."""

    def column_set(suite: str) -> list[str]:
        document = json.loads((DEFAULT_CONTRACTS_DIR / f"{suite}.json").read_text())
        (match,) = [e for e in document["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
        return match["kwargs"]["column_set"]

    assert column_set("edge_table") == list(EDGE_COLUMNS)
    assert column_set("test_registry") == list(REGISTRY_COLUMNS)
    assert column_set("reference_edges") == list(REFERENCE_COLUMNS)


@pytest.mark.parametrize("suite", sorted(CLEAN_CASES))
def test_clean_frames_pass(runner, suite):
    make_frame, parameters = CLEAN_CASES[suite]
    result = runner.validate(suite, make_frame(), parameters=parameters)
    assert result.success, result.describe()
    assert result.failed == ()
    assert result.describe().startswith(f"{suite}: all ")
    json.dumps(result.observed, allow_nan=False)


def test_negative_counts_fail_the_min_value_expectation(runner):
    frame = qc_frame()
    frame.loc[3, "min_value"] = -1.0
    result = runner.validate("expression_qc", frame, parameters=QC_PARAMETERS)
    assert result.failed == ("expect_column_values_to_be_between(min_value)",)
    assert result.critical_failure
    assert result.observed["expect_column_values_to_be_between(min_value)"]["unexpected_count"] == 1
    assert "expect_column_values_to_be_between(min_value) [1 of 50 unexpected" in result.describe()


def test_non_finite_counts_fail_and_are_reported_as_strict_json(runner):
    frame = qc_frame()
    frame.loc[0, "total_counts"] = np.inf
    frame.loc[1, "total_counts"] = np.nan
    frame.loc[2, "n_nonfinite"] = 3
    result = runner.validate("expression_qc", frame, parameters=QC_PARAMETERS)
    assert result.failed == (
        "expect_column_values_to_not_be_null(total_counts)",
        "expect_column_values_to_be_between(total_counts)",
        "expect_column_values_to_be_between(n_nonfinite)",
    )
    depth = result.observed["expect_column_values_to_be_between(total_counts)"]
    assert depth["partial_unexpected_list"] == ["inf"]
    json.dumps(result.observed, allow_nan=False)


def test_duplicate_cell_ids_fail(runner):
    frame = qc_frame()
    frame.loc[1, "cell_id"] = frame.loc[0, "cell_id"]
    result = runner.validate("expression_qc", frame, parameters=QC_PARAMETERS)
    assert result.failed == ("expect_column_values_to_be_unique(cell_id)",)


def test_empty_cells_are_a_warning_not_a_blocking_failure(runner):
    frame = qc_frame()
    frame.loc[4, "n_genes_detected"] = 0
    result = runner.validate("expression_qc", frame, parameters=QC_PARAMETERS)
    assert result.failed == ("expect_column_values_to_be_between(n_genes_detected)",)
    assert not result.critical_failure
    assert runner.check_result(result).severity == dg.AssetCheckSeverity.WARN


def test_min_cells_parameter_decides_the_row_count_check(runner):
    frame = qc_frame(n_cells=50)
    assert runner.validate("expression_qc", frame, parameters={"min_cells": 50}).success
    result = runner.validate("expression_qc", frame, parameters={"min_cells": 51})
    assert result.failed == ("expect_table_row_count_to_be_between",)
    assert result.observed["expect_table_row_count_to_be_between"]["observed_value"] == 50
    assert result.parameters == {"min_cells": 51}


def test_null_source_fails_the_edge_table(runner):
    frame = edge_frame()
    frame.loc[2, "source"] = None
    result = runner.validate("edge_table", frame, parameters=EDGE_PARAMETERS)
    assert result.failed == ("expect_column_values_to_not_be_null(source)",)


def test_unknown_method_and_infinite_scores_fail_the_edge_table(runner):
    frame = edge_frame()
    frame.loc[0, "method"] = "attention_rollout"
    frame.loc[5, "score"] = -np.inf
    result = runner.validate("edge_table", frame, parameters=EDGE_PARAMETERS)
    assert result.failed == (
        "expect_column_values_to_be_in_set(method)",
        "expect_column_values_to_be_between(score)",
    )


def test_max_null_score_fraction_bounds_the_nan_scores(runner):
    frame = edge_frame()
    frame.loc[:5, "score"] = np.nan  # 6 of 20 scores null
    assert runner.validate("edge_table", frame, parameters={"max_null_score_fraction": 0.3}).success
    result = runner.validate("edge_table", frame, parameters={"max_null_score_fraction": 0.25})
    assert result.failed == ("expect_column_proportion_of_non_null_values_to_be_between(score)",)
    assert result.observed[result.failed[0]]["observed_value"] == pytest.approx(0.7)


def test_an_edge_table_off_the_shared_schema_names_the_missing_column(runner):
    frame = edge_frame().drop(columns="layer")
    result = runner.validate("edge_table", frame, parameters=EDGE_PARAMETERS)
    assert result.failed[0] == "expect_table_columns_to_match_set"
    columns = result.observed["expect_table_columns_to_match_set"]
    assert columns["details"] == {"mismatched": {"missing": ["layer"]}}
    assert "does not exist" in result.observed["expect_column_values_to_be_between(layer)"]["exception"]


def test_duplicate_reference_edges_fail_the_compound_uniqueness(runner):
    frame = pd.concat([reference_frame(), reference_frame().iloc[[0]]], ignore_index=True)
    result = runner.validate("reference_edges", frame, parameters=REFERENCE_PARAMETERS)
    assert result.failed == ("expect_compound_columns_to_be_unique(source,target,resource)",)
    assert result.observed[result.failed[0]]["unexpected_count"] == 2  # both copies are reported


def test_reference_signs_and_edge_count(runner):
    frame = reference_frame()
    frame.loc[0, "sign"] = 2
    result = runner.validate("reference_edges", frame, parameters={"min_reference_edges": 5})
    assert result.failed == (
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_be_in_set(sign)",
    )


def test_p_value_above_one_fails_the_registry(runner):
    frame = registry_frame()
    frame.loc[0, "p_value"] = 1.5
    result = runner.validate("test_registry", frame)
    assert result.failed == ("expect_column_values_to_be_between(p_value)",)
    assert result.observed[result.failed[0]]["partial_unexpected_list"] == [1.5]


def test_repeated_test_id_fails_the_registry(runner):
    frame = registry_frame()
    frame.loc[1, "test_id"] = frame.loc[0, "test_id"]
    assert runner.validate("test_registry", frame).failed == ("expect_column_values_to_be_unique(test_id)",)


def test_verdict_preconditions_name_each_unmet_one(runner):
    make_frame, parameters = CLEAN_CASES["verdict_preconditions"]
    frame = make_frame().assign(registry_status="partial", evaluable_perturbations=3, fewest_reference_positives=2)
    result = runner.validate("verdict_preconditions", frame, parameters=parameters)
    assert set(result.failed) == {"expect_column_values_to_be_in_set(registry_status)",
                                  "expect_column_values_to_be_between(evaluable_perturbations)",
                                  "expect_column_values_to_be_between(fewest_reference_positives)"}


def test_missing_parameter_is_a_clear_error(runner):
    with pytest.raises(ContractError, match=r"'edge_table' needs parameter.*\['max_null_score_fraction'\]"):
        runner.validate("edge_table", edge_frame(), parameters={"min_cells": 3})


def test_missing_suite_file_is_a_clear_error(runner, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no contract suite 'edge_tabel'.*'edge_table'"):
        runner.validate("edge_tabel", edge_frame())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ContractRunner(tmp_path / "absent")


def test_an_invalid_expectation_is_an_error_not_a_silently_dropped_check(tmp_path):
    """GE's ExpectationSuite logs and drops an expectation it cannot build; the runner refuses the file."""
    suite = {
        "name": "typo",
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"colum": "source"}}],
    }
    (tmp_path / "typo.json").write_text(json.dumps(suite))
    with pytest.raises(ContractError, match=r"typo.json: expectation 0 .*not_be_null.* is invalid"):
        ContractRunner(tmp_path).validate("typo", edge_frame())


def test_check_result_carries_the_outcome_and_observations(runner):
    frame = edge_frame()
    frame.loc[2, "source"] = None
    check = runner.check_result(runner.validate("edge_table", frame, parameters=EDGE_PARAMETERS))
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.check_name == "check_edge_table_contract"
    assert check.metadata["failed"].value == ["expect_column_values_to_not_be_null(source)"]
    assert check.metadata["parameters"].value == EDGE_PARAMETERS
    assert check.metadata["expect_column_values_to_not_be_null(source)"].value["unexpected_count"] == 1
    assert "expect_column_values_to_not_be_null(source)" in check.description

    clean = runner.check_result(runner.validate("edge_table", edge_frame(), parameters=EDGE_PARAMETERS))
    assert clean.passed


def test_a_blocking_contract_check_runs_inside_its_asset(runner):
    """The intended use: the asset validates its own value and yields the check result with it."""

    @dg.asset(check_specs=[contract_check_spec("reference_edges", "reference_edges")])
    def reference_edges():
        edges = pd.concat([reference_frame(), reference_frame().iloc[[0]]], ignore_index=True)
        yield dg.Output(edges)
        yield runner.check_result(runner.validate("reference_edges", edges, parameters=REFERENCE_PARAMETERS))

    result = dg.materialize([reference_edges], raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.check_name == "check_reference_edges_contract"
    failed = evaluation.metadata["failed"].value
    assert failed == ["expect_compound_columns_to_be_unique(source,target,resource)"]
    assert not result.success  # blocking: a failed ERROR check fails the step, so nothing downstream runs
