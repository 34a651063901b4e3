import os

import dagster as dg

from scinterp_assets.definitions import build_definitions
from scinterp_assets.resources.model_store import COMPLETION_MARKER


def _checkpoint(folder, *, complete=True):
    """A checkpoint folder as a finished writer leaves it (with the completion marker) or as a copy in
    progress leaves it (without)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if complete:
        (folder / COMPLETION_MARKER).touch()


def _tick(defs, instance, cursor=None):
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        return defs.resolve_sensor_def("checkpoint_sensor")(context)


def _age(folder, seconds):
    """Move every modification time of the folder and its files `seconds` into the past."""
    for path in [folder, *folder.rglob("*")]:
        stat = path.stat()
        os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


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
    (small_project.checkpoint_dir / "tiny" / COMPLETION_MARKER).touch()  # the writer says it has finished
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


def test_a_touch_that_keeps_the_bytes_requests_nothing(small_project, instance):
    _checkpoint(small_project.checkpoint_dir / "tiny")
    defs = build_definitions(small_project)
    first = _tick(defs, instance)
    instance.add_dynamic_partitions("model", ["tiny"])
    os.utime(small_project.checkpoint_dir / "tiny" / "config.json")  # new mtime, same bytes
    again = _tick(defs, instance, first.cursor)
    assert again.run_requests == []  # settling again (the touch came after the marker), or ready and unchanged
    _age(small_project.checkpoint_dir / "tiny", small_project.automation.checkpoint_quiet_seconds)
    quiet = _tick(defs, instance, again.cursor)  # quiet again: fingerprinted, same bytes, nothing to do
    assert quiet.run_requests == [] and quiet.skip_reason.skip_message == "no new checkpoint"


def test_a_folder_still_being_written_is_registered_only_once_it_is_quiet(small_project, instance):
    quiet = small_project.automation.checkpoint_quiet_seconds
    assert quiet > 0  # the default waits
    folder = small_project.checkpoint_dir / "copying"
    _checkpoint(folder, complete=False)
    defs = build_definitions(small_project)
    waiting = _tick(defs, instance)
    assert waiting.run_requests == [] and waiting.dynamic_partitions_requests == []
    assert waiting.skip_reason.skip_message.startswith("still being written: copying (changed ")
    (folder / "model.safetensors").write_bytes(b"more weights")  # the copy goes on
    _age(folder, quiet / 2)
    assert _tick(defs, instance, waiting.cursor).run_requests == []
    _age(folder, quiet)  # nothing changed for longer than the quiet period
    ready = _tick(defs, instance, waiting.cursor)
    assert {r.partition_key for r in ready.run_requests} == {"copying", "synthetic_a|copying", "synthetic_b|copying"}
    # a finished writer says so with the marker and is registered at once
    _checkpoint(small_project.checkpoint_dir / "finished")
    registered = _tick(defs, instance, ready.cursor)
    assert {r.partition_key for r in registered.run_requests} == {
        "finished", "synthetic_a|finished", "synthetic_b|finished"}
    # a marker older than the files copied since vouches for nothing: the new copy waits for quiet
    _age(small_project.checkpoint_dir / "finished", quiet)
    (small_project.checkpoint_dir / "finished" / "model.safetensors").write_bytes(b"new weights, still copying")
    assert _tick(defs, instance, registered.cursor).run_requests == []


def test_twins_are_registered_with_their_checkpoint_and_unregistered_when_turned_off(tmp_path, instance):
    from scinterp_assets_tests.conftest import SMALL_PROJECT, write_project

    with_twins = write_project(tmp_path / "on", SMALL_PROJECT.replace("random_weights_twins: false",
                                                                      "random_weights_twins: true"))
    _checkpoint(with_twins.checkpoint_dir / "tiny")
    result = _tick(build_definitions(with_twins), instance)
    (request,) = result.dynamic_partitions_requests
    assert sorted(request.partition_keys) == ["tiny", "tiny.random-weights"]
    assert sorted(r.partition_key for r in result.run_requests if r.job_name == "model_evaluation_job") == [
        "synthetic_a|tiny", "synthetic_a|tiny.random-weights", "synthetic_b|tiny", "synthetic_b|tiny.random-weights"]
    instance.add_dynamic_partitions("model", list(request.partition_keys))
    # the same project with twins off: the twin is unregistered, nothing is re-run, and the results of the
    # trained model keep their code version (the setting is not part of the configuration fingerprint)
    without = write_project(tmp_path / "on", SMALL_PROJECT.replace("checkpoints\n", "checkpoints\n", 1))
    assert without.fingerprint() == with_twins.fingerprint()
    off = _tick(build_definitions(without), instance, cursor=result.cursor)
    assert off.run_requests == []
    (delete,) = off.dynamic_partitions_requests
    assert isinstance(delete, dg.DeleteDynamicPartitionsRequest) and list(delete.partition_keys) == ["tiny.random-weights"]
