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
