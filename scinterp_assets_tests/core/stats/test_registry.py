import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS, apply_framework_bh, registry_rows


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
