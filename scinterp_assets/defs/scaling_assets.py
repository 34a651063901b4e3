"""Family S assets (A20 scaling, A21 CSSI), per model x cell type.

`cell_strata` estimates the strata of the cells attention extraction runs on; extraction then also sums one
layer per group of cells in its one pass (`defs/scaling_design.py`: ladder buckets, strata, null blocks), and
`scaling_and_cssi` reads rungs, strata and null draws back from those sums.
"""


import anndata as ad
import dagster as dg
import numpy as np
import pandas as pd
from scipy import sparse

from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.analyses.scaling import (
    CellSetScores,
    CssiSettings,
    cssi_evaluation,
    cssi_tests,
    pair_specific_cssi,
    reference_rows,
    scaling_curves,
    scaling_tests,
    scored_pairs,
)
from scinterp_assets.core.analyses.strata import (
    Stratification,
    by_size,
    checked_representation,
    estimate_strata,
    expression_pcs,
    strata_table,
)
from scinterp_assets.core.attention.embeddings import CellEmbeddings
from scinterp_assets.core.attention.grouped import GroupedScores
from scinterp_assets.core.datasets.preprocessing import LOG_LAYER
from scinterp_assets.defs.metadata import frame_metadata
from scinterp_assets.defs.model_assets import extraction_cells
from scinterp_assets.defs.partitions import model_and_cell_type
from scinterp_assets.defs.registry_fields import registry_table, shared_registry_fields
from scinterp_assets.defs.scaling_design import primary_name, scaling_design
from scinterp_assets.resources.model_store import ModelStore

GROUP = "model_evaluation"
ORACLE_COLUMN = "cell_state"  # synthetic screens: the simulation's true state of each cell


