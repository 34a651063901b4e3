"""The one test-registry schema (FRAMEWORK.md section 7) that every analysis writes to.

Analyses return rows built with `registry_rows`; the summary asset gathers them per partition with
`combine_registry_parts` (which refuses to mix configurations and reports which registered partitions are
missing) and adds the framework-wide Benjamini-Hochberg columns with `apply_framework_bh`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    "input_data_versions": "object",  # JSON {input asset: Dagster data version} of what the row was computed from
    "note": "object",  # why a row is descriptive or was not computed (e.g. a reference not evaluable); "" if none
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
    frame["confirmatory"] = frame["confirmatory"].astype("boolean").fillna(False).astype(bool)
    frame["note"] = frame["note"].fillna("")
    return frame.astype(REGISTRY_DTYPES)


def empty_registry() -> pd.DataFrame:
    return registry_rows([])


COVERAGE_COLUMNS = ("partition", "status", "missing_inputs")


class MixedCodeVersionError(ValueError):
    """Registry rows come from more than one configuration or package version."""


@dataclass(frozen=True)
class RegistryCoverage:
    """Which partitions (e.g. model x cell type keys) the registry's inputs hold.

    covered: partitions present in every input, sorted
    missing: each expected partition that some input lacks -> those inputs, sorted
    inputs: the names of every input
    """

    covered: tuple[str, ...]
    missing: Mapping[str, tuple[str, ...]]
    inputs: tuple[str, ...] = ()

    @property
    def q_values_provisional(self) -> bool:
        """BH q-values depend on every test of the family, so they change once a missing partition arrives."""
        return bool(self.missing)

    def table(self) -> pd.DataFrame:
        """COVERAGE_COLUMNS, one row per partition: "complete" (in every input), "partial" (in some; the
        others listed) or "missing" (in none)."""
        rows = [(partition, "complete", "") for partition in self.covered]
        rows += [(partition, "missing" if set(lacking) >= set(self.inputs) else "partial", ", ".join(lacking))
                 for partition, lacking in self.missing.items()]
        return pd.DataFrame(sorted(rows), columns=list(COVERAGE_COLUMNS))


def combine_registry_parts(
    parts: Mapping[str, Mapping[str, pd.DataFrame]],
    expected_partitions: Iterable[str],
    current_code_version: str | None = None,
) -> tuple[pd.DataFrame, RegistryCoverage]:
    """Concatenate registry rows gathered per input and partition into one table, and say what it covers.

    parts: {input name (e.g. analysis asset): {partition key: its registry rows}}, only the partitions that
    exist; an empty frame is a partition whose analysis ran and had nothing to test.
    expected_partitions: every registered partition (each input should hold each).
    current_code_version: the code_version the present configuration writes, named in the error message.
    Raises MixedCodeVersionError when the rows carry more than one code_version: q-values computed over
    several configurations mean nothing, so the message names each version with its partitions and the fix.
    Returns the rows (registry schema, without q-values) and the coverage.
    """
    frames = [empty_registry()]
    versions: dict[str, set[str]] = {}
    for by_partition in parts.values():
        for partition in sorted(by_partition):
            rows = by_partition[partition]
            frames.append(rows)
            for version in rows["code_version"].unique():
                versions.setdefault(str(version), set()).add(partition)
    if len(versions) > 1:
        raise MixedCodeVersionError(_mixed_versions_message(versions, current_code_version))
    present = [set(by_partition) for by_partition in parts.values()]
    covered = set.intersection(*present) if present else set()
    missing = {
        partition: tuple(sorted(name for name, by_partition in parts.items() if partition not in by_partition))
        for partition in sorted(set(expected_partitions) - covered)
    }
    table = pd.concat(frames, ignore_index=True).astype(REGISTRY_DTYPES)
    return table, RegistryCoverage(tuple(sorted(covered)), missing, tuple(parts))


def _mixed_versions_message(versions: Mapping[str, set[str]], current: str | None) -> str:
    listed = "; ".join(f"code_version {version!r} in partitions {sorted(partitions)}"
                       for version, partitions in sorted(versions.items()))
    if current is not None:
        stale = sorted({partition for version, partitions in versions.items() if version != current
                        for partition in partitions})
        fix = f"re-materialise the stale partitions {stale} so that every row has code_version {current!r}"
    else:
        fix = "re-materialise the partitions of the older configuration so that every row has one code_version"
    return (f"test registry would mix rows of {len(versions)} code versions ({listed}); framework-wide q-values "
            f"over different configurations mean nothing. Fix: {fix}")


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
