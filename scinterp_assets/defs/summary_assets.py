"""Fan-in assets over every model x cell type: the framework-wide test registry and the report.

One step gathers every analysis partition into `test_registry`, the PF AUROC of the partitions it holds
into `perturbation_auroc_table` and what it covers into `registry_coverage`; everything downstream reads
only these three, so a report never mixes generations (an evaluation half-way through shows up in all of
them or in none).
"""


import base64

import dagster as dg
import pandas as pd

from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.analyses.context_tables import cross_context_table as build_cross_context_table
from scinterp_assets.core.analyses.context_tables import metric_map as build_metric_map
from scinterp_assets.core.analyses.random_twin import random_twin_registry
from scinterp_assets.core.report import render_report
from scinterp_assets.core.stats.family_sensitivity import family_definition_sensitivity
from scinterp_assets.core.stats.registry import apply_framework_bh, combine_registry_parts
from scinterp_assets.core.verdict import first_page
from scinterp_assets.defs.automation import REPORT_GROUP, SUMMARY_AUTOMATION, SUMMARY_GROUP
from scinterp_assets.defs.metadata import frame_metadata
from scinterp_assets.defs.partitions import registered_model_cell_type_keys
from scinterp_assets.defs.registry_fields import code_version
from scinterp_assets.defs.verdict_assets import verdict_thresholds
from scinterp_assets.resources.contracts import ContractRunner, contract_check_spec
from scinterp_assets.resources.model_store import RANDOM_WEIGHTS_SUFFIX



