"""Dagster code versions, so that the UI marks an asset stale exactly when what decides its value changed:
the part of the configuration it reads (`CONFIGURATION_READ`) or the source of the code its computation
runs (its own function and every scinterp module that function reaches, found by following the names it
uses). Data versions then follow from code versions and input data versions (Dagster's logical versions);
registry rows record the data versions of the inputs they were computed from (`input_data_versions`).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path

import dagster as dg

from scinterp_assets import __version__
from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.provenance import package_versions

PACKAGE = "scinterp_assets"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # scinterp_assets/
# the configuration is not code: its values enter through CONFIGURATION_READ
NOT_CODE = {f"{PACKAGE}.config"}
EVERYTHING = ("*",)  # the whole configuration (minus what changes no result: ScinterpConfig.fingerprint)
# Top-level configuration sections each asset reads. Registry rows and the summaries carry the configuration
# fingerprint (`registry_fields.code_version`), so their value changes with any setting.
CONFIGURATION_READ: dict[str, tuple[str, ...]] = {
    "screen_data": ("cell_types",),
    "control_cells": ("preprocessing", "seeds"),
    "gene_universe": ("preprocessing",),
    "de_labels": ("de_labels", "preprocessing", "cell_types"),
    "gene_features": (),
    "correlation_edges": ("contracts",),
    "reference_networks": ("references",),
    "reference_edges": ("cell_types", "references", "reference_restriction", "contracts"),
    "reference_evaluability": ("cell_types", "references", "reference_restriction", "contracts"),
    "reference_null": ("reference_null", "seeds"),
    "attention_sources": ("attention",),
    "model_checkpoint": (),
    "attention_scores": ("attention", "seeds", "contracts", "scaling"),
    "value_weighted_scores": ("attention", "seeds", "contracts", "scaling"),
    "grouped_attention": ("attention", "seeds", "contracts", "scaling"),
    "cell_embeddings": ("attention", "seeds"),
    "cell_strata": ("attention", "seeds", "scaling", "cell_types"),
    "attention_edges": ("contracts",),
    "perturbation_auroc": ("de_labels", "contracts"),
}


def with_code_versions(assets: Iterable[dg.AssetsDefinition], config: ScinterpConfig) -> list[dg.AssetsDefinition]:
    """The assets with a code version on every spec: hash of the package version, the configuration each
    reads and the source its compute function reaches."""
    versioned = []
    for assets_def in assets:
        source = code_source_digest(assets_def.op.compute_fn.decorated_fn)
        versioned.append(assets_def.map_asset_specs(
            lambda spec, source=source: spec.replace_attributes(
                code_version=text_digest(__version__, source, _configuration_read(config, spec.key.to_user_string())))))
    return versioned


def static_provenance(config: ScinterpConfig) -> dict:
    """What every output's `provenance` metadata starts with (the IO manager adds its code version, file
    sha256 and checkpoint): the configuration's fingerprint and file, the seeds, the result packages' versions."""
    return {"config_fingerprint": config.fingerprint(), "configuration": str(config.source),
            "seeds": config.seeds.model_dump(), "packages": package_versions()}


def input_data_versions(context: dg.AssetExecutionContext) -> str:
    """JSON {input asset: data version of the partition this run read} of the running asset's inputs."""
    versions = {}
    for key in sorted(context.assets_def.dependency_keys, key=lambda key: key.to_user_string()):
        partition = _input_partition(context, key)
        record = context.instance.get_latest_data_version_record(key, partition_key=partition)
        tags = record.asset_materialization.tags if record is not None and record.asset_materialization else {}
        versions[key.to_user_string()] = tags.get("dagster/data_version")
    return json.dumps(versions, sort_keys=True)


def code_source_digest(function: Callable) -> str:
    """sha256 of the source the function runs: its own, that of the helpers beside it that it calls (and
    theirs), and every package module they reach, so an edit anywhere in that code changes the version."""
    helpers, modules = _reached(function)
    # in a fixed order: the walk visits sets of names, whose order changes with each process's hash seed
    parts = [inspect.getsource(helper) for helper in sorted(helpers, key=lambda helper: helper.__qualname__)]
    parts += [_module_file(name).read_text() for name in sorted(modules)]
    return text_digest(*parts)