def build_scaling_assets(multi_partitions: dg.MultiPartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=multi_partitions, group_name=GROUP)
    def cell_strata(context: dg.AssetExecutionContext, control_cells: ad.AnnData, cell_embeddings: CellEmbeddings,
                    project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """Strata of the cells attention extraction runs on (A21): k-means and Leiden (kNN graph) for each K of
        scaling.k_values, on expression PCs or the model's cell embeddings (scaling.representation); plus the
        primary labels shuffled over cells (a calibration check) and, for synthetic screens, the true states
        (oracle, never the primary row). Labels are numbered by decreasing stratum size."""
        settings = project.scaling
        cells = extraction_cells(control_cells, project)
        if not settings.enabled:
            return dg.Output(pd.DataFrame({"cell": cells.obs_names.astype(str)}), metadata={"enabled": False})
        _, cell_type = model_and_cell_type(context)
        what = f"cell_strata of {context.partition_key}"
        if settings.representation == "cell_embeddings":
            row_of = {cell: i for i, cell in enumerate(cell_embeddings.cell_ids)}
            missing = [cell for cell in cells.obs_names if cell not in row_of]
            values = np.zeros((cells.n_obs, cell_embeddings.values.shape[1]))
            held = [i for i, cell in enumerate(cells.obs_names) if cell in row_of]
            values[held] = cell_embeddings.values[[row_of[cells.obs_names[i]] for i in held]]
            # a cell the model cannot embed has no known gene: extraction skips it too; it joins the origin
            representation = checked_representation(values, what)
        else:
            missing = []
            representation = expression_pcs(cells.layers[LOG_LAYER], settings.n_pcs, project.seeds.scaling)
        stratifications = estimate_strata(representation, settings.methods, settings.k_values, project.seeds.scaling,
                                          settings.n_neighbors, what)
        primary = next(s for s in stratifications if s.name == primary_name(project))
        shuffled = np.random.default_rng([project.seeds.scaling, 23]).permutation(primary.labels)
        stratifications.append(Stratification("shuffled", "shuffled", None, shuffled))
        synthetic = project.cell_types[cell_type].kind == "synthetic" and ORACLE_COLUMN in cells.obs
        if synthetic:
            stratifications.append(Stratification("oracle", "oracle", None,
                                                  by_size(cells.obs[ORACLE_COLUMN].astype(str).to_numpy())))
        table = strata_table(cells.obs_names, stratifications)
        return dg.Output(table, metadata={
            "cells": len(table), "representation": settings.representation, "cells_without_embedding": len(missing),
            "strata": dg.MetadataValue.md(pd.DataFrame(
                [{"stratification": s.name, "k": s.k, "sizes": ", ".join(map(str, s.sizes()))}
                 for s in stratifications]).to_markdown(index=False)),
            "oracle_strata": synthetic,
        })

    @dg.multi_asset(
        outs={
            "scaling_curves": dg.AssetOut(description=(
                "A20: edge recovery (AUROC and top-K F1 against each reference) of attention, value-weighted and "
                "co-expression scores per rung of three ladders (fixed composition, growing heterogeneity, "
                "accrual) and seed, from one extraction pass.")),
            "cssi_gains": dg.AssetOut(description=(
                "A21: per stratification, score, aggregation and reference, the CSSI AUROC and F1 gains over "
                "pooled scores of the same cells, with the null band of random strata of the same sizes.")),
            "scaling_and_cssi": dg.AssetOut(description="Registry rows of family S (A20, A21)."),
        },
        partitions_def=multi_partitions,
        group_name=GROUP,
    )
    def scaling_and_cssi(context: dg.AssetExecutionContext, grouped_attention: GroupedScores,
                         cell_strata: pd.DataFrame, control_cells: ad.AnnData, screen_data: ad.AnnData,
                         reference_edges: pd.DataFrame, gene_universe: pd.DataFrame,
                         project: dg.ResourceParam[ScinterpConfig], model_store: dg.ResourceParam[ModelStore]):
        """A20 recovery-versus-N curves with their sign tests, and A21 CSSI gains with random-strata nulls (the
        pre-specified test: the primary stratification's CSSI-max attention AUROC gain per reference)."""
        _, cell_type = model_and_cell_type(context)
        shared = shared_registry_fields(context, project, model_store, len(gene_universe))
        if not grouped_attention.groups:
            reason = grouped_attention.provenance["skipped"]
            rows = registry_table(context, [{"analysis_id": "A21", "test_id": "A21:not_evaluable", "family": "S",
                                             "p_value": np.nan, "note": f"not evaluable: {reason}"}], **shared)
            yield dg.Output(pd.DataFrame(), output_name="scaling_curves", metadata={"skipped": reason})
            yield dg.Output(pd.DataFrame(), output_name="cssi_gains", metadata={"skipped": reason})
            yield dg.Output(rows, output_name="scaling_and_cssi", metadata=frame_metadata(rows))
            return
        cells = extraction_cells(control_cells, project)
        genes = list(grouped_attention.genes)
        design = scaling_design(cell_strata, grouped_attention.rows, len(genes), grouped_attention.layer, project)
        expression = cells.layers[LOG_LAYER][:, cells.var_names.get_indexer(genes)]
        expression = expression.toarray() if sparse.issparse(expression) else np.asarray(expression)
        scores = CellSetScores(grouped_attention, expression)
        rows_ = grouped_attention.rows
        regulates = reference_edges[reference_edges["relation"] == "regulates"]
        references = {resource: reference_rows(regulates, genes, rows_, resource)
                      for resource in sorted(regulates["resource"].unique())}
        if "truth_state_edges" in screen_data.uns:  # synthetic: the edges active in one state only
            references["planted_state_specific"] = reference_rows(
                pd.DataFrame(screen_data.uns["truth_state_edges"])[["source", "target"]], genes, rows_)
        valid = scored_pairs(rows_, genes)
        curves = scaling_curves(design, scores, references, valid)
        settings = project.scaling
        cssi = CssiSettings(settings.min_stratum_size, settings.null_draws, project.seeds.scaling)
        gains = pd.concat([cssi_evaluation(design, scores, references, valid, cssi),
                           pair_specific_cssi(design, grouped_attention, expression, references, valid, cssi,
                                              primary_name(project))], ignore_index=True)
        layer = grouped_attention.layer
        tests = scaling_tests(curves, layer) + cssi_tests(gains, layer)
        if design.skipped_rungs:
            context.log.info("A20 rungs left out: " + "; ".join(design.skipped_rungs))
        rows = registry_table(context, tests, **shared, label_rule="reference edges", seed=project.seeds.scaling)
        yield dg.Output(curves, output_name="scaling_curves", metadata={
            **frame_metadata(curves), "rungs_left_out": dg.MetadataValue.text("; ".join(design.skipped_rungs))})
        yield dg.Output(gains, output_name="cssi_gains", metadata=frame_metadata(gains))
        yield dg.Output(rows, output_name="scaling_and_cssi", metadata={
            **frame_metadata(rows), "groups_accumulated": len(grouped_attention.groups),
            "grouped_rows": len(rows_), "layer": layer})

    return [cell_strata, scaling_and_cssi]
