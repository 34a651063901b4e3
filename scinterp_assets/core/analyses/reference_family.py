"""Family R beyond A12, for every reference of a cell type: the one call the `reference_battery` asset makes.

A09 cross-fitted residualisation (descriptive share for every reference; the confirmatory beyond-features
test for directed TF -> target references), A10 degree-preserving null decomposition (resources with null draws),
A11 direction (signed directed references only), A13 partial correlation given co-expression, A14 top-k
enrichment, A15 per-TF / TF-block bootstrap / leave-one-TF-out, A16 co-expression mapping, and the A12
depth trend from the per-layer A12 rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from scinterp_assets.core.analyses.per_tf import per_tf_tests
from scinterp_assets.core.analyses.reference_battery import (
    coexpression_mapping_tests,
    depth_correlation_tests,
    direction_sensitivity_tests,
    direction_testable,
    top_k_enrichment_tests,
)
from scinterp_assets.core.analyses.reference_nulls_analysis import degree_null_tests
from scinterp_assets.core.analyses.reference_structure import evaluable_references, per_layer_reference_auroc
from scinterp_assets.core.analyses.incremental_confirmatory import ConfirmatorySettings
from scinterp_assets.core.analyses.residualisation import (
    beyond_features_tests,
    partial_correlation_tests,
    residualisation_tests,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.networks.reference_nulls import ReferenceNulls
from scinterp_assets.core.progress import Progress, no_progress


@dataclass(frozen=True)
class ReferenceFamilySettings:
    bootstrap_resamples: int  # A09 / A15 TF-block bootstrap
    residualisation_folds: int  # A09 cross-fitting folds over source genes
    residualisation_models: tuple[str, ...]  # A09 covariate models ("ols", "boosted")
    top_k_edges: int  # A14
    depth_trend_permutations: int  # A12 depth trend, models deeper than the exact-enumeration limit
    beyond_features: ConfirmatorySettings  # A09 confirmatory: folds, repeats, two-way resamples, alpha
    min_targets_per_tf: int  # A09 confirmatory: TFs with fewer targets among the genes are left out
    min_reference_edges: int  # references with fewer pairs among the genes are left out (A12 says why)
    seed: int


def reference_family_tests(reference_edges: pd.DataFrame, genes: Sequence[str], score_sets: Sequence[ScoreSet],
                           features: pd.DataFrame, nulls: ReferenceNulls, a12_rows: pd.DataFrame,
                           settings: ReferenceFamilySettings, progress: Progress = no_progress) -> list[dict]:
    """Registry rows (without shared fields). score_sets: attention variants and correlation over `genes`
    (the correlation set doubles as the co-expression control of A13/A16); a12_rows: this partition's
    A12 registry rows (per-layer reference AUROCs). References with fewer than `min_reference_edges` pairs
    among `genes` are left out (`reference_structure.evaluable_references`; their A12 row says why).
    `progress` after each reference."""
    coexpression = next(score_set for score_set in score_sets if score_set.method == "correlation")
    reference_edges, _ = evaluable_references(reference_edges, genes, settings.min_reference_edges)
    resources = sorted(reference_edges["resource"].unique())
    rows = degree_null_tests(reference_edges, genes, score_sets, nulls, resources=sorted(set(resources) & set(nulls.codes)))
    rows += coexpression_mapping_tests(reference_edges, resources, genes, score_sets, coexpression)
    rows += depth_correlation_tests(per_layer_reference_auroc(a12_rows[a12_rows["analysis_id"] == "A12"]),
                                    n_permutations=settings.depth_trend_permutations, seed=settings.seed)
    for index, resource in enumerate(resources, start=1):
        reference = reference_edges[reference_edges["resource"] == resource]
        rows += residualisation_tests(reference, resource, genes, score_sets, features,
                                      n_folds=settings.residualisation_folds, n_bootstrap=settings.bootstrap_resamples,
                                      seed=settings.seed, models=settings.residualisation_models)
        if str(reference["relation"].iloc[0]) == "regulates":
            rows += beyond_features_tests(reference, resource, genes, score_sets, features,
                                          min_targets=settings.min_targets_per_tf, settings=settings.beyond_features,
                                          seed=settings.seed)
        if direction_testable(reference):
            rows += direction_sensitivity_tests(reference, resource, genes, score_sets)
        rows += partial_correlation_tests(reference, resource, genes, score_sets, coexpression)
        rows += top_k_enrichment_tests(reference, resource, genes, score_sets, k=settings.top_k_edges)
        rows += per_tf_tests(reference, resource, genes, score_sets, n_bootstrap=settings.bootstrap_resamples,
                             seed=settings.seed)
        progress(index, len(resources), f"reference {resource}")
    return rows
