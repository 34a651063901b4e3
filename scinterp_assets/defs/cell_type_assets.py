"""Model-independent assets, partitioned by cell type: the screen, its controls, universe, labels, features,
correlation edges and the reference edges. Each body unpacks inputs, calls one core function, returns."""


import anndata as ad
import dagster as dg
import numpy as np
import pandas as pd

from scinterp_assets.config import H5adCellType, ScinterpConfig, SyntheticCellType, TenxCellType
from scinterp_assets.core.attention.sources import analysis_sources
from scinterp_assets.core.datasets.de_labels import DELabelRule, compute_de_labels, on_target_overview
from scinterp_assets.core.datasets.preprocessing import (
    LOG_LAYER,
    gene_level_features,
    perturbed_genes,
    sample_control_cells,
    select_gene_universe,
    spearman_matrix,
)
from scinterp_assets.core.datasets.pseudobulk import (
    load_replogle_pseudobulk,
    pseudobulk_de_labels,
    read_perturbation_cells,
)
from scinterp_assets.core.datasets.screens import cell_qc_frame, load_screen_file
from scinterp_assets.core.datasets.synthetic import SyntheticWorldSpec, simulate_world, vocabulary_gene_names
from scinterp_assets.core.datasets.tenx import load_tenx_screen
from scinterp_assets.core.edges import edges_from_matrix, validate_edges
from scinterp_assets.core.models.geneformer import read_gene_vocabulary
from scinterp_assets.core.networks.planted import planted_reference_edges
from scinterp_assets.core.networks.reference_formats import (
    DROPPED_ROWS,
    read_beeline_tfs,
    read_gene_aliases,
    read_reference,
)
from scinterp_assets.core.networks.reference_nulls import reference_nulls
from scinterp_assets.core.networks.references import (
    ReferenceOverlapError,
    empty_reference,
    harmonise_gene_ids,
    reference_evaluability,
    require_evaluable,
    restrict_reference,
    validate_reference,
)
from scinterp_assets.defs.console import progress_logger
from scinterp_assets.defs.metadata import frame_metadata, source_file_hashes
from scinterp_assets.defs.versions import text_digest
from scinterp_assets.resources.contracts import ContractRunner, contract_check_spec

GROUP = "cell_type_data"
REFERENCE_GROUP = "references"


def load_screen(cell_type: SyntheticCellType | H5adCellType | TenxCellType) -> ad.AnnData:
    """Configuration entry -> screen in the platform layout."""
    if isinstance(cell_type, SyntheticCellType):
        names = None
        if cell_type.gene_dictionaries:
            names = vocabulary_gene_names([read_gene_vocabulary(folder) for folder in cell_type.gene_dictionaries],
                                          cell_type.n_genes)
        return simulate_world(
            SyntheticWorldSpec(
                modality=cell_type.modality,
                wiring_seed=cell_type.wiring_seed,
                seed=cell_type.seed,
                n_genes=cell_type.n_genes,
                n_tfs=cell_type.n_tfs,
                n_control_cells=cell_type.n_control_cells,
                n_perturbed_genes=cell_type.n_perturbed_genes,
                cells_per_perturbation=cell_type.cells_per_perturbation,
                mean_library_size=cell_type.mean_library_size,
                expression_log_sd=cell_type.expression_log_sd,
                state_specific_edges=cell_type.state_specific_edges,
                state_effect_sd=cell_type.state_effect_sd,
            ),
            names,
        )
    if isinstance(cell_type, TenxCellType):
        return load_tenx_screen(cell_type.screen_spec())
    return load_screen_file(cell_type.screen_spec())


