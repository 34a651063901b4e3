"""The statistical battery beyond A01/A04/A12, partitioned by model x cell type (FRAMEWORK section 6).

Each asset unpacks its inputs, calls one core analysis and returns registry rows (FRAMEWORK section 7) that
`test_registry` gathers. An analysis the data cannot support (too few perturbations for the folds, a
protocol switched off) returns no rows and says why in its metadata.
"""

import anndata as ad
import dagster as dg
import pandas as pd
from threadpoolctl import threadpool_limits

from scinterp_assets.config import AnalysisConfig, ScinterpConfig
from scinterp_assets.core.analyses.incremental_confirmatory import ConfirmatorySettings, incremental_value_tests
from scinterp_assets.core.analyses.incremental_value import covariate_r2_tests
from scinterp_assets.core.analyses.layer_selection import layer_selection_tests
from scinterp_assets.core.analyses.perturbation_prediction import per_perturbation_auroc, resampled_pf_auroc
from scinterp_assets.core.analyses.propensity import propensity_matched_tests
from scinterp_assets.core.analyses.reference_family import ReferenceFamilySettings, reference_family_tests
from scinterp_assets.core.analyses.score_sets import gene_level_score_sets, model_score_sets
from scinterp_assets.core.analyses.sensitivity import hvg_protocol_confound, sensitivity_grid
from scinterp_assets.core.analyses.sensitivity_cells import GridSettings, grid_cell_evaluator
from scinterp_assets.core.attention.edges import evaluable_genes
from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.datasets.de_labels import DELabelRule, relabel_within
from scinterp_assets.core.datasets.preprocessing import perturbed_genes
from scinterp_assets.core.networks.reference_nulls import ReferenceNulls
from scinterp_assets.core.stats.registry import empty_registry
from scinterp_assets.defs.console import progress_logger
from scinterp_assets.defs.metadata import accumulator_reads, frame_metadata
from scinterp_assets.defs.model_assets import EDGE_CONTRACT, pf_filter
from scinterp_assets.defs.partitions import model_and_cell_type
from scinterp_assets.defs.registry_fields import registry_table, shared_registry_fields
from scinterp_assets.resources.model_store import ModelStore

GROUP = "model_evaluation"


def confirmatory_settings(settings: AnalysisConfig) -> ConfirmatorySettings:
    """The confirmatory incremental-value settings (A05/A06, and A09 beyond features) from the configuration."""
    return ConfirmatorySettings(
        n_folds=settings.incremental_value_folds, joint_folds=settings.incremental_value_joint_folds,
        n_repeats=settings.incremental_value_repeats, n_bootstrap=settings.incremental_value_bootstrap,
        alpha=settings.alpha)


def _skipped(reason: str) -> dg.Output:
    return dg.Output(empty_registry(), metadata={"rows": 0, "skipped": reason})


