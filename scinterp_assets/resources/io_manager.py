"""Filesystem IO manager that never leaves a half-written asset behind.

Every asset partition is one file, `<base_dir>/<asset key path>/<partition>.<ext>`, with the format chosen
by the value's type:

    pandas.DataFrame          .parquet        (pyarrow)
    anndata.AnnData           .h5ad
    registered npz types      .<tag>.npz      (`save(path)` / classmethod `load(path)`, see register_npz_type)
    dict or list              .json

`<partition>` is the partition key (`|` of multi-partition keys becomes `__`) or `__unpartitioned__`.

A value is written by `core.files.write_atomically`: inside a private staging folder next to its destination,
fsynced, then moved into place with os.replace, so readers see the previous file or the new one, never a
mix, with the umask's permissions. A writer killed before the rename (SIGKILL, out of memory) leaves only its
staging folder, which the next write to that asset sweeps.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from scinterp_assets.core.files import file_sha256, sweep_dead_staging, write_atomically

UNPARTITIONED = "__unpartitioned__"
_NPZ_TYPES: dict[str, type] = {}
# Tags carry no dot, so a file name splits into partition and format in exactly one way.
_NPZ_TAG = re.compile(r"[a-z0-9_]+")
_PARTITION_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_SINGLE_SUFFIXES = ("parquet", "h5ad", "json")


def register_npz_type(tag: str, cls: type) -> None:
    """Store values of exactly `cls` as `<partition>.<tag>.npz`.

    Loading reads the tag from the file name and takes the class from this registry, so a stored file can
    never make the IO manager import a module it names.
    """
    if not _NPZ_TAG.fullmatch(tag):
        raise ValueError(f"npz type tag {tag!r} must match [a-z0-9_]+ (it becomes part of file names)")
    if not (callable(getattr(cls, "save", None)) and callable(getattr(cls, "load", None))):
        raise TypeError(f"{cls.__qualname__} needs save(path) and a classmethod load(path) to be stored")
    if _NPZ_TYPES.get(tag, cls) is not cls:
        raise ValueError(f"npz type tag {tag!r} is already registered for {_NPZ_TYPES[tag].__qualname__}")
    _NPZ_TYPES[tag] = cls


class AtomicFilesystemIOManager(dg.ConfigurableIOManager):
    """One file per asset partition under `base_dir`, replaced atomically on every materialisation.

    Loading a partitioned upstream returns the value itself when the consumer reads the one upstream
    partition that matches its own, and a dict {partition key: value} for a fan-in (see `_is_fan_in`), with
    the partitions that exist; missing ones are logged, and none at all is an error.
    """

    base_dir: str = Field(description="Root folder; each asset gets a sub-folder named by its key path.")
    provenance: str = Field(default="{}", description=(
        "JSON written into every output's `provenance` metadata (configuration fingerprint and file, seeds, "
        "package versions: `defs.versions.static_provenance`); each output adds its code version, file "
        "sha256 and, for a model partition, the checkpoint fingerprint."))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        directory = self._asset_dir(context.asset_key)
        stem = _partition_stem(context.asset_partition_key if context.has_asset_partitions else UNPARTITIONED)
        path = directory / f"{stem}.{_suffix_for(obj)}"
        directory.mkdir(parents=True, exist_ok=True)
        sweep_dead_staging(directory)
        write_atomically(path, lambda staged: _write(obj, staged))
        for stale in _stored_files(directory).get(stem, []):
            if stale != path:  # an earlier materialisation in another format would make loading ambiguous
                stale.unlink(missing_ok=True)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "bytes": path.stat().st_size,
                                     "provenance": dg.MetadataValue.json(self._provenance(context, path))})

    def _provenance(self, context: dg.OutputContext, path: Path) -> dict:
        """The static record, plus this output's file sha256, and inside a run its code version and, for a
        model partition, the fingerprint of the checkpoint registered when it was written (the data version of
        model_checkpoint for the partition's model; registry rows record the one their step loaded)."""
        record = {**json.loads(self.provenance), "sha256": file_sha256(path)}
        try:
            step = context.step_context
        except dg.DagsterInvariantViolationError:  # written outside a run (a unit test, a notebook)
            return record
        record["code_version"] = step.job_def.asset_layer.asset_graph.get(context.asset_key).code_version
        partition = context.asset_partition_key if context.has_asset_partitions else None
        if isinstance(partition, dg.MultiPartitionKey) and "model" in partition.keys_by_dimension:
            model = partition.keys_by_dimension["model"]
            version = step.instance.get_latest_data_version_record(dg.AssetKey("model_checkpoint"), partition_key=model)
            tags = (version.asset_materialization.tags if version is not None and version.asset_materialization
                    else None) or {}
            record["checkpoint"] = {"model": model, "fingerprint": tags.get("dagster/data_version")}
        return record

    def load_input(self, context: dg.InputContext) -> Any:
        directory = self._asset_dir(context.asset_key)
        stored = _stored_files(directory)
        if not context.has_asset_partitions:
            return _read(_single_file(stored, UNPARTITIONED, directory))
        keys = context.asset_partition_keys
        if not _is_fan_in(context, keys):
            return _read(_single_file(stored, _partition_stem(keys[0]), directory))

        stems = {key: _partition_stem(key) for key in keys}
        present = [key for key in keys if stems[key] in stored]
        if not present:
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()}: none of the partitions {list(keys)} has been "
                f"materialised under {directory}"
            )
        if len(present) < len(keys):
            context.log.warning(
                f"{context.asset_key.to_user_string()}: loading {len(present)} of {len(keys)} partitions; "
                f"not materialised: {[key for key in keys if key not in present]}"
            )
        return {key: _read(_single_file(stored, stems[key], directory)) for key in present}

    def _asset_dir(self, asset_key: dg.AssetKey) -> Path:
        return Path(self.base_dir, *asset_key.path)


