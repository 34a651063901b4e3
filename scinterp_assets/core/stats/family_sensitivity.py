"""Family-definition sensitivity of the framework-wide BH correction (FRAMEWORK.md section 7).

Which conclusions change when the multiple-testing family is defined differently? The three families
are exactly those `apply_framework_bh` computes (this module never re-implements BH):

- "confirmatory": BH over the confirmatory tests with a p-value -> q_value (descriptive tests are not
  members: their significance under this family is NA, not False);
- "all": BH over every test with a p-value, confirmatory or descriptive -> q_value_all;
- "per_analysis": "one test per analysis" as registry.py defines it: a separate BH family for each
  analysis_id (A01, A02, ...), pooling that analysis's tests over every model and cell type and
  including its descriptive tests -> q_value_per_analysis.

A conclusion "changes" when a test is significant (q < alpha) under one family it belongs to and not
under another it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from scinterp_assets.core.stats.registry import REGISTRY_COLUMNS, apply_framework_bh

FAMILIES = {"confirmatory": "q_value", "all": "q_value_all", "per_analysis": "q_value_per_analysis"}
CONCLUSION_COLUMNS = (
    "test_id", "analysis_id", "confirmatory", "p_value", "q_value", "q_value_all", "q_value_per_analysis",
    "significant_confirmatory", "significant_all", "significant_per_analysis", "changes",
)


@dataclass(frozen=True)
class FamilySensitivity:
    """conclusions: CONCLUSION_COLUMNS, one row per test with a p-value, sorted by test_id; the
    significant_* columns are nullable booleans (NA where the test is outside that family).
    summary: one row per family: family, q_column, n_tests (members), n_significant.
    n_changed / n_changed_confirmatory: how many conclusions change (among all / confirmatory tests)."""

    conclusions: pd.DataFrame
    summary: pd.DataFrame
    alpha: float

    @property
    def n_changed(self) -> int:
        return int(self.conclusions["changes"].sum())

    @property
    def n_changed_confirmatory(self) -> int:
        return int((self.conclusions["changes"] & self.conclusions["confirmatory"]).sum())

    @property
    def changed(self) -> pd.DataFrame:
        """Only the conclusions that differ between families."""
        return self.conclusions[self.conclusions["changes"]].reset_index(drop=True)


def family_definition_sensitivity(registry: pd.DataFrame, *, alpha: float) -> FamilySensitivity:
    """Significance of every test under the three family definitions, and which conclusions change.

    registry: a test registry (REGISTRY_COLUMNS) with p-values and confirmatory flags; any q-value columns
    it holds are recomputed. test_id must be unique (the asset layer prefixes model and cell type).
    """
    if registry is None or registry.empty:
        raise ValueError("family-definition sensitivity needs a non-empty test registry; got no rows")
    missing = [column for column in REGISTRY_COLUMNS if column not in registry.columns
               and column not in FAMILIES.values()]
    if missing:
        raise ValueError(f"family-definition sensitivity: registry lacks column(s) {missing}")
    duplicated = registry["test_id"][registry["test_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"test_id must identify one test; duplicated: {sorted(map(str, duplicated))[:5]}")
    table = registry.copy()
    for column in FAMILIES.values():
        if column not in table.columns:
            table[column] = float("nan")
    corrected = apply_framework_bh(table)
    tested = corrected[corrected["p_value"].notna()].reset_index(drop=True)
    conclusions = tested.loc[:, ["test_id", "analysis_id", "confirmatory", "p_value", *FAMILIES.values()]]
    members = {
        "confirmatory": tested["confirmatory"].to_numpy(dtype=bool),
        "all": [True] * len(tested),
        "per_analysis": [True] * len(tested),
    }
    for family, column in FAMILIES.items():
        significant = pd.array(tested[column] < alpha, dtype="boolean")
        significant[~pd.array(members[family], dtype=bool)] = pd.NA
        conclusions[f"significant_{family}"] = significant
    flags = conclusions[[f"significant_{family}" for family in FAMILIES]]
    # changes: both True and False occur among the families the test belongs to
    conclusions["changes"] = (flags.eq(True).any(axis=1) & flags.eq(False).any(axis=1)).astype(bool)
    summary = pd.DataFrame({
        "family": list(FAMILIES),
        "q_column": list(FAMILIES.values()),
        "n_tests": [int(conclusions[f"significant_{family}"].notna().sum()) for family in FAMILIES],
        "n_significant": [int(conclusions[f"significant_{family}"].eq(True).sum()) for family in FAMILIES],
    })
    return FamilySensitivity(conclusions.loc[:, list(CONCLUSION_COLUMNS)], summary, alpha)
