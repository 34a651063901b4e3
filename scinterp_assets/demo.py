"""`make demo`: build the embedded default and materialise every asset into the Dagster instance.

Steps: simulate the synthetic cell types and train the tiny Geneformer- and scGPT-format checkpoints when
they are missing (written into the checkpoint directory like any user checkpoint); let the checkpoint sensor
register the models; run the cell-type job, the checkpoint job, the model-evaluation job for every
model x cell type, and the summary job; print where the report and the test registry are.
Runs are recorded in DAGSTER_HOME, so `make ui` shows them with their checks and lineage.
"""

from __future__ import annotations

import sys
import time

import dagster as dg

from scinterp_assets.config import ScinterpConfig, SyntheticCellType, get_config
from scinterp_assets.core.models.positive_control import PositiveControlSpec, build_positive_control
from scinterp_assets.core.models.pretrain import TinyGeneformerSpec, train_tiny_geneformer
from scinterp_assets.core.models.scgpt_pretrain import TinyScGPTSpec, train_tiny_scgpt
from scinterp_assets.core.models.training import TrainingTimeCapError
from scinterp_assets.definitions import build_definitions, model_store_of
from scinterp_assets.defs.cell_type_assets import load_screen
from scinterp_assets.resources.model_store import COMPLETION_MARKER


def build_embedded_checkpoints(config: ScinterpConfig, log=print) -> None:
    """Train each configured tiny checkpoint on the synthetic cell types, and build the positive control
    from their planted networks, unless its folder exists."""
    missing = [tiny for tiny in config.tiny_checkpoints if not (config.checkpoint_dir / tiny.folder_name).exists()]
    control = config.positive_control
    control_missing = control is not None and not (config.checkpoint_dir / control.folder_name).exists()
    if not missing and not control_missing:
        return
    screens = [load_screen(cell_type) for cell_type in config.cell_types.values()
               if isinstance(cell_type, SyntheticCellType)]
    if not screens:
        log("no synthetic cell type configured: the tiny checkpoints and the positive control are not built")
        return
    if control_missing:
        target = config.checkpoint_dir / control.folder_name
        log(f"building the positive-control checkpoint into {target} (weights set from the planted networks)")
        build_positive_control(screens, target, PositiveControlSpec(
            edge_logit=control.edge_logit, context_norm=control.context_norm, seed=control.seed))
        (target / COMPLETION_MARKER).touch()
    for tiny in missing:
        target = config.checkpoint_dir / tiny.folder_name
        log(f"training the tiny {tiny.family} checkpoint into {target} ({tiny.max_steps} steps)")
        try:
            if tiny.family == "geneformer":
                spec = TinyGeneformerSpec(max_steps=tiny.max_steps, max_seconds=tiny.max_seconds, seed=tiny.seed)
                train_tiny_geneformer(screens, target, spec, log=log)
            else:
                spec = TinyScGPTSpec(max_steps=tiny.max_steps, max_seconds=tiny.max_seconds, seed=tiny.seed)
                train_tiny_scgpt(screens, target, spec, log=log)
        except TrainingTimeCapError as error:
            raise TrainingTimeCapError(
                f"tiny checkpoint {tiny.folder_name!r}: {error}; the setting is tiny_checkpoints[].max_seconds "
                f"in {config.source} (null: no cap)"
            ) from error
        (target / COMPLETION_MARKER).touch()  # written whole: the sensor need not wait for it to settle


def _run(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance, partition_key=None) -> None:
    """Run one job, printing its name, a line per finished step and the progress of long steps
    (defs/console.py), then its total time."""
    started = time.perf_counter()
    label = f"{job_name} [{partition_key}]" if partition_key else job_name
    print(f"  {label}", flush=True)
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, partition_key=partition_key, raise_on_error=False,
        run_config={"loggers": {"step_console": {}}},
    )
    if not result.success:
        raise SystemExit(f"demo: {label} failed (run {result.run_id}); open `make ui` to inspect the run")
    print(f"  {label}: ok in {time.perf_counter() - started:.1f} s", flush=True)


def materialize_everything(config: ScinterpConfig, instance: dg.DagsterInstance) -> None:
    """Register checkpoints through the sensor, then run every job for every partition, in dependency order."""
    defs = build_definitions(config)
    sensor = defs.resolve_sensor_def("checkpoint_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        tick = sensor(context)
    for request in tick.dynamic_partitions_requests:
        if isinstance(request, dg.DeleteDynamicPartitionsRequest):
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
        else:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    # the checkpoints on disk now; a registered model whose folder was removed keeps its stored results
    models = sorted(model_store_of(config).checkpoints())  # random-weights twins included where configured
    print(f"models: {models}; cell types: {sorted(config.cell_types)}")
    _run(defs, "reference_job", instance)
    for cell_type in sorted(config.cell_types):
        _run(defs, "cell_type_job", instance, cell_type)
    for model in models:
        _run(defs, "checkpoint_job", instance, model)
        for cell_type in sorted(config.cell_types):
            _run(defs, "model_evaluation_job", instance,
                 dg.MultiPartitionKey({"model": model, "cell_type": cell_type}))
    _run(defs, "summary_job", instance)
    for model in models:
        for cell_type in sorted(config.cell_types):
            _run(defs, "verdict_job", instance, dg.MultiPartitionKey({"model": model, "cell_type": cell_type}))
    _run(defs, "report_job", instance)


def main() -> int:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one "Loading weights" bar per run drowns the demo's output
    started = time.perf_counter()
    config = get_config()
    build_embedded_checkpoints(config)
    materialize_everything(config, dg.DagsterInstance.get())
    storage = config.storage_dir
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    print(f"verdict: {storage / 'verdicts' / '__unpartitioned__.parquet'} (also {config.report_dir / 'verdicts.csv'})")
    print(f"report: {config.report_dir / 'report.html'} (Markdown: {config.report_dir / 'report.md'})")
    print(f"test registry: {storage / 'test_registry' / '__unpartitioned__.parquet'}")
    print("UI: make ui, then open http://127.0.0.1:3000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
