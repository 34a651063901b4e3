"""The code location: the only Definitions(...) of the project.

Configuration is read at load time (SCINTERP_CONFIG, else ./scinterp.yaml); a wrong file fails here with
a message naming the key and the fix.
"""


import json
import warnings

import dagster as dg

from scinterp_assets.config import ScinterpConfig, get_config
from scinterp_assets.core.attention.embeddings import CellEmbeddings
from scinterp_assets.core.attention.grouped import GroupedScores
from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.networks.reference_nulls import ReferenceNulls
from scinterp_assets.defs.analysis_assets import build_analysis_assets
from scinterp_assets.defs.automation import (
    REPORT_GROUP,
    SUMMARY_GROUP,
    VERDICT_GROUP,
    cell_type_job,
    checkpoint_job,
    make_checkpoint_sensor,
    make_stale_partition_schedule,
    model_evaluation_job,
    reference_job,
    report_job,
    summary_job,
    verdict_job,
)
from scinterp_assets.defs.cell_type_assets import build_cell_type_assets, build_reference_assets
from scinterp_assets.defs.console import step_console
from scinterp_assets.defs.intervention_assets import build_intervention_assets
from scinterp_assets.defs.model_assets import build_model_assets
from scinterp_assets.defs.scaling_assets import build_scaling_assets
from scinterp_assets.defs.partitions import cell_type_partitions, model_cell_type_partitions
from scinterp_assets.defs.summary_assets import build_summary_assets
from scinterp_assets.defs.verdict_assets import build_verdict_assets
from scinterp_assets.defs.versions import static_provenance, with_code_versions
from scinterp_assets.resources.contracts import ContractRunner
from scinterp_assets.resources.io_manager import AtomicFilesystemIOManager, register_npz_type
from scinterp_assets.resources.model_store import ModelStore

# Checks take their asset's partitions so each result is recorded against the partition it checked (a
# preview feature of Dagster 1.13, used as documented).
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

register_npz_type("attention_scores", AttentionScores)
register_npz_type("cell_embeddings", CellEmbeddings)
register_npz_type("grouped_attention", GroupedScores)
register_npz_type("reference_nulls", ReferenceNulls)


def model_store_of(config: ScinterpConfig) -> ModelStore:
    """The checkpoint directory as model partitions, with random-weights twins where configured."""
    return ModelStore(config.checkpoint_dir, config.model_dictionary_dir,
                      config.seeds.random_weights if config.random_weights_twins else None)


# the steps that load a checkpoint and run it: on a cluster, the ones that ask for a GPU
MODEL_STEPS = ("attention_extraction", "cell_embeddings", "causal_interventions")


def executor_of(config: ScinterpConfig) -> dg.ExecutorDefinition:
    """The executor the `deployment` section asks for (README "Scaling out"). On one machine the default runs a
    whole run in one process, so Great Expectations and torch are imported once, not once per step."""
    deployment = config.deployment
    if deployment.executor == "in_process":
        return dg.in_process_executor
    if deployment.executor == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": deployment.max_concurrent})
    from dagster_k8s import k8s_job_executor  # imported only where a cluster runs the steps

    gpu = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": deployment.gpus_per_model_step}}}}
    return k8s_job_executor.configured({
        "max_concurrent": deployment.max_concurrent,
        "per_step_k8s_config": {step: gpu for step in MODEL_STEPS} if deployment.gpus_per_model_step else {},
    }, name="k8s")


def build_definitions(config: ScinterpConfig) -> dg.Definitions:
    cell_types = cell_type_partitions(config)
    multi = model_cell_type_partitions(config)
    model_store = model_store_of(config)
    evaluation = model_evaluation_job(multi)
    registration = checkpoint_job()
    return dg.Definitions(
        assets=with_code_versions([*build_reference_assets(), *build_cell_type_assets(cell_types),
                                   *build_model_assets(multi), *build_analysis_assets(multi),
                                   *build_intervention_assets(multi), *build_scaling_assets(multi),
                                   *build_summary_assets(), *build_verdict_assets(multi)],
                                  config),
        jobs=[evaluation, registration, reference_job(), cell_type_job(cell_types), summary_job(),
              verdict_job(multi), report_job()],
        sensors=[
            make_checkpoint_sensor(model_store, sorted(config.cell_types), evaluation, registration,
                                   config.automation.checkpoint_quiet_seconds),
            dg.AutomationConditionSensorDefinition("summary_automation",
                                                   target=dg.AssetSelection.groups(SUMMARY_GROUP, VERDICT_GROUP, REPORT_GROUP),
                                                   default_status=dg.DefaultSensorStatus.RUNNING),
        ],
        schedules=[make_stale_partition_schedule(evaluation, sorted(config.cell_types),
                                                 config.automation.nightly_schedule)],
        resources={
            "project": config,
            "model_store": model_store,
            "contracts": ContractRunner(config.contracts_dir) if config.contracts_dir else ContractRunner(),
            "io_manager": AtomicFilesystemIOManager(base_dir=str(config.storage_dir),
                                                    provenance=json.dumps(static_provenance(config))),
        },
        # Dagster's console plus the concise one `make demo` prints (defs/console.py)
        loggers={"console": dg.colored_console_logger, "step_console": step_console},
        executor=executor_of(config),
    )


defs = build_definitions(get_config())
