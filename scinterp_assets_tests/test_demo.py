"""make demo's checkpoint step: a tiny checkpoint that would need longer than its configured cap fails loudly."""

import pytest

from scinterp_assets.core.models.training import TrainingTimeCapError
from scinterp_assets.demo import build_embedded_checkpoints
from scinterp_assets_tests.conftest import SMALL_PROJECT, write_project


def test_a_tiny_checkpoint_that_reaches_its_time_cap_fails_naming_the_setting(tmp_path):
    entry = "tiny-geneformer, max_steps: 60"
    config = write_project(tmp_path / "project", SMALL_PROJECT.replace(entry, f"{entry}, max_seconds: 1.0e-9"))
    expected = (r"tiny checkpoint 'tiny-geneformer': training reached its wall-clock cap max_seconds=1e-09 after 0 "
                r"of 60 steps .*tiny_checkpoints\[\]\.max_seconds in .*scinterp\.yaml")
    with pytest.raises(TrainingTimeCapError, match=expected):
        build_embedded_checkpoints(config, log=lambda _: None)
    assert not (config.checkpoint_dir / "tiny-geneformer").exists()


def test_the_demo_prints_a_line_per_step_with_its_time_and_the_progress_of_long_steps(small_project, capsys):
    import dagster as dg

    from scinterp_assets.definitions import build_definitions
    from scinterp_assets.demo import _run

    defs = build_definitions(small_project)
    with dg.instance_for_test() as instance:
        _run(defs, "reference_job", instance)
        _run(defs, "cell_type_job", instance, "synthetic_a")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["  reference_job", "    reference_networks: done in " + lines[1].split(" done in ")[1]]
    steps = [line.split(":")[0].strip() for line in lines if line.endswith(" s") and ": done in " in line]
    assert steps[-1] == "reference_null" and {"screen_data", "de_labels", "reference_edges"} <= set(steps)
    assert any(line.startswith("    reference_null: null draws: 1/1 (planted: 200 verified draws of ") for line in lines)
    assert lines[-1].startswith("  cell_type_job [synthetic_a]: ok in ")
    assert not any("DEBUG" in line or "STEP_START" in line for line in lines)  # not Dagster's own console