def _concat_partitions(by_partition: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate fan-in inputs; multi-partition keys read "cell_type|model" (dimensions sorted by name)."""
    frames = []
    for key in sorted(by_partition):
        cell_type, model = key.split("|")
        frames.append(by_partition[key].assign(cell_type=cell_type, model=model))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_summary_assets() -> list[dg.AssetsDefinition]:
    @dg.multi_asset(
        group_name=SUMMARY_GROUP,
        outs={
            "test_registry": dg.AssetOut(automation_condition=SUMMARY_AUTOMATION),
            "perturbation_auroc_table": dg.AssetOut(
                automation_condition=SUMMARY_AUTOMATION,
                description="Per-perturbation PF AUROC of the model x cell type partitions test_registry holds."),
            "registry_coverage": dg.AssetOut(
                automation_condition=SUMMARY_AUTOMATION,
                description="Each registered model x cell type partition: complete, partial (the analyses it "
                            "lacks) or missing from test_registry."),
            "scaling_curves_table": dg.AssetOut(
                automation_condition=SUMMARY_AUTOMATION,
                description="A20 recovery per ladder rung of the model x cell type partitions test_registry holds."),
        },
        check_specs=[contract_check_spec("test_registry", "test_registry")],
    )
    def test_registry(context: dg.AssetExecutionContext, perturbation_prediction: dict[str, pd.DataFrame],
                      reference_structure: dict[str, pd.DataFrame], layer_selection: dict[str, pd.DataFrame],
                      hvg_protocol_confound_tests: dict[str, pd.DataFrame],
                      reference_battery: dict[str, pd.DataFrame], incremental_value: dict[str, pd.DataFrame],
                      sensitivity_grid_tests: dict[str, pd.DataFrame], causal_interventions: dict[str, pd.DataFrame],
                      scaling_and_cssi: dict[str, pd.DataFrame], perturbation_auroc: dict[str, pd.DataFrame],
                      scaling_curves: dict[str, pd.DataFrame],
                      project: dg.ResourceParam[ScinterpConfig], contracts: dg.ResourceParam[ContractRunner]):
        """Every test of every analysis in one schema (FRAMEWORK section 7), A25's trained-vs-random-weights rows
        (core/analyses/random_twin.py) included, with framework-wide BH q-values
        (confirmatory only), BH over all tests, and BH within each analysis. Refuses rows of different
        code versions; the q-values are provisional while registered model x cell type partitions are missing
        (metadata `q_values_provisional`, `partitions_missing`). With it, from the same inputs, the PF AUROC and
        the A20 scaling curves of the partitions it holds, and its coverage."""
        parts = {"perturbation_prediction": perturbation_prediction, "reference_structure": reference_structure,
                 "layer_selection": layer_selection, "hvg_protocol_confound_tests": hvg_protocol_confound_tests,
                 "reference_battery": reference_battery, "incremental_value": incremental_value,
                 "sensitivity_grid_tests": sensitivity_grid_tests, "causal_interventions": causal_interventions,
                 "scaling_and_cssi": scaling_and_cssi}
        if not project.random_weights_twins:  # twins turned off: what they stored earlier is left out
            parts = {name: {key: rows for key, rows in by_partition.items() if not key.endswith(RANDOM_WEIGHTS_SUFFIX)}
                     for name, by_partition in parts.items()}
        rows, coverage = combine_registry_parts(
            parts, registered_model_cell_type_keys(context.instance, project), code_version(project))
        held = set(rows["cell_type"] + "|" + rows["model"])
        pf_table = _concat_partitions({key: frame for key, frame in perturbation_auroc.items() if key in held})
        curves = _concat_partitions({key: frame for key, frame in scaling_curves.items() if key in held})
        # A25: each checkpoint beside its random-weights twin, paired over the perturbations both ranked
        twins = {model: model.removesuffix(RANDOM_WEIGHTS_SUFFIX) for model in rows["model"].unique()
                 if model.endswith(RANDOM_WEIGHTS_SUFFIX)}
        untrained = random_twin_registry(rows, pf_table, twins)
        registry = apply_framework_bh(pd.concat([rows, untrained], ignore_index=True) if len(untrained) else rows)
        coverage_table = coverage.table()
        yield dg.Output(registry, output_name="test_registry", metadata={
            **frame_metadata(registry),
            "confirmatory_tests": int(registry["confirmatory"].sum()),
            "significant_q_0.05": int((registry["q_value"] < 0.05).sum()),
            "partitions_covered": dg.MetadataValue.json(list(coverage.covered)),
            "q_values_provisional": coverage.q_values_provisional,
            "partitions_missing": dg.MetadataValue.json(sorted(coverage.missing)),
            "inputs_missing": dg.MetadataValue.json({key: list(inputs) for key, inputs in coverage.missing.items()}),
        })
        yield dg.Output(pf_table, output_name="perturbation_auroc_table", metadata=frame_metadata(pf_table))
        yield dg.Output(curves, output_name="scaling_curves_table", metadata=frame_metadata(curves))
        yield dg.Output(coverage_table, output_name="registry_coverage", metadata={
            **frame_metadata(coverage_table), "table": dg.MetadataValue.md(coverage_table.to_markdown(index=False))})
        yield contracts.check_result(contracts.validate("test_registry", registry), asset_key="test_registry")

    @dg.asset(group_name=SUMMARY_GROUP, automation_condition=SUMMARY_AUTOMATION)
    def cross_context_table(test_registry: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """A23: per model x cell type, attention vs correlation, gene-level dominance and incremental value."""
        table = build_cross_context_table(test_registry, alpha=project.analyses.alpha)
        return dg.Output(table, metadata={**frame_metadata(table), "table": dg.MetadataValue.md(table.to_markdown(index=False))})

    @dg.asset(group_name=SUMMARY_GROUP, automation_condition=SUMMARY_AUTOMATION)
    def metric_map(test_registry: pd.DataFrame) -> dg.Output:
        """A24: every AUROC with its model, context, universe, negatives, label rule and positives, grouped
        so that only comparable numbers share a group."""
        table = build_metric_map(test_registry)
        return dg.Output(table, metadata={**frame_metadata(table), "groups": int(table["comparable_group"].nunique())})

    @dg.asset(group_name=SUMMARY_GROUP, automation_condition=SUMMARY_AUTOMATION)
    def family_sensitivity(test_registry: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """Which conclusions change between multiple-testing families (confirmatory only, all tests, one family
        per analysis; FRAMEWORK section 7)."""
        result = family_definition_sensitivity(test_registry, alpha=project.analyses.alpha)
        return dg.Output(result.conclusions, metadata={
            **frame_metadata(result.conclusions),
            "conclusions_that_change": result.n_changed,
            "confirmatory_conclusions_that_change": result.n_changed_confirmatory,
            "families": dg.MetadataValue.md(result.summary.to_markdown(index=False)),
        })

    # the report waits for a verdicts table (a new instance's first models have none yet), then follows updates
    @dg.asset(group_name=REPORT_GROUP, automation_condition=dg.AutomationCondition.eager())
    def evaluation_report(test_registry: pd.DataFrame, perturbation_auroc_table: pd.DataFrame,
                          registry_coverage: pd.DataFrame, scaling_curves_table: pd.DataFrame,
                          verdicts: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """The report: report.md and a self-contained report.html (plots embedded), registry.csv and
        verdicts.csv. First page: the QC verdict of every model x cell type; then the cross-context table,
        the family sensitivity, per-layer curves, the baseline ladder, incremental-value intervals, ablation
        dose-response and CSSI gains; the registry rows per analysis in an appendix. All from one registry
        generation, whose coverage the header states."""
        alpha = project.analyses.alpha
        sensitivity = family_definition_sensitivity(test_registry, alpha=alpha).conclusions
        tables = {
            "A23: cross-context table": build_cross_context_table(test_registry, alpha=alpha),
            "Family-definition sensitivity: conclusions that change": sensitivity[sensitivity["changes"]],
        }
        path = render_report(test_registry, perturbation_auroc_table, project.report_dir, project.fingerprint(),
                             tables, coverage=registry_coverage, scaling_curves=scaling_curves_table,
                             verdicts=verdicts, thresholds=verdict_thresholds(project).record())
        images = "\n\n".join(
            f"![{png.stem}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"
            for png in sorted(path.parent.glob("*.png"))
        )
        html = path.with_suffix(".html")
        return dg.Output(
            {"report": str(path), "html": str(html), "plots": sorted(str(png) for png in path.parent.glob("*.png"))},
            metadata={"report": dg.MetadataValue.path(str(path)), "html": dg.MetadataValue.path(str(html)),
                      "verdicts": dg.MetadataValue.md(first_page(verdicts).to_markdown(index=False)
                                                      if len(verdicts) else "(none)"),
                      "plots": dg.MetadataValue.md(images)},
        )

    return [test_registry, cross_context_table, metric_map, family_sensitivity, evaluation_report]
