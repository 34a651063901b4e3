"""Model assets: the checkpoint (per model) and everything computed from its attention (per model x cell type)."""


import time

import anndata as ad
import dagster as dg
import numpy as np
import pandas as pd

from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.analyses.perturbation_prediction import (
    PerturbationFilter,
    per_perturbation_auroc,
    perturbation_prediction_tests,
    resampled_pf_auroc,
)
from scinterp_assets.core.analyses.reference_structure import NOT_EVALUABLE, reference_structure_tests
from scinterp_assets.core.analyses.score_sets import (
    TF_OUT_DEGREE_PREFIX,
    ScoreSet,
    gene_level_score_sets,
    random_score_set,
    model_score_sets,
    tf_out_degree_score_sets,
)
from scinterp_assets.core.attention.edges import EDGE_AGGREGATIONS, attention_edge_table, evaluable_genes
from scinterp_assets.core.attention.grouped import GroupedScores
from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.datasets.screens import check_raw_counts
from scinterp_assets.core.edges import validate_edges
from scinterp_assets.core.models import GeneCoverageError
from scinterp_assets.defs.metadata import accumulator_reads, frame_metadata
from scinterp_assets.defs.partitions import MODEL_PARTITIONS, model_and_cell_type
from scinterp_assets.defs.registry_fields import registry_table, shared_registry_fields
from scinterp_assets.defs.scaling_design import (
    GroupedDesignTooLarge,
    family_s_skipped,
    grouped_rows,
    scaling_design,
)
from scinterp_assets.resources.contracts import ContractRunner, contract_check_spec
from scinterp_assets.resources.model_store import ModelStore

GROUP = "model_evaluation"
# The analyses read attention from the accumulators, not from attention_edges, but stay downstream of it: its
# blocking edge-table contract (schema, share of pairs never co-present) guards the scores they rank.
EDGE_CONTRACT = [dg.AssetKey("attention_edges")]


def pf_score_sets(attention_scores: AttentionScores, value_weighted_scores: AttentionScores,
                  correlation_edges: pd.DataFrame, gene_features: pd.DataFrame,
                  reference_edges: pd.DataFrame) -> tuple[list[str], list[ScoreSet]]:
    """The evaluable genes and every score set family P ranks targets with: attention, correlation, the
    gene-level baselines and the TF out-degree counter-example of each "regulates" reference."""
    genes = evaluable_genes(attention_scores)
    return genes, (model_score_sets(attention_scores, value_weighted_scores, genes, correlation_edges)
                   + gene_level_score_sets(gene_features, genes) + tf_out_degree_score_sets(reference_edges, genes))


def pf_filter(project: ScinterpConfig) -> PerturbationFilter:
    return PerturbationFilter(project.de_labels.min_positives, project.de_labels.min_negatives)


def model_for(model_store: ModelStore, model_key: str, cells: ad.AnnData):
    """The loaded checkpoint, after checking the cells hold raw counts if its tokeniser needs them."""
    model = model_store.load(model_key)
    if model.needs_raw_counts:
        check_raw_counts(cells, consumer=f"the {model.family} checkpoint '{model_key}'")
    return model


def subsample_cells(controls: ad.AnnData, max_cells: int, seed: int) -> ad.AnnData:
    if controls.n_obs <= max_cells:
        return controls
    chosen = np.sort(np.random.default_rng(seed).choice(controls.n_obs, size=max_cells, replace=False))
    return controls[chosen]


def extraction_cells(control_cells: ad.AnnData, project: ScinterpConfig) -> ad.AnnData:
    """The control cells attention extraction runs on (a seeded subset of attention.max_cells)."""
    return subsample_cells(control_cells, project.attention.max_cells, project.seeds.attention)


