"""The one test-registry schema (FRAMEWORK.md section 7) that every analysis writes to.

Analyses return rows built with `registry_rows`; the summary asset concatenates them and adds the
framework-wide Benjamini-Hochberg columns with `apply_framework_bh`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from scinterp_assets.core.stats.multiple_testing import benjamini_hochberg

REGISTRY_DTYPES: dict[str, str] = {
    "analysis_id": "object",
    "test_id": "object",
    "family": "object",
    "model": "object",
    "checkpoint": "object",
    "cell_type": "object",
    "modality": "object",
    "layer": "Int64",
    "aggregation": "object",
    "statistic_name": "object",
    "statistic": "float64",
    "effect_name": "object",
    "effect": "float64",
    "ci_low": "float64",
    "ci_high": "float64",
    "p_value": "float64",
    "q_value": "float64",
    "q_value_all": "float64",
    "q_value_per_analysis": "float64",
    "n": "Int64",
    "n_positives": "Int64",
    "confirmatory": "bool",
    "universe_size": "Int64",
    "negatives": "object",
    "label_rule": "object",
    "seed": "Int64",
    "code_version": "object",
}
REGISTRY_COLUMNS: tuple[str, ...] = tuple(REGISTRY_DTYPES)
# Filled by apply_framework_bh, never by an analysis.
_Q_COLUMNS = ("q_value", "q_value_all", "q_value_per_analysis")


def registry_rows(rows: list[dict[str, Any]], **shared: Any) -> pd.DataFrame:
    """Registry frame from analysis rows; `shared` fills fields common to all rows (model, cell_type, ...).

    Unknown keys are an error, so a typo cannot silently drop a field.
    """
    records = []
    for row in rows:
        record = {**shared, **row}
        unknown = set(record) - set(REGISTRY_COLUMNS)
        if unknown:
            raise KeyError(f"not registry columns: {sorted(unknown)}; the schema is {list(REGISTRY_COLUMNS)}")
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=list(REGISTRY_COLUMNS))
    frame["confirmatory"] = frame["confirmatory"].fillna(False).astype(bool)
    return frame.astype(REGISTRY_DTYPES)


def empty_registry() -> pd.DataFrame:
    return registry_rows([])


def apply_framework_bh(registry: pd.DataFrame) -> pd.DataFrame:
    """Add the framework-wide q-values (FRAMEWORK.md section 7).

    q_value:              BH over confirmatory tests with a p-value (NaN for descriptive rows)
    q_value_all:          BH over every test with a p-value
    q_value_per_analysis: BH within each analysis_id separately (the narrowest family definition)
    Rows are sorted by test_id so the result does not depend on the order analyses ran in.
    """
    table = registry.sort_values("test_id", kind="stable").reset_index(drop=True).copy()
    has_p = table["p_value"].notna().to_numpy()
    confirmatory = table["confirmatory"].to_numpy(dtype=bool) & has_p
    for column in _Q_COLUMNS:
        table[column] = np.nan
    table.loc[confirmatory, "q_value"] = benjamini_hochberg(table.loc[confirmatory, "p_value"].to_numpy())
    table.loc[has_p, "q_value_all"] = benjamini_hochberg(table.loc[has_p, "p_value"].to_numpy())
    for _, index in table[has_p].groupby("analysis_id").groups.items():
        table.loc[index, "q_value_per_analysis"] = benjamini_hochberg(table.loc[index, "p_value"].to_numpy())
    return table.astype(REGISTRY_DTYPES)
