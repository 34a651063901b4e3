"""`make ui` as a user gets it: `scinterp ui` (Dagster webserver and daemon) on 127.0.0.1, queried over GraphQL,
then stopped with SIGTERM."""

import signal
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef

from scinterp_assets.cli import INSTANCE_SETTINGS
from scinterp_assets.definitions import build_definitions
from scinterp_assets_tests.conftest import SMALL_PROJECT, write_project
from scinterp_assets_tests.ui_server import serve_ui

pytestmark = pytest.mark.slow


# synthetic_b is smaller than contracts.min_cells, synthetic_a larger: one passing and one failing partition
UI_PROJECT = SMALL_PROJECT.replace("    cells_per_perturbation: 40\n", "    cells_per_perturbation: 20\n", 2).replace(
    "    cells_per_perturbation: 20\n", "    cells_per_perturbation: 40\n", 1) + "contracts: {min_cells: 1000}\n"


def test_dagster_dev_serves_the_graph_partitions_and_checks(tmp_path):
    project = write_project(tmp_path / "project", UI_PROJECT)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(INSTANCE_SETTINGS))
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        job = build_definitions(project).resolve_job_def("cell_type_job")
        for cell_type in ("synthetic_a", "synthetic_b"):
            job.execute_in_process(instance=instance, partition_key=cell_type, raise_on_error=False,
                                   asset_selection=[dg.AssetKey("screen_data")])
    with serve_ui(project.source, home) as served:
        nodes = served.graphql("""{ assetNodes { assetKey { path }
            partitionDefinition { dimensionTypes { name } }
            assetChecksOrError { ... on AssetChecks { checks { name } } } } }""")["assetNodes"]
        by_key = {node["assetKey"]["path"][-1]: node for node in nodes}
        assert {"screen_data", "attention_scores", "test_registry", "evaluation_report", "qc_verdict"} <= set(by_key)
        dimensions = {d["name"] for d in by_key["attention_scores"]["partitionDefinition"]["dimensionTypes"]}
        assert dimensions == {"model", "cell_type"}
        assert [c["name"] for c in by_key["screen_data"]["assetChecksOrError"]["checks"]] == ["check_expression_qc_contract"]
        # each check result is recorded against the partition it checked
        checks = served.graphql("""{ assetNodes(assetKeys: [{path: ["screen_data"]}]) { assetChecksOrError {
            ... on AssetChecks { checks { name partitionStatuses {
                ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions } } } } } } }""")
        (check,) = checks["assetNodes"][0]["assetChecksOrError"]["checks"]
        assert check["partitionStatuses"] == {"succeededPartitions": ["synthetic_a"], "failedPartitions": ["synthetic_b"]}
        statuses = served.graphql("{ instance { daemonHealth { allDaemonStatuses { daemonType required } } } }")
        daemons = {d["daemonType"] for d in statuses["instance"]["daemonHealth"]["allDaemonStatuses"]}
        assert "SENSOR" in daemons
        process = served.process
        process.send_signal(signal.SIGTERM)  # to `scinterp ui` alone, as a service manager would
        assert process.wait(timeout=60) == 0
        output = served.log.read_text()
        assert f"scinterp ui: http://127.0.0.1:{served.port}" in output and "dagster dev" not in output
        assert not _dagster_processes_serving(home)  # the webserver, the daemon and their code servers


def _dagster_processes_serving(home: Path) -> list[str]:
    """Command lines of the live processes whose environment names this DAGSTER_HOME."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"DAGSTER_HOME={home}".encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found