def build_analysis_assets(multi_partitions: dg.MultiPartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=multi_partitions, group_name=GROUP, deps=EDGE_CONTRACT)
    def layer_selection(context: dg.AssetExecutionContext, perturbation_auroc: pd.DataFrame,
                        attention_scores: AttentionScores, value_weighted_scores: AttentionScores,
                        correlation_edges: pd.DataFrame, de_labels: pd.DataFrame, gene_universe: pd.DataFrame,
                        project: dg.ResourceParam[ScinterpConfig],
                        model_store: dg.ResourceParam[ModelStore]) -> dg.Output:
        """A02: layer profile and layer selection nested over perturbations and targets (never the best
        layer on the evaluation data), compared with correlation on held-out blocks (two-way bootstrap);
        per-layer tests Bonferroni-corrected."""
        folds = project.analyses.layer_selection_folds
        n_perturbations = perturbation_auroc["perturbation"].nunique()
        if n_perturbations < folds:
            return _skipped(f"{n_perturbations} evaluable perturbations, fewer than the {folds} outer folds")
        genes = evaluable_genes(attention_scores)
        score_sets = model_score_sets(attention_scores, value_weighted_scores, genes, correlation_edges)
        resamples = resampled_pf_auroc(de_labels, genes, score_sets, pf_filter(project),
                                       n_bootstrap=project.analyses.perturbation_bootstrap,
                                       seed=project.seeds.perturbation_bootstrap, n_target_folds=folds)
        rows = registry_table(
            context, layer_selection_tests(perturbation_auroc, resamples, seed=project.seeds.layer_selection,
                                           alpha=project.analyses.alpha),
            **shared_registry_fields(context, project, model_store, len(gene_universe)),
            negatives="non-DE universe targets", label_rule=project.label_rule(model_and_cell_type(context)[1]),
        )
        return dg.Output(rows, metadata={**frame_metadata(rows), **accumulator_reads(attention_scores, value_weighted_scores)})

    @dg.asset(partitions_def=multi_partitions, group_name=GROUP, deps=EDGE_CONTRACT)
    def hvg_protocol_confound_tests(context: dg.AssetExecutionContext, perturbation_auroc: pd.DataFrame,
                                    attention_scores: AttentionScores, value_weighted_scores: AttentionScores,
                                    correlation_edges: pd.DataFrame, gene_features: pd.DataFrame,
                                    de_labels: pd.DataFrame, gene_universe: pd.DataFrame,
                                    project: dg.ResourceParam[ScinterpConfig],
                                    model_store: dg.ResourceParam[ModelStore]) -> dg.Output:
        """A22: PF AUROC with perturbed genes forced into the universe against the plain top-N HVG universe
        (the forced universe's HVGs: same scores, labels re-corrected over the smaller universe)."""
        if not project.preprocessing.force_perturbed_genes:
            return _skipped("preprocessing.force_perturbed_genes is off: the universe is already the plain HVG set")
        rule = project.de_labels
        hvgs = set(gene_universe.loc[gene_universe["is_hvg"], "gene"])
        plain_genes = [gene for gene in evaluable_genes(attention_scores) if gene in hvgs]
        labels = relabel_within(de_labels, plain_genes,
                                DELabelRule(rule.q_threshold, rule.min_abs_log_difference, rule.min_cells, rule.test))
        score_sets = (model_score_sets(attention_scores, value_weighted_scores, plain_genes, correlation_edges)
                      + gene_level_score_sets(gene_features, plain_genes))
        plain = per_perturbation_auroc(labels, plain_genes, score_sets,
                                       pf_filter(project))
        if plain.empty:
            return _skipped("no perturbation is evaluable in the plain HVG universe")
        table, rows = hvg_protocol_confound(perturbation_auroc, plain)
        registry = registry_table(
            context, rows, **shared_registry_fields(context, project, model_store, len(gene_universe)),
            negatives="non-DE universe targets", label_rule=project.label_rule(model_and_cell_type(context)[1]),
        )
        return dg.Output(registry, metadata={**frame_metadata(registry), **accumulator_reads(attention_scores, value_weighted_scores),
                                             "comparison": dg.MetadataValue.md(table.to_markdown(index=False))})

    @dg.asset(partitions_def=multi_partitions, group_name=GROUP, deps=EDGE_CONTRACT)
    def reference_battery(context: dg.AssetExecutionContext, attention_scores: AttentionScores,
                          value_weighted_scores: AttentionScores, correlation_edges: pd.DataFrame,
                          reference_edges: pd.DataFrame, reference_null: ReferenceNulls,
                          gene_features: pd.DataFrame, reference_structure: pd.DataFrame,
                          gene_universe: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig],
                          model_store: dg.ResourceParam[ModelStore]) -> dg.Output:
        """Family R beyond A12 for every reference: A09 cross-fitted residualisation, A10 degree-preserving
        null decomposition, A11 direction, A13 partial correlation given co-expression, A14 top-k enrichment,
        A15 per-TF / TF-block bootstrap / leave-one-TF-out, A16 co-expression mapping, A12 depth correlation."""
        settings = project.analyses
        genes = evaluable_genes(attention_scores)
        seed = project.seeds.reference_battery
        with threadpool_limits(limits=settings.threads):
            score_sets = model_score_sets(attention_scores, value_weighted_scores, genes, correlation_edges,
                                          ranked_rows=genes)
            rows = reference_family_tests(
                reference_edges, genes, score_sets,
                gene_features, reference_null, reference_structure,
                ReferenceFamilySettings(settings.bootstrap_resamples, settings.residualisation_folds,
                                        settings.residualisation_models, settings.top_k_edges,
                                        settings.depth_trend_permutations, confirmatory_settings(settings),
                                        project.reference_restriction.min_targets_per_tf,
                                        project.contracts.min_reference_edges, seed),
                progress_logger(context, "family R"),
            )
        registry = registry_table(context, rows, **shared_registry_fields(context, project, model_store, len(gene_universe)),
                                  label_rule="reference membership", seed=seed)
        return dg.Output(registry, metadata={**frame_metadata(registry), "evaluable_genes": len(genes),
                                             **accumulator_reads(attention_scores, value_weighted_scores),
                                             "analyses": ", ".join(sorted(registry["analysis_id"].unique()))})

    @dg.asset(partitions_def=multi_partitions, group_name=GROUP, deps=EDGE_CONTRACT)
    def incremental_value(context: dg.AssetExecutionContext, attention_scores: AttentionScores,
                          value_weighted_scores: AttentionScores, correlation_edges: pd.DataFrame,
                          gene_features: pd.DataFrame, de_labels: pd.DataFrame, perturbation_auroc: pd.DataFrame,
                          gene_universe: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig],
                          model_store: dg.ResourceParam[ModelStore]) -> dg.Output:
        """A05-A08: does an edge score add to gene-level features? Confirmatory: flexible logistic and boosted
        models on both genes' features with and without the residualised score, GroupKFold by perturbation
        (A05), by target and joint (A06), repeated over fold seeds, delta per-perturbation AUROC with a
        two-way bootstrap; descriptive: AUPRC / top-k recall and the study's form; A07 covariate R^2; A08
        propensity matching."""
        settings, rule = project.analyses, project.de_labels
        n_perturbations = perturbation_auroc["perturbation"].nunique()
        if n_perturbations < settings.incremental_value_folds:
            return _skipped(f"{n_perturbations} evaluable perturbations, fewer than the "
                            f"{settings.incremental_value_folds} folds")
        genes = evaluable_genes(attention_scores)
        score_sets = model_score_sets(attention_scores, value_weighted_scores, genes, correlation_edges)
        label_rule = project.label_rule(model_and_cell_type(context)[1])
        common = {"rule": pf_filter(project),
                  "seed": project.seeds.incremental_value, "label_rule": label_rule}
        classifiers = settings.incremental_value_models
        # A07 regresses the score on the features: the linear counterpart of the logistic model is OLS
        regressors = tuple("ols" if model == "logistic" else model for model in classifiers)
        with threadpool_limits(limits=settings.threads):
            rows = incremental_value_tests(de_labels, gene_features, genes, score_sets, models=classifiers,
                                           splits=settings.incremental_value_splits,
                                           settings=confirmatory_settings(settings),
                                           progress=progress_logger(context, "A05/A06 confirmatory"), **common)
            folds = {"n_folds": settings.incremental_value_folds}
            rows += covariate_r2_tests(de_labels, gene_features, genes, score_sets, models=regressors, **folds,
                                       **common)
            rows += propensity_matched_tests(de_labels, gene_features, genes, score_sets, models=classifiers,
                                             n_bootstrap=settings.incremental_value_bootstrap, **folds, **common)
        registry = registry_table(context, rows, **shared_registry_fields(context, project, model_store, len(gene_universe)))
        return dg.Output(registry, metadata={**frame_metadata(registry), "perturbations": n_perturbations,
                                             "score_sets": len(score_sets), **accumulator_reads(attention_scores, value_weighted_scores)})

    @dg.asset(partitions_def=multi_partitions, group_name=GROUP, deps=EDGE_CONTRACT)
    def sensitivity_grid_tests(context: dg.AssetExecutionContext, screen_data: ad.AnnData,
                               attention_scores: AttentionScores, value_weighted_scores: AttentionScores,
                               gene_universe: pd.DataFrame, project: dg.ResourceParam[ScinterpConfig],
                               model_store: dg.ResourceParam[ModelStore]) -> dg.Output:
        """A03: PF AUROC over the grid LFC threshold x N_ctrl x HVG (analyses.sensitivity_*): one-sample tests
        against chance per method and whether gene-level dominance holds in each cell. Cells beyond the data
        (more controls than the screen has, more HVGs than the extracted universe) are skipped, not capped."""
        settings, rule, preprocessing = project.analyses, project.de_labels, project.preprocessing
        genes = evaluable_genes(attention_scores)
        perturbed = perturbed_genes(screen_data)
        forced = perturbed if preprocessing.force_perturbed_genes else []
        # the grid ranks targets from the screen's perturbed genes, which need not all be attention sources
        score_sets = model_score_sets(attention_scores, value_weighted_scores, genes,
                                      ranked_rows=set(perturbed) & set(genes))
        evaluate = grid_cell_evaluator(
            screen_data, score_sets, genes, forced,
            GridSettings(rule.q_threshold, rule.min_cells, rule.test, rule.min_positives, rule.min_negatives,
                         preprocessing.target_sum, project.seeds.control_sampling),
        )
        n_controls = int((screen_data.obs["perturbation"] == screen_data.uns["control_label"]).sum())
        grid = sensitivity_grid(
            evaluate, settings.sensitivity_lfc, settings.sensitivity_n_ctrl, settings.sensitivity_n_hvg,
            n_available_controls=n_controls, n_available_genes=len(gene_universe), alpha=settings.alpha,
        )
        registry = registry_table(context, grid.rows,
                                  **shared_registry_fields(context, project, model_store, len(gene_universe)),
                                  negatives="non-DE universe targets")
        return dg.Output(registry, metadata={**frame_metadata(registry), **accumulator_reads(attention_scores, value_weighted_scores),
                                             "grid": dg.MetadataValue.md(grid.cells.to_markdown(index=False))})

    return [layer_selection, hvg_protocol_confound_tests, reference_battery, incremental_value, sensitivity_grid_tests]