def _reached(function: Callable) -> tuple[list[Callable], set[str]]:
    """(the function and the same-module functions and classes it reaches, in order found; the package
    modules, except the configuration, that any of them or any reached module names, transitively).

    Followed: global names, annotations and closures of functions (nested code included), imports inside
    functions (`from package.module import name` in a body), and every import statement in the source of a
    reached module, read from its file: what is reached does not depend on what this process happened to
    import."""
    home = function.__module__
    helpers: list[Callable] = []
    modules: set[str] = set()
    pending_objects: list = [function]
    pending_modules: list[str] = []
    while pending_objects or pending_modules:
        if pending_objects:
            value = pending_objects.pop()
            if any(value is helper for helper in helpers):
                continue
            helpers.append(value)
            for name in sorted(_names_used(value)):
                if _module_file(name) is not None:  # an import inside a body
                    pending_modules.append(name)
                    continue
                named = getattr(value, "__globals__", vars(sys.modules[home])).get(name)
                if _is_local_code(named, home):
                    pending_objects.append(named)
                elif _module_of(named):
                    pending_modules.append(_module_of(named))
            for annotated in _annotation_types(value):  # resources and inputs it is given (ModelStore, ...)
                if _module_of(annotated):
                    pending_modules.append(_module_of(annotated))
            for cell in getattr(value, "__closure__", None) or ():
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if _is_local_code(contents, home):
                    pending_objects.append(contents)
        else:
            name = pending_modules.pop()
            if name in modules or name in NOT_CODE or name == home:
                continue
            modules.add(name)
            pending_modules += _imports_in_source(name)
    return helpers, modules


def _module_file(name: str) -> Path | None:
    """The source file of package module `name`, found on disk without importing anything; None when `name`
    is not a package module (e.g. a function imported from one)."""
    if not name.startswith(f"{PACKAGE}."):
        return None
    base = PACKAGE_ROOT.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports_in_source(name: str) -> list[str]:
    """The package modules a module's source imports anywhere (top level or inside functions): `import a.b`,
    `from a.b import c` (a.b, and a.b.c when that is a module)."""
    imported = []
    for node in ast.walk(ast.parse(_module_file(name).read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.append(node.module)
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
    return sorted({module for module in imported if _module_file(module) is not None})


def _annotation_types(value) -> Iterable:
    """The types a function's annotations name, inside generics too (dg.ResourceParam[ModelStore])."""
    pending = list(getattr(value, "__annotations__", {}).values()) if inspect.isfunction(value) else []
    while pending:
        annotation = pending.pop()
        yield annotation
        pending += list(typing.get_args(annotation))


def _is_local_code(value, module: str) -> bool:
    return (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module


def _names_used(value) -> set[str]:
    """Global names (and dotted module names of imports) in a function's code, nested code included; for a
    class, in its methods'."""
    if inspect.isclass(value):
        return set().union(*(_names_used(member) for member in vars(value).values() if inspect.isfunction(member)))
    code = getattr(value, "__code__", None)
    return set() if code is None else _code_names(code)


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):  # nested functions and comprehensions
            names |= _code_names(constant)
    return names


def _module_of(value) -> str | None:
    name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
    return name if isinstance(name, str) and name.startswith(f"{PACKAGE}.") else None


def _configuration_read(config: ScinterpConfig, asset: str) -> str:
    sections = CONFIGURATION_READ.get(asset, EVERYTHING)
    if sections == EVERYTHING:
        return config.fingerprint()
    dumped = config.model_dump(mode="json")
    return json.dumps({section: dumped[section] for section in sections}, sort_keys=True)


def _input_partition(context: dg.AssetExecutionContext, key: dg.AssetKey) -> str | None:
    upstream = context.job_def.asset_layer.asset_graph.get(key).partitions_def
    return partition_read(upstream, context.partition_key if context.has_partition_key else None)


def partition_read(upstream: dg.PartitionsDefinition | None, partition: str | None) -> str | None:
    """The partition of an input (partitioned by `upstream`) that a step of partition `partition` reads: the
    same key, the matching dimension of a model x cell type key (a cell type or a model asset), or None for
    an unpartitioned input."""
    if upstream is None or partition is None:
        return None
    if isinstance(upstream, dg.MultiPartitionsDefinition) or not isinstance(partition, dg.MultiPartitionKey):
        return str(partition)
    dimension = "model" if isinstance(upstream, dg.DynamicPartitionsDefinition) else "cell_type"
    return partition.keys_by_dimension[dimension]


def text_digest(*parts: str) -> str:
    """Short sha256 of the parts, each ended by a NUL (so ("ab", "c") and ("a", "bc") differ)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
