"""Family C: causal interventions (A17 head ablation, A18 orthogonal interventions, A19 fidelity) per model x
cell type, read out on held-out control cells (core/analyses/causal_interventions.py)."""

import anndata as ad
import dagster as dg
import numpy as np
import pandas as pd
import torch

from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.analyses.causal_interventions import (
    CONDITION_COLUMNS,
    InterventionInputs,
    InterventionSettings,
    intervention_plan,
    intervention_tests,
    readout_perturbations,
    run_interventions,
)
from scinterp_assets.core.analyses.head_selection import accumulated_head_auroc
from scinterp_assets.core.analyses.reference_battery import reference_labels
from scinterp_assets.core.attention.edges import evaluable_genes
from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.attention.streaming import torch_threads
from scinterp_assets.core.models.readouts import Batching, head_entropy
from scinterp_assets.core.stats.registry import empty_registry
from scinterp_assets.defs.console import progress_logger
from scinterp_assets.defs.metadata import accumulator_reads, frame_metadata
from scinterp_assets.defs.model_assets import EDGE_CONTRACT, extraction_cells, model_for, pf_filter, subsample_cells
from scinterp_assets.defs.partitions import model_and_cell_type
from scinterp_assets.defs.registry_fields import registry_table, shared_registry_fields
from scinterp_assets.resources.model_store import ModelStore

GROUP = "model_evaluation"


def held_out_controls(controls: ad.AnnData, project: ScinterpConfig) -> tuple[ad.AnnData, bool]:
    """The control cells attention extraction did not see (its seeded subset of attention.max_cells), at most
    interventions.max_cells of them (a seeded subset); when extraction saw every control, all controls, and
    False."""
    seen = set(extraction_cells(controls, project).obs_names)
    unseen = controls[~controls.obs_names.isin(seen)]
    held_out = unseen.n_obs > 0
    pool = unseen if held_out else controls
    return subsample_cells(pool, project.interventions.max_cells, project.seeds.interventions), held_out


def ranking_reference(reference_edges: pd.DataFrame, wanted: str | None) -> str | None:
    """The "regulates" resource heads are ranked on: `wanted`, else TRRUST when the cell type has it (the
    study's choice), else the first by name; None when the cell type has no evaluable "regulates" resource.
    A `wanted` resource the cell type lacks is an error, not a silent skip."""
    regulating = sorted(reference_edges.loc[reference_edges["relation"] == "regulates", "resource"].unique())
    if wanted is not None:
        if wanted not in regulating:
            raise dg.Failure(description=(
                f"interventions.reference is {wanted!r}, which is not an evaluable 'regulates' reference of this cell "
                f"type (evaluable: {regulating or 'none'}; reference_evaluability says why others were left out). "
                "Fix: name one of them, or null to choose automatically"))
        return wanted
    return "trrust" if "trrust" in regulating else (regulating[0] if regulating else None)


def _skipped(reason: str):
    yield dg.Output(pd.DataFrame(columns=list(CONDITION_COLUMNS)), output_name="intervention_conditions",
                    metadata={"rows": 0, "skipped": reason})
    yield dg.Output(empty_registry(), output_name="causal_interventions", metadata={"rows": 0, "skipped": reason})


