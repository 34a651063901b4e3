"""The scale-out deployment, validated without a cluster: deploy/dagster.yaml (PostgreSQL storage, the
Kubernetes run launcher, a queued run coordinator) against the schemas of Dagster and of its pinned
integration libraries, and the code location with `deployment.executor: k8s` (each step a Kubernetes job, a
GPU for every step that runs a model)."""

from pathlib import Path

import dagster as dg
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config

from scinterp_assets.definitions import MODEL_STEPS, build_definitions
from scinterp_assets_tests.conftest import SMALL_PROJECT, write_project

DEPLOY = Path(__file__).parents[1] / "deploy"
ENVIRONMENT = {"DAGSTER_PG_HOST": "postgres", "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "secret",
               "DAGSTER_PG_DB": "dagster", "SCINTERP_K8S_NAMESPACE": "scinterp", "SCINTERP_IMAGE": "scinterp:1"}


def test_the_cluster_instance_file_validates_against_dagster_and_its_integration_libraries(monkeypatch):
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import DagsterPostgresStorage

    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    settings, _ = dagster_instance_config(str(DEPLOY))  # Dagster's own instance schema, env vars resolved
    assert settings["run_launcher"]["class"] == "K8sRunLauncher"
    raw = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    launcher = process_config(K8sRunLauncher.config_type(), raw["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    storage = process_config(DagsterPostgresStorage.config_type(), raw["storage"]["postgres"])
    assert storage.success, storage.errors
    assert storage.value["postgres_db"]["hostname"] == "postgres"  # read from the environment


def test_a_missing_setting_of_the_environment_is_named(monkeypatch):
    from dagster_postgres import DagsterPostgresStorage

    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
    raw = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    storage = process_config(DagsterPostgresStorage.config_type(), raw["storage"]["postgres"])
    assert not storage.success and "DAGSTER_PG_HOST" in str(storage.errors)


def test_the_k8s_executor_runs_each_step_as_a_job_and_gives_model_steps_a_gpu(tmp_path):
    config = write_project(tmp_path / "project", SMALL_PROJECT + "deployment: {executor: k8s, max_concurrent: 8}\n")
    defs = build_definitions(config)
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("model_evaluation_job")
    assert job.executor_def.name == "k8s"
    assert set(MODEL_STEPS) <= set(job.graph.node_dict)  # the step keys the GPU requests name exist
    resolved = dg.validate_run_config(job, {})
    executor = resolved["execution"]["k8s"]
    assert executor["max_concurrent"] == 8
    for step in MODEL_STEPS:
        limits = executor["per_step_k8s_config"][step]["container_config"]["resources"]["limits"]
        assert limits == {"nvidia.com/gpu": 1}
    # changing how runs execute changes no result: no code version moves
    local = build_definitions(write_project(tmp_path / "local", SMALL_PROJECT))
    graph, local_graph = defs.resolve_asset_graph(), local.resolve_asset_graph()
    assert {key: graph.get(key).code_version for key in graph.get_all_asset_keys()} == {
        key: local_graph.get(key).code_version for key in local_graph.get_all_asset_keys()}
