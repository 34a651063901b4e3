"""Partition definitions: `model` (dynamic, one key per registered checkpoint) x `cell_type` (static)."""


import dagster as dg

from scinterp_assets.config import ScinterpConfig

MODEL_PARTITIONS = dg.DynamicPartitionsDefinition(name="model")


def cell_type_partitions(config: ScinterpConfig) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(config.cell_types))


def model_cell_type_partitions(config: ScinterpConfig) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({"model": MODEL_PARTITIONS, "cell_type": cell_type_partitions(config)})


def registered_model_cell_type_keys(instance: dg.DagsterInstance, config: ScinterpConfig) -> list[str]:
    """Every registered model x configured cell type, as the keys a fan-in input is keyed by
    ("cell_type|model": multi-partition keys join their dimensions sorted by name)."""
    return sorted(
        str(dg.MultiPartitionKey({"model": model, "cell_type": cell_type}))
        for model in instance.get_dynamic_partitions(MODEL_PARTITIONS.name)
        for cell_type in config.cell_types
    )


def model_and_cell_type(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["model"], keys["cell_type"]
