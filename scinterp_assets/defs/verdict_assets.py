"""The quality-control verdict (FRAMEWORK.md section 8) as assets: `qc_verdict` per model x cell type, one
asset check per criterion carrying its evidence, gated by the `verdict_preconditions` data contract; and
`verdicts`, every context's criteria in one table (the first page of the report).

The verdict reads only `test_registry` (framework-wide q-values) and `registry_coverage`, so it changes
exactly when they do; the criteria themselves live in core/verdict.py.
"""

import json

import dagster as dg
import pandas as pd

from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.verdict import (
    CRITERIA, PASS, VERDICT, VERDICT_COLUMNS, VerdictThresholds, assess_context, verdict_preconditions, verdict_rows,
)
from scinterp_assets.defs.automation import REPORT_GROUP, SUMMARY_AUTOMATION, VERDICT_GROUP
from scinterp_assets.defs.metadata import frame_metadata
from scinterp_assets.defs.partitions import model_and_cell_type
from scinterp_assets.resources.contracts import ContractRunner, contract_check_spec

PRECONDITIONS = "verdict_preconditions"
VERDICT_AUTOMATION = dg.AutomationCondition.eager()  # every context again when the registry updates


def verdict_thresholds(project: ScinterpConfig) -> VerdictThresholds:
    """The verdict's thresholds: the `verdict` section, analyses.alpha and interventions.fidelity_threshold."""
    settings = project.verdict
    return VerdictThresholds(
        alpha=project.analyses.alpha, baselines=settings.baselines, incremental_models=settings.incremental_models,
        incremental_splits=settings.incremental_splits, agreeing_metrics=settings.agreeing_metrics,
        min_retained_share=settings.min_retained_share, min_null_z=settings.min_null_z,
        fidelity_threshold=project.interventions.fidelity_threshold, causal_readouts=settings.causal_readouts)


def _criterion_check(name: str, assessment, thresholds: dict) -> dg.AssetCheckResult:
    """A criterion as a check: passed only on "pass"; a failure or "not evaluable" warns (neither stops
    anything downstream: the report must show them)."""
    return dg.AssetCheckResult(
        check_name=name, asset_key="qc_verdict", passed=assessment.status == PASS,
        severity=dg.AssetCheckSeverity.WARN, description=f"{assessment.status}: {assessment.reason}",
        metadata={"status": assessment.status, "reason": assessment.reason,
                  "edge_score": assessment.edge_score or "", "statistic": assessment.statistic,
                  "bound": assessment.bound, "threshold": assessment.threshold,
                  "test_ids": dg.MetadataValue.json(list(assessment.test_ids)),
                  "q_values": dg.MetadataValue.json([None if q != q else q for q in assessment.q_values]),
                  "thresholds": dg.MetadataValue.json(thresholds)})


def build_verdict_assets(multi_partitions: dg.MultiPartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=multi_partitions, group_name=VERDICT_GROUP, automation_condition=VERDICT_AUTOMATION,
        check_specs=[
            contract_check_spec(PRECONDITIONS, "qc_verdict", partitions_def=multi_partitions, blocking=False),
            *(dg.AssetCheckSpec(name, asset="qc_verdict", partitions_def=multi_partitions, description=text)
              for name, text in CRITERIA.items()),
        ],
    )
    def qc_verdict(context: dg.AssetExecutionContext, test_registry: pd.DataFrame, registry_coverage: pd.DataFrame,
                   project: dg.ResourceParam[ScinterpConfig], contracts: dg.ResourceParam[ContractRunner]):
        """FRAMEWORK section 8 for this model x cell type: each criterion pass / fail / not evaluable with its
        evidence (statistic, bound, threshold, the registry test ids and q-values it rests on), and the
        verdict. The data-contract preconditions come first; where they fail, every criterion is not
        evaluable. Thresholds are recorded with the result."""
        model, cell_type = model_and_cell_type(context)
        rows = test_registry[(test_registry["model"] == model) & (test_registry["cell_type"] == cell_type)]
        status = registry_coverage.loc[registry_coverage["partition"] == str(context.partition_key), "status"]
        preconditions = verdict_preconditions(rows, model, cell_type, status.iloc[0] if len(status) else "missing")
        checked = contracts.validate(PRECONDITIONS, preconditions, parameters={
            "min_evaluable_perturbations": project.contracts.min_evaluable_perturbations,
            "min_reference_edges": project.contracts.min_reference_edges})
        thresholds = verdict_thresholds(project)
        assessments = assess_context(rows, thresholds, None if checked.success else checked.describe())
        table = verdict_rows(model, cell_type, assessments)
        verdict = assessments[VERDICT]
        yield dg.Output(table, metadata={
            **frame_metadata(table), "verdict": verdict.status, "reason": verdict.reason,
            "thresholds": dg.MetadataValue.json(thresholds.record()),
            "table": dg.MetadataValue.md(table[["criterion", "status", "reason"]].to_markdown(index=False)),
        })
        yield contracts.check_result(checked, asset_key="qc_verdict", severity="WARN")
        for name in CRITERIA:
            yield _criterion_check(name, assessments[name], thresholds.record())

    @dg.asset(group_name=REPORT_GROUP, automation_condition=SUMMARY_AUTOMATION)
    def verdicts(context: dg.AssetExecutionContext, qc_verdict: dict[str, pd.DataFrame]) -> dg.Output:
        """Every model x cell type's QC criteria and verdict in one table (core/verdict.VERDICT_COLUMNS),
        in the registered contexts that have a verdict."""
        table = pd.concat([qc_verdict[key] for key in sorted(qc_verdict)], ignore_index=True) if qc_verdict else (
            pd.DataFrame(columns=list(VERDICT_COLUMNS)))
        counts = table.loc[table["criterion"] == VERDICT, "status"].value_counts().to_dict()
        context.log.info(f"verdicts: {json.dumps(counts)}")
        return dg.Output(table, metadata={**frame_metadata(table), "verdicts": dg.MetadataValue.json(counts)})

    return [qc_verdict, verdicts]
