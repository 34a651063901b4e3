"""Fan-in assets over every model x cell type: the framework-wide test registry and the report."""


import base64

import dagster as dg
import pandas as pd

from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.report import render_report
from scinterp_assets.core.stats.registry import apply_framework_bh, empty_registry
from scinterp_assets.defs.metadata import frame_metadata
from scinterp_assets.resources.contracts import ContractRunner, contract_check_spec

GROUP = "summary"
# Re-run when any analysis partition updates, even while other partitions are still missing.
SUMMARY_AUTOMATION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def _concat_partitions(by_partition: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate fan-in inputs; multi-partition keys read "cell_type|model" (dimensions sorted by name)."""
    frames = []
    for key in sorted(by_partition):
        cell_type, model = key.split("|")
        frames.append(by_partition[key].assign(cell_type=cell_type, model=model))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_summary_assets() -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name=GROUP,
        automation_condition=SUMMARY_AUTOMATION,
        check_specs=[contract_check_spec("test_registry", "test_registry")],
    )
    def test_registry(perturbation_prediction: dict[str, pd.DataFrame], reference_structure: dict[str, pd.DataFrame],
                      project: dg.ResourceParam[ScinterpConfig], contracts: dg.ResourceParam[ContractRunner]):
        """Every test of every analysis in one schema (FRAMEWORK section 7), with framework-wide BH q-values
        (confirmatory only), BH over all tests, and BH within each analysis."""
        rows = [empty_registry()]
        for by_partition in (perturbation_prediction, reference_structure):
            rows += [by_partition[key] for key in sorted(by_partition)]
        registry = apply_framework_bh(pd.concat(rows, ignore_index=True))
        yield dg.Output(registry, metadata={
            **frame_metadata(registry),
            "confirmatory_tests": int(registry["confirmatory"].sum()),
            "significant_q_0.05": int((registry["q_value"] < 0.05).sum()),
        })
        yield contracts.check_result(contracts.validate("test_registry", registry))

    @dg.asset(group_name=GROUP, automation_condition=SUMMARY_AUTOMATION)
    def evaluation_report(test_registry: pd.DataFrame, perturbation_auroc: dict[str, pd.DataFrame],
                          project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """Markdown report with PNG plots: per-layer reference AUROC and PF AUROC of edges vs baselines."""
        path = render_report(test_registry, _concat_partitions(perturbation_auroc), project.report_dir,
                             project.fingerprint())
        images = "\n\n".join(
            f"![{png.stem}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"
            for png in sorted(path.parent.glob("*.png"))
        )
        return dg.Output(
            {"report": str(path), "plots": sorted(str(png) for png in path.parent.glob("*.png"))},
            metadata={"report": dg.MetadataValue.path(str(path)), "plots": dg.MetadataValue.md(images)},
        )

    return [test_registry, evaluation_report]