def _is_fan_in(context: dg.InputContext, keys: Sequence[str]) -> bool:
    """Whether the input gathers upstream partitions into a dict.

    Decided from the partitions definitions, not from how many partitions exist today, so a consumer sees
    one type however many models or cell types are registered: several partitions, an unpartitioned
    consumer, or a consumer with fewer dimensions than a multi-partitioned upstream (cell_type loading
    model x cell_type) are fan-ins.
    """
    if len(keys) > 1:
        return True
    consumer = _consumer_partitions_def(context)
    if consumer is None:
        return True
    upstream = context.asset_partitions_def
    return isinstance(upstream, dg.MultiPartitionsDefinition) and upstream != consumer


def _consumer_partitions_def(context: dg.InputContext) -> dg.PartitionsDefinition | None:
    """The loading asset's partitions definition.

    A partitioned run may also materialise unpartitioned assets, so the run's partition key alone does not
    tell; the step knows its asset. A context built by hand (tests) has no step: there a run partition key
    means the consumer shares the upstream's partitions.
    """
    try:
        assets_def = context.step_context.assets_def
    except dg.DagsterInvariantViolationError:
        return context.asset_partitions_def if context.has_partition_key else None
    return assets_def.partitions_def if assets_def is not None else None


def _partition_stem(partition_key: str) -> str:
    stem = str(partition_key).replace("|", "__")
    if not _PARTITION_STEM.fullmatch(stem):
        raise ValueError(
            f"partition key {partition_key!r} cannot name a file: sanitise keys to [A-Za-z0-9._-] "
            "(not starting with '.') where the partitions are defined"
        )
    return stem


def _suffix_for(obj: Any) -> str:
    if isinstance(obj, pd.DataFrame):
        return "parquet"
    # An AnnData value means anndata is already imported; this spares every other output its import time.
    anndata = sys.modules.get("anndata")
    if anndata is not None and isinstance(obj, anndata.AnnData):
        return "h5ad"
    for tag, cls in _NPZ_TYPES.items():
        if type(obj) is cls:
            return f"{tag}.npz"
    if isinstance(obj, (dict, list)):
        return "json"
    hint = (
        f"register it with register_npz_type(tag, {type(obj).__qualname__})"
        if hasattr(obj, "save") and hasattr(type(obj), "load")
        else "return a DataFrame, AnnData, a registered npz type, a dict or a list"
    )
    raise TypeError(f"AtomicFilesystemIOManager cannot store a {type(obj).__qualname__}: {hint}")


def _write(obj: Any, path: Path) -> None:
    suffix = _suffix_of(path.name)
    if suffix == "parquet":
        obj.to_parquet(path, engine="pyarrow")
    elif suffix == "h5ad":
        obj.write_h5ad(path)
    elif suffix == "json":
        path.write_text(json.dumps(obj))
    else:
        obj.save(path)
        if not path.is_file():
            raise RuntimeError(f"{type(obj).__qualname__}.save({path}) did not write that path")


def _read(path: Path) -> Any:
    suffix = _suffix_of(path.name)
    if suffix == "parquet":
        return pd.read_parquet(path, engine="pyarrow")
    if suffix == "h5ad":
        import anndata

        return anndata.read_h5ad(path)
    if suffix == "json":
        return json.loads(path.read_text())
    tag = suffix.removesuffix(".npz")
    if tag not in _NPZ_TYPES:
        raise TypeError(
            f"{path} holds npz type {tag!r}, which is not registered; call register_npz_type({tag!r}, cls) "
            f"before loading (registered: {sorted(_NPZ_TYPES)})"
        )
    return _NPZ_TYPES[tag].load(path)


def _suffix_of(file_name: str) -> str:
    """'parquet', 'h5ad', 'json' or '<tag>.npz' if the name is a stored asset file, else ''."""
    parts = file_name.split(".")
    if len(parts) >= 3 and parts[-1] == "npz" and _NPZ_TAG.fullmatch(parts[-2]):
        return f"{parts[-2]}.npz"
    if len(parts) >= 2 and parts[-1] in _SINGLE_SUFFIXES:
        return parts[-1]
    return ""


def _stored_files(directory: Path) -> dict[str, list[Path]]:
    """Stored files by partition stem; staging folders and foreign files are ignored."""
    stored: dict[str, list[Path]] = {}
    if not directory.is_dir():
        return stored
    for entry in directory.iterdir():
        suffix = _suffix_of(entry.name)
        if suffix and entry.is_file():
            stored.setdefault(entry.name[: -len(suffix) - 1], []).append(entry)
    return stored


def _single_file(stored: dict[str, list[Path]], stem: str, directory: Path) -> Path:
    matches = stored.get(stem, [])
    if len(matches) != 1:
        found = "nothing" if not matches else sorted(match.name for match in matches)
        raise FileNotFoundError(
            f"expected exactly one file for partition {stem!r} in {directory}, found {found}; "
            "materialise the upstream asset (or remove the extra file)"
        )
    return matches[0]


    return True
