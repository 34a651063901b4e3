"""`scinterp trace TEST_ID`: the chain from one registry row back to what it was computed from.

A registry row records the data versions of the inputs of the analysis that wrote it
(`input_data_versions`). Each of those is a materialisation in the Dagster instance, and every materialisation
names the inputs its step read (Dagster's `dagster/input_event_pointer/<asset>` tags); each input is the
newest materialisation, before the step's own, of the partition the step reads. Following them to the roots
gives the checkpoint (folder and fingerprint), the screen (the files it
was read from, with sha256), the reference files (sha256) and the configuration (fingerprint and file), with
the run, code version and stored file of every step in between.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from scinterp_assets.config import ScinterpConfig
from scinterp_assets.definitions import build_definitions
from scinterp_assets.defs.versions import partition_read

INPUT_POINTER = "dagster/input_event_pointer/"
# the metadata each root of the chain contributes to the printout: asset -> metadata keys
ROOT_FACTS = {"model_checkpoint": ("checkpoint_folder", "fingerprint", "family", "weights"),
              "screen_data": ("source_files", "cells"),
              "reference_networks": ("files",)}
_SEARCH_LIMIT = 200  # materialisations of one asset partition searched for a data version


class TraceError(LookupError):
    """The test id or its inputs cannot be found; the message says what to do."""


@dataclass
class Step:
    asset: str
    partition: str | None
    data_version: str | None
    run_id: str
    code_version: str | None
    metadata: dict
    inputs: list[Step] = field(default_factory=list)


def find_row(registry: pd.DataFrame, test_id: str) -> pd.Series:
    """The row with this test id; its ending after a "|" ("synthetic_a|A12:planted:correlation", or
    "A12:planted:correlation") is accepted when only one row ends so."""
    matches = registry[(registry["test_id"] == test_id) | registry["test_id"].str.endswith(f"|{test_id}")]
    if len(matches) == 1:
        return matches.iloc[0]
    if not len(matches):
        raise TraceError(f"no registry row has test id {test_id!r}; test ids read 'model|cell_type|analysis:...' "
                         "(the test_id column of test_registry, or of registry.csv beside the report)")
    listed = "\n  ".join(matches["test_id"].head(20))
    raise TraceError(f"{len(matches)} registry rows end with {test_id!r}; give one in full:\n  {listed}")


def _value(entry) -> object:
    return getattr(entry, "value", entry)


def _step(record: dg.EventLogRecord) -> Step:
    materialization = record.asset_materialization
    tags = materialization.tags or {}
    return Step(materialization.asset_key.to_user_string(), materialization.partition,
                tags.get("dagster/data_version"), record.run_id, tags.get("dagster/code_version"),
                {key: _value(value) for key, value in materialization.metadata.items()})


def _upstream(instance: dg.DagsterInstance, graph, record: dg.EventLogRecord, seen: dict[int, Step]) -> Step:
    """The step of this materialisation with its inputs. Dagster's input tags name the inputs a step read;
    each is found at the partition this step reads (`partition_read`) as the newest materialisation before
    this one. (The tags' event pointers name the asset's newest event of any partition, so they are not
    followed: another cell type's materialisation can be newer.)"""
    if record.storage_id in seen:
        return seen[record.storage_id]
    step = seen[record.storage_id] = _step(record)
    node = graph.get(record.asset_materialization.asset_key)
    partition = step.partition
    if partition is not None and isinstance(node.partitions_def, dg.MultiPartitionsDefinition):
        partition = node.partitions_def.get_partition_key_from_str(partition)
    for tag in sorted(record.asset_materialization.tags or {}):
        if not tag.startswith(INPUT_POINTER):
            continue
        key = dg.AssetKey.from_user_string(tag.removeprefix(INPUT_POINTER))
        read = partition_read(graph.get(key).partitions_def, partition)
        found = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=key, asset_partitions=[read] if read else None, before_storage_id=record.storage_id),
            limit=1).records
        if found:
            step.inputs.append(_upstream(instance, graph, found[0], seen))
    return step