def build_reference_assets() -> list[dg.AssetsDefinition]:
    @dg.asset(group_name=REFERENCE_GROUP, kinds={"parquet"})
    def reference_networks(project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """Every configured reference network, read from its published file into one long table
        (source, target, resource, sign, confidence, weight, relation); gene names as published."""
        tables = [read_reference(source.format, source.path, name, **source.reader_options())
                  for name, source in sorted(project.references.items())]
        dropped = {table["resource"].iloc[0]: table.attrs.get(DROPPED_ROWS) for table in tables
                   if len(table) and table.attrs.get(DROPPED_ROWS)}
        networks = validate_reference(pd.concat([empty_reference(), *tables], ignore_index=True), "reference_networks")
        counts = networks.groupby(["resource", "relation"]).size().rename("rows").reset_index()
        return dg.Output(networks, metadata={
            **frame_metadata(networks),
            "rows_per_resource": dg.MetadataValue.md(counts.to_markdown(index=False)),
            "rows_dropped_while_reading": dg.MetadataValue.json(dropped),
            "files": dg.MetadataValue.json({name: source_file_hashes(source)
                                            for name, source in sorted(project.references.items())}),
        })

    return [reference_networks]


def build_cell_type_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"anndata"},
        check_specs=[contract_check_spec("expression_qc", "screen_data", partitions_def=partitions)],
    )
    def screen_data(context: dg.AssetExecutionContext, project: dg.ResourceParam[ScinterpConfig],
                    contracts: dg.ResourceParam[ContractRunner]):
        """Raw counts of one screen (cells x genes) with its perturbation labels; synthetic screens carry
        their exact truth in `uns`."""
        screen = load_screen(project.cell_types[context.partition_key])
        qc = cell_qc_frame(screen)
        counts = screen.obs["perturbation"].value_counts()
        yield dg.Output(
            screen,
            metadata={
                "cells": screen.n_obs,
                "genes": screen.n_vars,
                "modality": screen.uns["modality"],
                "control_cells": int(counts.get(screen.uns["control_label"], 0)),
                "perturbations": int(len(counts) - 1),
                "median_total_counts": float(qc["total_counts"].median()),
                "source_files": dg.MetadataValue.json(source_file_hashes(project.cell_types[context.partition_key])),
            },
        )
        result = contracts.validate("expression_qc", qc, parameters={"min_cells": project.contracts.min_cells})
        yield contracts.check_result(result)

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"anndata"})
    def control_cells(screen_data: ad.AnnData, project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """N_ctrl non-targeting cells sampled with a fixed seed; the same cells feed attention, correlation and
        gene features. Layer `log1p_norm` holds log1p(counts / total * target_sum)."""
        settings = project.preprocessing
        controls = sample_control_cells(screen_data, settings.n_control_cells, project.seeds.control_sampling,
                                        settings.target_sum)
        return dg.Output(controls, metadata={"cells": controls.n_obs, "seed": project.seeds.control_sampling})

    @dg.asset(partitions_def=partitions, group_name=GROUP)
    def gene_universe(screen_data: ad.AnnData, control_cells: ad.AnnData,
                      project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """Highly variable genes of the controls, with perturbed genes forced in when configured (A22)."""
        settings = project.preprocessing
        forced = perturbed_genes(screen_data) if settings.force_perturbed_genes else []
        universe = select_gene_universe(control_cells, settings.n_hvg, forced)
        return dg.Output(universe, metadata={**frame_metadata(universe), "forced_genes": int(universe["forced"].sum())})

    @dg.asset(partitions_def=partitions, group_name=GROUP)
    def de_labels(context: dg.AssetExecutionContext, screen_data: ad.AnnData, control_cells: ad.AnnData,
                  gene_universe: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """DE calls per (perturbation, universe target): Welch t (or Mann-Whitney), BH, effect threshold
        (FRAMEWORK section 3); or |mean z| of a configured pseudo-bulk file. On-target change per perturbation."""
        rule = project.de_labels
        pseudobulk = getattr(project.cell_types[context.partition_key], "pseudobulk_labels", None)
        if pseudobulk is None:
            result = compute_de_labels(
                screen_data, control_cells, gene_universe["gene"].tolist(),
                DELabelRule(rule.q_threshold, rule.min_abs_log_difference, rule.min_cells, rule.test),
                project.preprocessing.target_sum,
            )
        else:
            result = pseudobulk_de_labels(
                load_replogle_pseudobulk(pseudobulk.path), gene_universe["gene"].tolist(),
                min_abs_z=pseudobulk.min_abs_z, modality=screen_data.uns["modality"], min_cells=rule.min_cells,
                cells=read_perturbation_cells(pseudobulk.perturbation_stats) if pseudobulk.perturbation_stats else None,
            )
        summary = result.summary
        enough = summary[(summary["n_positives"] >= rule.min_positives) & (summary["n_negatives"] >= rule.min_negatives)]
        status_counts, on_target = on_target_overview(summary)
        return dg.Output(
            result.labels,
            metadata={
                **frame_metadata(result.labels),
                "label_rule": project.label_rule(context.partition_key),
                "perturbations_tested": int(summary["tested"].sum()),
                "perturbations_with_enough_labels": len(enough),
                "on_target_not_moved": dg.MetadataValue.text(on_target),
                "on_target_status_counts": dg.MetadataValue.json(status_counts),
                "perturbation_summary": dg.MetadataValue.md(summary.to_markdown(index=False)),
            },
        )

    @dg.asset(partitions_def=partitions, group_name=GROUP)
    def gene_features(control_cells: ad.AnnData, gene_universe: pd.DataFrame) -> dg.Output:
        """Gene-level baselines of each universe gene: mean, variance, detection rate of log1p expression."""
        features = gene_level_features(control_cells, gene_universe["gene"].tolist())
        return dg.Output(features, metadata=frame_metadata(features))

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        check_specs=[contract_check_spec("edge_table", "correlation_edges", partitions_def=partitions)],
    )
    def correlation_edges(control_cells: ad.AnnData, gene_universe: pd.DataFrame,
                          project: dg.ResourceParam[ScinterpConfig], contracts: dg.ResourceParam[ContractRunner]):
        """Co-expression edges: |Spearman rho| between universe genes over the control cells (the magnitude,
        since DE labels and references include both activation and repression)."""
        genes = gene_universe["gene"].tolist()
        values = control_cells.layers[LOG_LAYER][:, control_cells.var_names.get_indexer(genes)]
        edges = validate_edges(
            edges_from_matrix(np.abs(spearman_matrix(values)), genes, method="correlation", n_cells=control_cells.n_obs),
            name="correlation_edges",
        )
        yield dg.Output(edges, metadata=frame_metadata(edges))
        result = contracts.validate(
            "edge_table", edges, parameters={"max_null_score_fraction": project.contracts.max_null_score_fraction})
        yield contracts.check_result(result)

    @dg.multi_asset(
        partitions_def=partitions,
        group_name=GROUP,
        outs={"reference_edges": dg.AssetOut(description="Evaluable references restricted to the universe."),
              "reference_evaluability": dg.AssetOut(description="Per configured reference: edges kept in the "
                                                    "universe, evaluable or not, and why not.")},
        check_specs=[contract_check_spec("reference_edges", "reference_edges", partitions_def=partitions)],
    )
    def reference_edges(context: dg.AssetExecutionContext, screen_data: ad.AnnData, gene_universe: pd.DataFrame,
                        reference_networks: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig],
                        contracts: dg.ResourceParam[ContractRunner]):
        """Reference networks restricted to the universe (FRAMEWORK section 5): ordered gene pairs, self pairs
        and duplicates dropped, TFs with enough targets inside the universe. Synthetic cell types: the planted
        network. A reference that keeps fewer than contracts.min_reference_edges edges is not evaluable for
        this cell type: `reference_evaluability` says why, its edges are left out and the others proceed
        (unless it is `required`, which fails the step and stores nothing)."""
        universe = gene_universe["gene"].tolist()
        names = project.references_of(context.partition_key)
        min_edges = project.contracts.min_reference_edges
        if not names:
            restricted = planted_reference_edges(screen_data, universe)
            evaluability = reference_evaluability(restricted, sorted(restricted["resource"].unique()), min_edges,
                                                  where=f"in a universe of {len(universe):,} genes")
            metadata = {}
        else:
            restriction = project.reference_restriction
            ensembl = screen_data.var["ensembl_id"] if "ensembl_id" in screen_data.var else None
            harmonised = harmonise_gene_ids(
                reference_networks[reference_networks["resource"].isin(names)],
                symbol_of_id=None if ensembl is None else dict(zip(ensembl, screen_data.var_names)),
                aliases=read_gene_aliases(restriction.gene_aliases) if restriction.gene_aliases else None,
            )
            restriction_result = restrict_reference(
                harmonised, universe, min_targets_per_tf=restriction.min_targets_per_tf,
                tfs=read_beeline_tfs(restriction.tf_list) if restriction.tf_list else None,
                gene_set_size=(restriction.gene_set_min_size, restriction.gene_set_max_size),
            )
            evaluability = reference_evaluability(
                restriction_result.edges, names, min_edges, overlap=restriction_result.overlap,
                where=f"in a universe of {restriction_result.universe_size:,} genes")
            try:  # before anything is stored: a required reference decides whether the cell type can run
                require_evaluable(evaluability, [name for name in names if project.references[name].required],
                                  f"cell type {context.partition_key}")
            except ReferenceOverlapError as error:
                raise dg.Failure(description=f"{error}. Nothing was stored", metadata={
                    "evaluability": dg.MetadataValue.md(evaluability.to_markdown(index=False))}) from None
            restricted = restriction_result.edges
            metadata = {
                "survival": dg.MetadataValue.md(
                    restriction_result.survival.pivot(index="step", columns="resource", values="edges").to_markdown()),
                "overlap": dg.MetadataValue.md(restriction_result.overlap.to_markdown(index=False)),
            }
        evaluable = evaluability.loc[evaluability["evaluable"], "resource"].tolist()
        reference = restricted[restricted["resource"].isin(evaluable)].reset_index(drop=True)
        not_evaluable = evaluability[~evaluability["evaluable"]]
        counts = reference["resource"].value_counts()
        yield dg.Output(reference, output_name="reference_edges", metadata={
            **frame_metadata(reference), **metadata, **{f"edges_{name}": int(count) for name, count in counts.items()},
            "not_evaluable": dg.MetadataValue.json(dict(zip(not_evaluable["resource"], not_evaluable["reason"]))),
        })
        yield dg.Output(evaluability, output_name="reference_evaluability", metadata={
            "evaluable": ", ".join(evaluable) or "none",
            "not_evaluable": ", ".join(not_evaluable["resource"]) or "none",
            "table": dg.MetadataValue.md(evaluability.to_markdown(index=False)),
        })
        result = contracts.validate("reference_edges", reference, parameters={"min_reference_edges": min_edges})
        yield contracts.check_result(result, asset_key="reference_edges")

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"numpy"},
        check_specs=[dg.AssetCheckSpec("check_null_verified", asset="reference_null", partitions_def=partitions,
                                       blocking=True)],
    )
    def reference_null(context: dg.AssetExecutionContext, reference_edges: pd.DataFrame,
                       gene_universe: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig]):
        """Verified degree-preserving null draws of each restricted reference (FRAMEWORK section 5): out- and
        in-degrees kept, no self edges, every draw checked; Jaccard distance from the observed network and the
        mixing curve as metadata. Draws that barely move (a small or saturated network) are kept but flagged:
        the check warns and the reference's null-based rows say why they cannot test anything."""
        settings = project.reference_null
        nulls = reference_nulls(reference_edges, gene_universe["gene"].tolist(), n_draws=settings.n_draws,
                                seed=project.seeds.reference_null, relations=settings.relations,
                                min_median_distance=settings.min_median_jaccard_distance,
                                max_smallest_p=settings.max_smallest_p,
                                progress=progress_logger(context, "null draws"))
        summaries = nulls.summaries
        curve_table = (nulls.mixing_curves.pivot(index="trades", columns="resource", values="mean_jaccard_distance")
                       if len(nulls.mixing_curves) else pd.DataFrame())
        yield dg.Output(nulls, metadata={
            "resources": len(nulls.codes),
            "null_summary": dg.MetadataValue.md(summaries.to_markdown(index=False) if len(summaries) else "no resource"),
            "mixing_curve": dg.MetadataValue.md(curve_table.to_markdown() if len(curve_table) else "none"),
            **{f"median_jaccard_distance_{row.resource}": float(row.median_jaccard_distance)
               for row in summaries.itertuples()},
        })
        valid = bool(summaries["passed"].all()) if len(summaries) else True
        uninformative = nulls.uninformative()
        yield dg.AssetCheckResult(
            check_name="check_null_verified",
            passed=valid and not uninformative,
            # invalid draws are an error; draws too close to the observed network are a warning to read
            severity=dg.AssetCheckSeverity.ERROR if not valid else dg.AssetCheckSeverity.WARN,
            metadata={"margins_preserved_and_simple": valid, "enough_mixing": not uninformative,
                      "barely_moving": dg.MetadataValue.json(uninformative),
                      "min_median_jaccard_distance": float(summaries["median_jaccard_distance"].min())
                      if len(summaries) else float("nan"),
                      "max_identical_to_observed": int(summaries["identical_to_observed"].max())
                      if len(summaries) else 0},
        )

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"json"})
    def attention_sources(gene_universe: pd.DataFrame, de_labels: pd.DataFrame, reference_edges: pd.DataFrame,
                          project: dg.ResourceParam[ScinterpConfig]) -> dg.Output:
        """The genes attention extraction keeps per head (attention.sources): every universe gene ("all") or
        the genes the analyses query ("analyses": perturbed genes, sources of "regulates" references and
        attention.extra_sources). The head mean of every pair is kept either way. Its data version is its
        content, so extraction goes stale only when the list changes."""
        settings = project.attention
        universe = gene_universe["gene"].tolist()
        sources = universe if settings.sources == "all" else analysis_sources(
            universe, de_labels["perturbation"].unique(), reference_edges, settings.extra_sources)
        outside = sorted(set(settings.extra_sources) - set(universe))
        if not sources:
            raise dg.Failure(description=(
                f"attention.sources: analyses found no gene to keep per head among the {len(universe)} universe "
                "genes: no perturbed gene and no source of a 'regulates' reference is in the universe "
                f"(extra_sources outside it: {', '.join(outside) or 'none'}). Fix: set attention.sources: all, or "
                "list universe genes in attention.extra_sources."))
        return dg.Output(sources, data_version=dg.DataVersion(text_digest(*sources)),
                         metadata={"mode": settings.sources, "sources": len(sources), "universe_genes": len(universe),
                                   "extra_sources_outside_universe": ", ".join(outside) or "none"})

    return [screen_data, control_cells, gene_universe, de_labels, gene_features, correlation_edges, reference_edges,
            reference_null, attention_sources]
