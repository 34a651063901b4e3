"""Code versions: an asset's version changes with the configuration it reads and the code it runs, and with
nothing else."""

import dagster as dg

from scinterp_assets.definitions import build_definitions
from scinterp_assets.defs.versions import CONFIGURATION_READ, _reached
from scinterp_assets_tests.conftest import SMALL_PROJECT, write_project


def _versions(config) -> dict[str, str]:
    graph = build_definitions(config).resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()}


def test_every_asset_has_a_code_version_and_a_setting_marks_only_the_assets_that_read_it(tmp_path):
    before = _versions(write_project(tmp_path / "a"))
    assert all(before.values())
    after = _versions(write_project(tmp_path / "b", SMALL_PROJECT.replace("reference_null: {n_draws: 200}",
                                                                          "reference_null: {n_draws: 300}")))
    changed = {asset for asset in before if before[asset] != after[asset]}
    # reference_null reads that section; assets not in CONFIGURATION_READ write the configuration
    # fingerprint into their rows, so every setting changes them
    assert changed == {"reference_null"} | (set(before) - set(CONFIGURATION_READ))
    assert {"screen_data", "attention_scores", "reference_edges", "model_checkpoint"}.isdisjoint(changed)
    automation_only = _versions(write_project(tmp_path / "c", SMALL_PROJECT + "automation: {nightly_schedule: false}\n"))
    assert automation_only == before  # what runs by itself changes no result


def test_an_asset_runs_exactly_the_modules_its_function_reaches(small_project):
    defs = build_definitions(small_project)
    reached = _reached(defs.resolve_assets_def("reference_null").op.compute_fn.decorated_fn)[1]
    assert {"scinterp_assets.core.networks.reference_nulls", "scinterp_assets.core.networks.null",
            "scinterp_assets.defs.console"} <= reached
    assert "scinterp_assets.core.analyses.incremental_confirmatory" not in reached
    assert "scinterp_assets.config" not in reached  # configuration values enter through CONFIGURATION_READ
    battery = _reached(defs.resolve_assets_def("reference_battery").op.compute_fn.decorated_fn)[1]
    assert "scinterp_assets.core.analyses.residualisation" in battery  # through reference_family
    # through a helper beside the asset (load_screen builds every kind of screen)
    helpers, modules = _reached(defs.resolve_assets_def("screen_data").op.compute_fn.decorated_fn)
    assert [helper.__name__ for helper in helpers] == ["screen_data", "load_screen"]
    assert {"scinterp_assets.core.datasets.synthetic", "scinterp_assets.core.datasets.tenx"} <= modules
    # through an import inside a method (ModelStore.load imports the loaders when called)
    extraction = _reached(defs.resolve_assets_def("attention_scores").op.compute_fn.decorated_fn)[1]
    assert {"scinterp_assets.resources.model_store", "scinterp_assets.core.models.scgpt"} <= extraction


def test_code_versions_are_the_same_in_every_process(small_project):
    """The daemon, the webserver and each run compute them apart: a version that changed with the process's
    string-hash seed would mark everything stale and change every data version."""
    import json
    import os
    import subprocess
    import sys

    script = ("import json, sys; from scinterp_assets.config import load_config; "
              "from scinterp_assets.definitions import build_definitions; "
              "graph = build_definitions(load_config(sys.argv[1])).resolve_asset_graph(); "
              "print(json.dumps({key.to_user_string(): graph.get(key).code_version "
              "for key in graph.get_all_asset_keys()}))")
    versions = []
    for seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", script, str(small_project.source)], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        versions.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert versions[0] == versions[1] == _versions(small_project)
