import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from scinterp_assets.core.stats.family_sensitivity import (
    CONCLUSION_COLUMNS,
    family_definition_sensitivity,
)
from scinterp_assets.core.stats.registry import apply_framework_bh, empty_registry, registry_rows


def _registry():
    # Confirmatory: q = (0.02, 0.04), both significant. All tests: the descriptive p = 0.5 joins the
    # family, C2's q becomes 0.04 * 3 / 2 = 0.06. Per analysis: A01 = {C1, C2} as before, A04 = {D1}.
    # Exactly one conclusion changes: C2.
    return registry_rows(
        [
            {"analysis_id": "A01", "test_id": "A01:C1", "p_value": 0.01, "confirmatory": True},
            {"analysis_id": "A01", "test_id": "A01:C2", "p_value": 0.04, "confirmatory": True},
            {"analysis_id": "A04", "test_id": "A04:D1", "p_value": 0.5, "confirmatory": False},
            {"analysis_id": "A04", "test_id": "A04:no_p", "confirmatory": False},
        ],
        model="m", cell_type="c",
    )


def test_exactly_one_conclusion_changes():
    result = family_definition_sensitivity(_registry(), alpha=0.05)
    assert tuple(result.conclusions.columns) == CONCLUSION_COLUMNS
    assert result.changed["test_id"].tolist() == ["A01:C2"]
    assert result.n_changed == 1 and result.n_changed_confirmatory == 1
    c2 = result.changed.iloc[0]
    assert c2["significant_confirmatory"] and not c2["significant_all"] and c2["significant_per_analysis"]
    assert "A04:no_p" not in set(result.conclusions["test_id"])  # no p-value, no conclusion


def test_descriptive_tests_are_outside_the_confirmatory_family():
    conclusions = family_definition_sensitivity(_registry(), alpha=0.05).conclusions.set_index("test_id")
    assert conclusions.loc["A04:D1", "significant_confirmatory"] is pd.NA
    assert not conclusions.loc["A04:D1", "changes"]
    summary = family_definition_sensitivity(_registry(), alpha=0.05).summary.set_index("family")
    assert summary.loc["confirmatory", "n_tests"] == 2 and summary.loc["all", "n_tests"] == 3
    assert summary["n_significant"].to_dict() == {"confirmatory": 2, "all": 1, "per_analysis": 2}


def test_q_values_are_apply_framework_bh_and_match_statsmodels():
    conclusions = family_definition_sensitivity(_registry(), alpha=0.05).conclusions.set_index("test_id")
    reference = apply_framework_bh(_registry()).set_index("test_id")
    for column in ("q_value", "q_value_all", "q_value_per_analysis"):
        pd.testing.assert_series_equal(conclusions[column], reference.loc[conclusions.index, column])
    np.testing.assert_allclose(conclusions.loc[["A01:C1", "A01:C2", "A04:D1"], "q_value_all"],
                               multipletests([0.01, 0.04, 0.5], method="fdr_bh")[1])


def test_stale_q_values_are_recomputed():
    stale = apply_framework_bh(_registry())
    stale["q_value"] = 0.9
    result = family_definition_sensitivity(stale, alpha=0.05)
    assert result.conclusions.set_index("test_id").loc["A01:C1", "q_value"] == pytest.approx(0.02)


def test_bad_registries():
    with pytest.raises(ValueError, match="non-empty test registry"):
        family_definition_sensitivity(empty_registry(), alpha=0.05)
    doubled = pd.concat([_registry(), _registry()], ignore_index=True)
    with pytest.raises(ValueError, match="duplicated: .*A01:C1"):
        family_definition_sensitivity(doubled, alpha=0.05)
    with pytest.raises(ValueError, match="lacks column"):
        family_definition_sensitivity(_registry().drop(columns="confirmatory"), alpha=0.05)
