import dagster as dg

from scinterp_assets.definitions import build_definitions


def _checkpoint(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")


def test_new_checkpoints_register_partitions_and_request_every_cell_type(small_project, instance):
    _checkpoint(small_project.checkpoint_dir / "Geneformer V1 (10M)")
    _checkpoint(small_project.checkpoint_dir / "tiny")
    defs = build_definitions(small_project)
    sensor = defs.resolve_sensor_def("checkpoint_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        result = sensor(context)
    cursor = result.cursor
    (request,) = result.dynamic_partitions_requests
    assert sorted(request.partition_keys) == ["Geneformer-V1-10M", "tiny"]
    evaluation = [r for r in result.run_requests if r.job_name == "model_evaluation_job"]
    assert sorted(r.partition_key for r in evaluation) == [
        "synthetic_a|Geneformer-V1-10M", "synthetic_a|tiny", "synthetic_b|Geneformer-V1-10M", "synthetic_b|tiny"]
    assert len({r.run_key for r in result.run_requests}) == len(result.run_requests)

    instance.add_dynamic_partitions("model", list(request.partition_keys))
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        again = sensor(context)
    cursor = again.cursor
    assert again.run_requests == [] and again.dynamic_partitions_requests == []

    # overwriting one checkpoint re-runs only that model, without re-adding its partition
    (small_project.checkpoint_dir / "tiny" / "config.json").write_text('{"retrained": true}')
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        changed = sensor(context)
    assert {r.partition_key for r in changed.run_requests} == {"tiny", "synthetic_a|tiny", "synthetic_b|tiny"}
    assert changed.dynamic_partitions_requests == []


def test_nightly_schedule_requests_missing_partitions(small_project, instance):
    defs = build_definitions(small_project)
    instance.add_dynamic_partitions("model", ["m1"])
    schedule = defs.resolve_schedule_def("nightly_stale_partitions")
    with dg.build_schedule_context(instance=instance) as context:
        requests = list(schedule(context))
    assert [r.partition_key for r in requests] == ["synthetic_a|m1", "synthetic_b|m1"]
