"""Jobs, the checkpoint sensor and the nightly schedule."""


import json

import dagster as dg

from scinterp_assets.resources.model_store import COMPLETION_MARKER, RANDOM_WEIGHTS_SUFFIX, ModelStore

MODEL_EVALUATION_GROUP = "model_evaluation"
SUMMARY_GROUP, VERDICT_GROUP, REPORT_GROUP = "summary", "verdict", "report"  # automated, in this order
# Fan-in summaries re-run when any upstream partition updates, even while other partitions are still missing.
SUMMARY_AUTOMATION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def model_evaluation_job(multi_partitions: dg.MultiPartitionsDefinition):
    return dg.define_asset_job(
        "model_evaluation_job",
        selection=dg.AssetSelection.groups(MODEL_EVALUATION_GROUP) - dg.AssetSelection.assets("model_checkpoint"),
        partitions_def=multi_partitions,
    )


def checkpoint_job():
    return dg.define_asset_job("checkpoint_job", selection=dg.AssetSelection.assets("model_checkpoint"))


def cell_type_job(partitions: dg.PartitionsDefinition):
    return dg.define_asset_job("cell_type_job", selection=dg.AssetSelection.groups("cell_type_data"),
                               partitions_def=partitions)


def registered_fingerprint(instance: dg.DagsterInstance, model_key: str) -> str | None:
    """Fingerprint (data version) of the latest model_checkpoint materialisation of a model, if any.

    Checked besides the sensor cursor so that checkpoints materialised outside the sensor (make demo,
    a manual run in the UI) are not evaluated a second time."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_checkpoint"), asset_partitions=[model_key]), limit=1
    )
    if not result.records:
        return None
    return result.records[0].asset_materialization.tags.get("dagster/data_version")


def reference_job():
    return dg.define_asset_job("reference_job", selection=dg.AssetSelection.groups("references"))


def summary_job():
    return dg.define_asset_job("summary_job", selection=dg.AssetSelection.groups(SUMMARY_GROUP))


def verdict_job(multi_partitions: dg.MultiPartitionsDefinition):
    return dg.define_asset_job("verdict_job", selection=dg.AssetSelection.groups(VERDICT_GROUP),
                               partitions_def=multi_partitions)


def report_job():
    return dg.define_asset_job("report_job", selection=dg.AssetSelection.groups(REPORT_GROUP))


def make_checkpoint_sensor(model_store: ModelStore, cell_types: list[str], evaluation_job, registration_job,
                           quiet_seconds: float):
    """Watch the checkpoint directory: a new folder (or a new fingerprint of a known one) registers the model
    partition and requests its evaluation for every cell type, once the folder has been quiet for
    `quiet_seconds` or holds the completion marker (`ModelStore.ready_checkpoints`; the tick says which
    folders are still settling); each checkpoint's random-weights twin with it where twins are on, and the
    twins' partitions unregistered once they are turned off. The cursor holds {key: fingerprint}; run keys carry the fingerprint, so a
    tick never requests the same work twice."""

    @dg.sensor(name="checkpoint_sensor", jobs=[evaluation_job, registration_job], minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING)
    def checkpoint_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        ready, settling = model_store.ready_checkpoints(quiet_seconds)
        waiting = ", ".join(f"{key} (changed {seconds:.0f} s ago)" for key, seconds in settling.items())
        if waiting:
            context.log.info(f"not registered yet, still being written: {waiting}; registered once quiet for "
                             f"{quiet_seconds:g} s or when the folder holds {COMPLETION_MARKER}")
        current = {key: checkpoint.fingerprint for key, checkpoint in ready.items()}
        changed = sorted(
            key for key, fingerprint in current.items()
            if seen.get(key) != fingerprint and registered_fingerprint(context.instance, key) != fingerprint
        )
        new_keys = [key for key in changed if not context.instance.has_dynamic_partition("model", key)]
        run_requests = []
        for key in changed:
            run_requests.append(dg.RunRequest(run_key=f"{key}:{current[key]}", job_name=registration_job.name,
                                              partition_key=key))
            for cell_type in cell_types:
                run_requests.append(dg.RunRequest(
                    run_key=f"{key}:{current[key]}:{cell_type}",
                    job_name=evaluation_job.name,
                    partition_key=dg.MultiPartitionKey({"model": key, "cell_type": cell_type}),
                ))
        partition_requests = [dg.AddDynamicPartitionsRequest("model", new_keys)] if new_keys else []
        if model_store.random_weights_seed is None:  # twins turned off: their partitions are no longer evaluated
            twins = [key for key in context.instance.get_dynamic_partitions("model") if key.endswith(RANDOM_WEIGHTS_SUFFIX)]
            if twins:
                context.log.info(f"random-weights twins are off: unregistering {', '.join(twins)}")
                partition_requests.append(dg.DeleteDynamicPartitionsRequest("model", twins))
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=partition_requests,
            # settling folders keep their last registered fingerprint, so they count as changed once ready
            cursor=json.dumps({**{key: seen[key] for key in settling if key in seen}, **current}, sort_keys=True),
            skip_reason=None if run_requests else (f"still being written: {waiting}" if waiting else "no new checkpoint"),
        )

    return checkpoint_sensor


def make_stale_partition_schedule(evaluation_job, cell_types: list[str], running: bool):
    """Nightly: request the evaluation of every registered model x cell type that has no report rows yet
    (a partition that failed, or one added while the sensor was off). `running`: on when the daemon starts."""

    @dg.schedule(name="nightly_stale_partitions", cron_schedule="0 2 * * *", job=evaluation_job,
                 default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED)
    def nightly_stale_partitions(context: dg.ScheduleEvaluationContext):
        done = context.instance.get_materialized_partitions(dg.AssetKey("perturbation_prediction"))
        for model in sorted(context.instance.get_dynamic_partitions("model")):
            for cell_type in cell_types:
                key = dg.MultiPartitionKey({"model": model, "cell_type": cell_type})
                if key not in done:
                    yield dg.RunRequest(run_key=None, partition_key=key)

    return nightly_stale_partitions