def _materialisation(instance: dg.DagsterInstance, asset: str, partition: str | None, data_version: str | None):
    """The newest materialisation of the asset partition with that data version (None: the newest)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_user_string(asset),
                              asset_partitions=[partition] if partition else None), limit=_SEARCH_LIMIT).records
    for record in records:
        if data_version is None or (record.asset_materialization.tags or {}).get("dagster/data_version") == data_version:
            return record
    raise TraceError(f"no materialisation of {asset} [{partition}] with data version {data_version} in the Dagster "
                     "instance: it was overwritten or the instance (DAGSTER_HOME) is another one; re-materialise and "
                     "trace again")


def trace(test_id: str, config: ScinterpConfig, instance: dg.DagsterInstance) -> list[str]:
    """The printout of `scinterp trace` (module docstring), one line per item."""
    path = config.storage_dir / "test_registry" / "__unpartitioned__.parquet"
    if not path.is_file():
        raise TraceError(f"{path} does not exist: materialise test_registry first (make demo, or the summary job)")
    row = find_row(pd.read_parquet(path), test_id)
    lines = [f"{row['test_id']}",
             f"  {row['analysis_id']} {row['statistic_name']} = {row['statistic']:.6g}; effect {row['effect_name']} = "
             f"{row['effect']:.6g} [{row['ci_low']:.6g}, {row['ci_high']:.6g}]; p = {row['p_value']:.4g}, "
             f"q = {row['q_value']:.4g}; n = {row['n']}, positives = {row['n_positives']}; "
             f"{'confirmatory' if row['confirmatory'] else 'descriptive'}",
             f"  model {row['model']} (checkpoint fingerprint {row['checkpoint']}), cell type {row['cell_type']} "
             f"({row['modality']}), label rule: {row['label_rule']}, seed {row['seed']}",
             f"  code version {row['code_version']} (package + configuration fingerprint {config.fingerprint()}: "
             f"{config.source})",
             "  computed from:"]
    graph = build_definitions(config).resolve_asset_graph()
    partition = dg.MultiPartitionKey({"model": row["model"], "cell_type": row["cell_type"]})
    seen: dict[int, Step] = {}
    printed: set[int] = set()
    inputs = row["input_data_versions"] if isinstance(row["input_data_versions"], str) else "{}"
    for asset, version in sorted(json.loads(inputs).items()):
        upstream = graph.get(dg.AssetKey.from_user_string(asset)).partitions_def
        record = _materialisation(instance, asset, partition_read(upstream, partition), version)
        lines += _render(_upstream(instance, graph, record, seen), depth=2, printed=printed)
    roots = [step for step in seen.values() if step.asset in ROOT_FACTS]
    lines.append("  roots:")
    for step in sorted(roots, key=lambda s: (s.asset, s.partition or "")):
        facts = {key: step.metadata[key] for key in ROOT_FACTS[step.asset] if key in step.metadata}
        lines.append(f"    {step.asset} [{step.partition or '-'}]: {json.dumps(facts, sort_keys=True)}")
    lines.append(f"    configuration: {config.source} (fingerprint {config.fingerprint()})")
    return lines


def _render(step: Step, depth: int, printed: set[int]) -> list[str]:
    """The step and its inputs, indented by depth; a step already printed (an input shared by several)
    is named again with "(above)" instead of its inputs."""
    indent = "  " * depth
    provenance = step.metadata.get("provenance") or {}
    line = (f"{indent}{step.asset} [{step.partition or '-'}] data version {(step.data_version or '-')[:16]}, "
            f"code {step.code_version}, run {step.run_id[:8]}")
    if provenance.get("sha256"):
        line += f", file sha256 {provenance['sha256'][:16]} ({step.metadata.get('path')})"
    key = id(step)
    if key in printed:
        return [line + " (above)"]
    printed.add(key)
    lines = [line]
    for upstream in step.inputs:
        lines += _render(upstream, depth + 1, printed)
    return lines
