"""Registry rows of a model x cell type partition: the fields every analysis shares, and test ids made
unique framework-wide."""

import dagster as dg
import pandas as pd

from scinterp_assets import __version__
from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.stats.registry import registry_rows
from scinterp_assets.defs.partitions import model_and_cell_type
from scinterp_assets.defs.versions import input_data_versions
from scinterp_assets.resources.model_store import RANDOM_WEIGHTS_SUFFIX, ModelStore


def code_version(project: ScinterpConfig) -> str:
    """Package version + configuration fingerprint, written into every registry row."""
    return f"{__version__}+{project.fingerprint()}"


def shared_registry_fields(context: dg.AssetExecutionContext, project: ScinterpConfig, model_store: ModelStore,
                           universe_size: int) -> dict:
    model_key, cell_type = model_and_cell_type(context)
    return {
        "model": model_key,
        "checkpoint": model_store.resolve(model_key).fingerprint,
        "cell_type": cell_type,
        "modality": project.cell_types[cell_type].modality,
        "universe_size": universe_size,
        "code_version": code_version(project),
        "input_data_versions": input_data_versions(context),
    }


TWIN_NOTE = "random-weights twin: an untrained reference, outside the confirmatory family"


def registry_table(context: dg.AssetExecutionContext, rows: list[dict], **shared) -> pd.DataFrame:
    """Registry rows with test ids qualified by the model and cell type ("model|cell_type|A01:..."). A
    random-weights twin's rows are references, never confirmatory: its tests stay out of the framework-wide BH
    family and the headline counts, and say why."""
    model_key, cell_type = model_and_cell_type(context)
    qualified = [{**row, "test_id": f"{model_key}|{cell_type}|{row['test_id']}"} for row in rows]
    if model_key.endswith(RANDOM_WEIGHTS_SUFFIX):
        qualified = [{**row, "confirmatory": False, "note": "; ".join(filter(None, [row.get("note"), TWIN_NOTE]))}
                     for row in qualified]
    return registry_rows(qualified, **shared)
