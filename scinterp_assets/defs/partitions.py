"""Partition definitions: `model` (dynamic, one key per registered checkpoint) x `cell_type` (static)."""


import dagster as dg

from scinterp_assets.config import ScinterpConfig

MODEL_PARTITIONS = dg.DynamicPartitionsDefinition(name="model")


def cell_type_partitions(config: ScinterpConfig) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(config.cell_types))


def model_cell_type_partitions(config: ScinterpConfig) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({"model": MODEL_PARTITIONS, "cell_type": cell_type_partitions(config)})


def model_and_cell_type(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["model"], keys["cell_type"]
