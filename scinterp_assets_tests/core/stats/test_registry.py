import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from scinterp_assets.core.stats.registry import (
    REGISTRY_COLUMNS,
    MixedCodeVersionError,
    apply_framework_bh,
    combine_registry_parts,
    empty_registry,
    registry_rows,
)


def _rows():
    return registry_rows(
        [
            {"analysis_id": "A01", "test_id": "A01:b", "p_value": 0.01, "confirmatory": True},
            {"analysis_id": "A01", "test_id": "A01:a", "p_value": 0.04, "confirmatory": True},
            {"analysis_id": "A04", "test_id": "A04:a", "p_value": 0.03, "confirmatory": False},
            {"analysis_id": "A12", "test_id": "A12:a", "p_value": 0.2, "confirmatory": True},
            {"analysis_id": "A12", "test_id": "A12:desc", "confirmatory": False},
        ],
        model="m",
        cell_type="c",
    )


def test_schema_and_unknown_key():
    assert tuple(_rows().columns) == REGISTRY_COLUMNS
    with pytest.raises(KeyError, match="not registry columns"):
        registry_rows([{"analysis_id": "A01", "pvalue": 0.1}])


def test_framework_bh_families_match_statsmodels():
    table = apply_framework_bh(_rows()).set_index("test_id")
    confirmatory = ["A01:a", "A01:b", "A12:a"]
    expected = multipletests(table.loc[confirmatory, "p_value"], method="fdr_bh")[1]
    np.testing.assert_allclose(table.loc[confirmatory, "q_value"], expected)
    assert np.isnan(table.loc["A04:a", "q_value"]) and np.isnan(table.loc["A12:desc", "q_value"])
    tested = ["A01:a", "A01:b", "A04:a", "A12:a"]
    np.testing.assert_allclose(table.loc[tested, "q_value_all"],
                               multipletests(table.loc[tested, "p_value"], method="fdr_bh")[1])
    np.testing.assert_allclose(table.loc[["A01:a", "A01:b"], "q_value_per_analysis"],
                               multipletests([0.04, 0.01], method="fdr_bh")[1])


def test_order_independent():
    shuffled = _rows().sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(apply_framework_bh(shuffled), apply_framework_bh(_rows()))


def _partition_rows(partition: str, code_version: str = "0.1+abc", p_value: float = 0.01) -> pd.DataFrame:
    cell_type, model = partition.split("|")
    return registry_rows([{"analysis_id": "A01", "test_id": f"{model}|{cell_type}|A01:x", "p_value": p_value,
                           "confirmatory": True}], model=model, cell_type=cell_type, code_version=code_version)


def test_combining_parts_keeps_every_row_and_reports_full_coverage():
    expected = ["a|m1", "a|m2"]
    parts = {"perturbation_prediction": {key: _partition_rows(key) for key in expected},
             "layer_selection": {"a|m1": empty_registry(), "a|m2": empty_registry()}}  # ran, nothing to test
    table, coverage = combine_registry_parts(parts, expected, current_code_version="0.1+abc")
    assert tuple(table.columns) == REGISTRY_COLUMNS and sorted(table["test_id"]) == ["m1|a|A01:x", "m2|a|A01:x"]
    assert coverage.covered == ("a|m1", "a|m2") and dict(coverage.missing) == {}
    assert not coverage.q_values_provisional


def test_missing_registered_partitions_make_the_q_values_provisional():
    expected = ["a|m1", "a|m2", "b|m1", "b|m2"]
    parts = {"perturbation_prediction": {key: _partition_rows(key) for key in ("a|m1", "a|m2", "b|m1")},
             "incremental_value": {key: empty_registry() for key in ("a|m1", "b|m1")}}
    table, coverage = combine_registry_parts(parts, expected)
    assert len(table) == 3 and coverage.q_values_provisional
    assert coverage.covered == ("a|m1", "b|m1")
    assert dict(coverage.missing) == {"a|m2": ("incremental_value",),
                                      "b|m2": ("incremental_value", "perturbation_prediction")}


def test_rows_of_two_code_versions_are_refused_naming_versions_partitions_and_the_fix():
    parts = {"perturbation_prediction": {"a|m1": _partition_rows("a|m1", "0.1+old"),
                                         "a|m2": _partition_rows("a|m2", "0.1+new")},
             "incremental_value": {"a|m1": _partition_rows("a|m1", "0.1+new")}}
    with pytest.raises(MixedCodeVersionError) as refused:
        combine_registry_parts(parts, ["a|m1", "a|m2"], current_code_version="0.1+new")
    message = str(refused.value)
    assert isinstance(refused.value, ValueError)
    assert "code_version '0.1+new' in partitions ['a|m1', 'a|m2']" in message
    assert "code_version '0.1+old' in partitions ['a|m1']" in message
    assert "Fix: re-materialise the stale partitions ['a|m1']" in message