def build_intervention_assets(multi_partitions: dg.MultiPartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.multi_asset(
        outs={
            "intervention_conditions": dg.AssetOut(description=(
                "Every intervention condition (A17 zeroed heads and layers, A18 uniform attention and MLP "
                "knock-outs, their random controls) with its fidelity and its harm to the masked-gene, "
                "in-silico perturbation and re-extracted attention readouts on held-out control cells (the last "
                "says where it cannot change by construction).")),
            "causal_interventions": dg.AssetOut(description=(
                "Registry rows of family C: targeted conditions against random ones of the same size (rank "
                "p-value), dose-response in k, the clean in-silico and attention PF AUROC, and A19 fidelity per "
                "condition.")),
        },
        partitions_def=multi_partitions,
        group_name=GROUP,
        deps=EDGE_CONTRACT,
    )
    def causal_interventions(context: dg.AssetExecutionContext, control_cells: ad.AnnData,
                             attention_scores: AttentionScores, reference_edges: pd.DataFrame,
                             de_labels: pd.DataFrame, gene_universe: pd.DataFrame,
                             project: dg.ResourceParam[ScinterpConfig], model_store: dg.ResourceParam[ModelStore]):
        """A17-A19: heads ranked by reference AUROC, then zeroed (top, bottom, entropy-matched, random k;
        whole layers), set to uniform attention or MLP blocks knocked out; each condition read out by fidelity,
        masked-gene loss, in-silico perturbation PF AUROC against the DE labels, and the study's readout: the
        PF AUROC of attention re-extracted at the last layer."""
        settings, attention = project.interventions, project.attention
        if not settings.enabled:
            yield from _skipped("interventions.enabled is off")
            return
        model_key, cell_type = model_and_cell_type(context)
        resource = ranking_reference(reference_edges, settings.reference)
        if resource is None:
            wanted = settings.reference or "any"
            yield from _skipped(f"no evaluable 'regulates' reference ({wanted}) to rank heads on for {cell_type}")
            return
        genes = evaluable_genes(attention_scores)
        model = model_for(model_store, model_key, control_cells)
        head_auroc = accumulated_head_auroc(attention_scores, genes, reference_labels(reference_edges, genes, resource),
                                            model.n_layers)  # fmt: skip
        if np.isnan(head_auroc).all():
            yield from _skipped(f"no head has a reference AUROC on {resource}: none of its TFs is an evaluable source")
            return
        held_out, unseen = held_out_controls(control_cells, project)
        perturbed = readout_perturbations(de_labels, genes, pf_filter(project))
        batching = Batching(settings.batch_size, attention.batch_token_budget, attention.device)
        core = InterventionSettings(ks=settings.ks, n_random_draws=settings.random_draws,
                                    exhaustive_up_to=settings.exhaustive_up_to, in_silico_cells=settings.in_silico_cells,
                                    masked_fraction=settings.masked_fraction,
                                    fidelity_threshold=settings.fidelity_threshold, seed=project.seeds.interventions)
        with torch.inference_mode(), torch_threads(attention.num_threads):
            cells = model.readout_cells(held_out, seed=project.seeds.attention)
            inputs = InterventionInputs(cells, tuple(genes), model.token_slots(held_out, genes), perturbed, de_labels,
                                        pf_filter(project))  # fmt: skip
            plan = intervention_plan(head_auroc, head_entropy(model, cells, batching), core)
            table = run_interventions(model, inputs, plan, core, batching, progress_logger(context, "interventions"))
        caveats = [f"heads ranked on {resource}"]
        if not unseen:
            caveats.append("read out on cells attention extraction also saw (every control cell was extracted)")
        rows = registry_table(context, intervention_tests(table, core, caveats),
                              **shared_registry_fields(context, project, model_store, len(gene_universe)),
                              label_rule=project.label_rule(cell_type), seed=project.seeds.interventions)
        clean = table.iloc[0]
        yield dg.Output(table, output_name="intervention_conditions", metadata={
            **frame_metadata(table), "held_out_cells": len(cells), "cells_unseen_by_extraction": unseen,
            "ranking_reference": resource, "perturbations_read_out": len(perturbed),
            "clean_in_silico_pf_auroc": float(clean["in_silico_pf_auroc"]),
            "clean_attention_pf_auroc": float(clean["attention_pf_auroc"]),
            "clean_masked_loss": float(clean["masked_loss"]),
            "head_auroc": dg.MetadataValue.md(pd.DataFrame(
                head_auroc, columns=[f"H{h}" for h in range(head_auroc.shape[1])]).round(3).to_markdown()),
            **accumulator_reads(attention_scores),
        })
        yield dg.Output(rows, output_name="causal_interventions", metadata=frame_metadata(rows))

    return [causal_interventions]