def build_model_assets(multi_partitions: dg.MultiPartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=MODEL_PARTITIONS, group_name=GROUP, kinds={"pytorch"})
    def model_checkpoint(context: dg.AssetExecutionContext, model_store: dg.ResourceParam[ModelStore]) -> dg.Output:
        """A registered checkpoint folder (or its random-weights twin, A25): loaded once (safely) to validate
        it; family, shape, weights and fingerprint."""
        checkpoint = model_store.resolve(context.partition_key)
        model = model_store.load(checkpoint.key)
        weights = ("trained" if checkpoint.random_weights_seed is None else
                   f"random (seed {checkpoint.random_weights_seed}), the twin of '{checkpoint.trained_key}'")
        description = {
            "key": checkpoint.key,
            "path": str(checkpoint.path),
            "fingerprint": checkpoint.fingerprint,
            "family": model.family,
            "version": model.version,
            "n_layers": model.n_layers,
            "n_heads": model.n_heads,
            "weights": weights,
        }
        # "checkpoint_folder": the IO manager's "path" names where this description is stored
        return dg.Output(description, metadata={**{k: dg.MetadataValue.text(str(v)) for k, v in description.items()},
                                                "checkpoint_folder": dg.MetadataValue.path(str(checkpoint.path))},
                         data_version=dg.DataVersion(checkpoint.fingerprint))

    def _progress_logger(context: dg.AssetExecutionContext, what: str, batch_size: int):
        def progress(done: int, total: int, elapsed: float) -> None:
            if done == total or done % max(1, total // 5) < batch_size:
                context.log.info(f"{what}: {done}/{total} cells, {done / max(elapsed, 1e-9):.1f} cells/s")

        return progress

    @dg.multi_asset(
        outs={
            "attention_scores": dg.AssetOut(kinds={"pytorch", "numpy"}, description=(
                "Summed attention probability per head for the attention_sources rows (layers x heads x sources x "
                "genes), its head mean for every pair (layers x genes x genes) and pair counts over the control "
                "cells, streamed one layer at a time (query = source row, key = target column).")),
            "value_weighted_scores": dg.AssetOut(kinds={"pytorch", "numpy"}, description=(
                "Summed head-mean cosine similarity of the two genes' per-head context vectors "
                "(softmax(QK^T/sqrt(d)) V), every pair, same cells and pair counts, from the same pass.")),
            "grouped_attention": dg.AssetOut(kinds={"pytorch", "numpy"}, description=(
                "From the same pass, one layer's head-mean attention and value-weighted sums of the reference "
                "sources against every gene per group of cells (A20 ladder buckets, A21 strata, null blocks).")),
        },
        partitions_def=multi_partitions,
        group_name=GROUP,
        deps=[model_checkpoint],
        check_specs=[dg.AssetCheckSpec("check_evaluable_coverage", asset="attention_scores",
                                       partitions_def=multi_partitions, blocking=True)],
    )
    def attention_extraction(context: dg.AssetExecutionContext, control_cells: ad.AnnData,
                             gene_universe: pd.DataFrame, attention_sources: list, cell_strata: pd.DataFrame,
                             reference_edges: pd.DataFrame,
                             project: dg.ResourceParam[ScinterpConfig], model_store: dg.ResourceParam[ModelStore]):
        model_key, cell_type = model_and_cell_type(context)
        settings = project.attention
        model = model_for(model_store, model_key, control_cells)
        genes = gene_universe["gene"].tolist()
        cells = extraction_cells(control_cells, project)
        coverage = model.coverage(cells[:, genes])
        try:  # before the forward pass: a vocabulary that misses the universe fails here, storing nothing
            coverage.require(project.contracts.min_evaluable_fraction, f"{model_key} on cell type {cell_type}")
        except GeneCoverageError as error:
            raise dg.Failure(description=str(error), metadata={
                "vocabulary_coverage": float(coverage.fraction), "universe_genes": coverage.n_genes,
                "unmapped_examples": ", ".join(coverage.unmapped[:10])}) from None
        layers = tuple(range(model.n_layers)) if settings.layers is None else tuple(settings.layers)
        groups, skipped = None, family_s_skipped(project, reference_edges, attention_sources, genes)
        if skipped is None:
            grouped_layer = project.scaling.layer % model.n_layers
            try:
                groups = scaling_design(cell_strata, grouped_rows(reference_edges, attention_sources, genes),
                                        len(genes), grouped_layer, project).groups
                layers = tuple(sorted({*layers, grouped_layer}))
            except GroupedDesignTooLarge as error:  # family S is left out; every other analysis proceeds
                skipped = str(error)
                context.log.warning(f"family S (A20-A21) left out: {skipped}")
        started = time.perf_counter()
        scores, value_weighted, *grouped = model.attention_scores(
            cells, genes, sources=attention_sources, layers=layers, batch_size=settings.batch_size,
            seed=project.seeds.attention,
            device=settings.device, progress=_progress_logger(context, "attention", settings.batch_size),
            num_threads=settings.num_threads, value_weighted=True, token_budget=settings.batch_token_budget,
            groups=groups,
        )
        seconds = time.perf_counter() - started
        grouped = grouped[0] if grouped else GroupedScores.empty(genes, skipped)
        yield dg.Output(grouped, output_name="grouped_attention", metadata={
            "groups": len(grouped.groups), "rows": len(grouped.rows), "layer": grouped.layer,
            "array_megabytes": round((grouped.attention_sum.nbytes + grouped.value_weighted_sum.nbytes
                                      + grouped.count.nbytes) / 1e6, 3)})
        n_evaluable = len(evaluable_genes(scores))
        for name, result in (("attention_scores", scores), ("value_weighted_scores", value_weighted)):
            yield dg.Output(result, output_name=name, metadata={
                "shape": dg.MetadataValue.text(str(result.sum.shape)),
                "per_head_sources": len(result.sources),
                "array_megabytes": dg.MetadataValue.json({
                    array: round(getattr(result, array).nbytes / 1e6, 3) for array in ("sum", "head_mean_sum", "count")}),
                "cells": result.n_cells,
                "cells_per_second": float(result.n_cells / max(seconds, 1e-9)),
                "universe_genes_in_vocabulary": coverage.n_mapped,
                "vocabulary_coverage": float(coverage.fraction),
                "evaluable_genes": n_evaluable,
                "batching": dg.MetadataValue.json({"batch_size": settings.batch_size,
                                                   "batch_token_budget": settings.batch_token_budget}),
                "provenance": dg.MetadataValue.json(result.provenance),
            })
        fraction = n_evaluable / max(len(gene_universe), 1)
        yield dg.AssetCheckResult(
            asset_key="attention_scores",
            check_name="check_evaluable_coverage",
            passed=bool(fraction >= project.contracts.min_evaluable_fraction),
            metadata={"evaluable_fraction": fraction, "expected_at_least": project.contracts.min_evaluable_fraction,
                      "evaluable_genes": n_evaluable, "unmapped_examples": ", ".join(coverage.unmapped[:10])},
        )

    @dg.asset(partitions_def=multi_partitions, group_name=GROUP, deps=[model_checkpoint], kinds={"pytorch", "numpy"})
    def cell_embeddings(context: dg.AssetExecutionContext, control_cells: ad.AnnData,
                        project: dg.ResourceParam[ScinterpConfig], model_store: dg.ResourceParam[ModelStore]):
        """One embedding per control cell (final layer; <cls> where the model has one, else the mean over the
        cell's gene tokens), for cell-state stratification."""
        model_key, cell_type = model_and_cell_type(context)
        settings = project.attention
        model = model_for(model_store, model_key, control_cells)
        embeddings = model.cell_embeddings(
            control_cells, batch_size=settings.batch_size, seed=project.seeds.attention, device=settings.device,
            num_threads=settings.num_threads, progress=_progress_logger(context, "embeddings", settings.batch_size),
            token_budget=settings.batch_token_budget,
        )
        return dg.Output(embeddings, metadata={
            "cells": len(embeddings.cell_ids),
            "dimensions": int(embeddings.values.shape[1]),
            "pooling": embeddings.pooling,
            "skipped_cells": len(embeddings.skipped),
            "provenance": dg.MetadataValue.json(embeddings.provenance),
        })

    @dg.asset(
        partitions_def=multi_partitions,
        group_name=GROUP,
        check_specs=[contract_check_spec("edge_table", "attention_edges", partitions_def=multi_partitions)],
    )
    def attention_edges(attention_scores: AttentionScores, value_weighted_scores: AttentionScores,
                        project: dg.ResourceParam[ScinterpConfig], contracts: dg.ResourceParam[ContractRunner]):
        """Attention edges per layer from the source genes (attention_sources; every gene by default), mean over
        cells holding both genes: attention probability as head-mean and head-max, and the value-weighted cosine
        as head-mean (FRAMEWORK section 4). The published table; the analyses read the accumulators."""
        edges = validate_edges(pd.concat([
            attention_edge_table(scores, method=method, aggregations=EDGE_AGGREGATIONS[method],
                                 sources=attention_scores.sources)
            for method, scores in (("attention", attention_scores), ("value_weighted", value_weighted_scores))
        ], ignore_index=True), name="attention_edges")
        yield dg.Output(edges, metadata={**frame_metadata(edges), **accumulator_reads(attention_scores, value_weighted_scores)})
        result = contracts.validate(
            "edge_table", edges, parameters={"max_null_score_fraction": project.contracts.max_null_score_fraction})
        yield contracts.check_result(result)

    @dg.asset(
        partitions_def=multi_partitions,
        group_name=GROUP,
        deps=EDGE_CONTRACT,
        check_specs=[dg.AssetCheckSpec("check_enough_perturbations", asset="perturbation_auroc",
                                       partitions_def=multi_partitions, blocking=True)],
    )
    def perturbation_auroc(attention_scores: AttentionScores, value_weighted_scores: AttentionScores,
                           correlation_edges: pd.DataFrame, gene_features: pd.DataFrame, de_labels: pd.DataFrame,
                           reference_edges: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig]):
        """Per-perturbation PF AUROC of attention, correlation, gene-level baselines and the TF out-degree
        counter-example (one per "regulates" reference, synthetic screens: the planted network) on the
        evaluable set."""
        genes, score_sets = pf_score_sets(attention_scores, value_weighted_scores, correlation_edges, gene_features,
                                          reference_edges)
        table = per_perturbation_auroc(de_labels, genes, score_sets, pf_filter(project))
        n_perturbations = table["perturbation"].nunique()
        resources = ", ".join(sorted(reference_edges["resource"].unique())) or "none"
        counterexamples = sorted({s.method for s in score_sets if s.method.startswith(TF_OUT_DEGREE_PREFIX)})
        tf_out_degree = (", ".join(counterexamples) if counterexamples
                         else f"not run: no reference with relation 'regulates' (references: {resources})")
        yield dg.Output(table, metadata={**frame_metadata(table), "perturbations": n_perturbations,
                                         "evaluable_genes": len(genes),
                                         "tf_out_degree_counterexample": tf_out_degree, **accumulator_reads(attention_scores, value_weighted_scores)})
        yield dg.AssetCheckResult(
            check_name="check_enough_perturbations",
            passed=bool(n_perturbations >= project.contracts.min_evaluable_perturbations),
            metadata={"perturbations": n_perturbations, "expected_at_least": project.contracts.min_evaluable_perturbations},
        )

    @dg.asset(partitions_def=multi_partitions, group_name=GROUP, deps=EDGE_CONTRACT)
    def perturbation_prediction(context: dg.AssetExecutionContext, perturbation_auroc: pd.DataFrame,
                                attention_scores: AttentionScores, value_weighted_scores: AttentionScores,
                                correlation_edges: pd.DataFrame, gene_features: pd.DataFrame,
                                de_labels: pd.DataFrame, reference_edges: pd.DataFrame,
                                gene_universe: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig],
                                model_store: dg.ResourceParam[ModelStore]) -> dg.Output:
        """Registry rows for A01 (attention vs correlation) and A04 (gene-level baselines, confirmatory; the TF
        out-degree counter-example, descriptive): mean PF AUROC differences with a two-way (perturbations x
        targets) bootstrap; the study's paired Wilcoxon as descriptive rows."""
        genes, score_sets = pf_score_sets(attention_scores, value_weighted_scores, correlation_edges, gene_features,
                                          reference_edges)
        resamples = resampled_pf_auroc(de_labels, genes, score_sets, pf_filter(project),
                                       n_bootstrap=project.analyses.perturbation_bootstrap,
                                       seed=project.seeds.perturbation_bootstrap)
        rows = registry_table(
            context, perturbation_prediction_tests(perturbation_auroc, resamples, alpha=project.analyses.alpha),
            **shared_registry_fields(context, project, model_store, len(gene_universe)),
            negatives="non-DE universe targets",
            label_rule=project.label_rule(model_and_cell_type(context)[1]),
            seed=project.seeds.perturbation_bootstrap,
        )
        return dg.Output(rows, metadata={**frame_metadata(rows),
                                         "bootstrap_resamples": project.analyses.perturbation_bootstrap,
                                         **accumulator_reads(attention_scores, value_weighted_scores)})

    @dg.asset(partitions_def=multi_partitions, group_name=GROUP, deps=EDGE_CONTRACT)
    def reference_structure(context: dg.AssetExecutionContext, attention_scores: AttentionScores,
                            value_weighted_scores: AttentionScores, correlation_edges: pd.DataFrame,
                            reference_edges: pd.DataFrame, reference_evaluability: pd.DataFrame,
                            gene_universe: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig],
                            model_store: dg.ResourceParam[ModelStore]) -> dg.Output:
        """Registry rows for per-layer reference AUROC (part of A12) with correlation and a random control; p of
        AUROC = 0.5 by relabelling genes. A reference not evaluable for the cell type, or with too few pairs
        among the genes the model can score, gets one descriptive `not_evaluable` row saying why."""
        genes = evaluable_genes(attention_scores)
        score_sets = model_score_sets(attention_scores, value_weighted_scores, genes, correlation_edges,
                                      ranked_rows=genes)
        score_sets.append(random_score_set(len(genes), project.seeds.random_scores))
        permutations = project.analyses.reference_permutations
        rows = reference_structure_tests(reference_edges, reference_evaluability, genes, score_sets,
                                         min_edges=project.contracts.min_reference_edges,
                                         n_permutations=permutations,
                                         seed=project.seeds.reference_permutation)
        table = registry_table(context, rows, **shared_registry_fields(context, project, model_store, len(gene_universe)),
                               label_rule="reference membership", seed=project.seeds.reference_permutation)
        not_evaluable = table.loc[table["statistic_name"] == NOT_EVALUABLE, "note"].tolist()
        return dg.Output(table, metadata={**frame_metadata(table), "gene_permutations": permutations,
                                          **accumulator_reads(attention_scores, value_weighted_scores),
                                          "not_evaluable": dg.MetadataValue.md("\n".join(f"- {note}" for note in not_evaluable)
                                                                               or "none")})

    return [model_checkpoint, attention_extraction, cell_embeddings, attention_edges, perturbation_auroc, perturbation_prediction,
            reference_structure]
