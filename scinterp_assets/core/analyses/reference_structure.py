"""Family R (part of A12): reference AUROC of every score set against a reference network.

All ordered pairs (i != j) of the evaluable genes are ranked; positives are the reference's directed
pairs (undirected resources list both directions). A seeded random score is the negative control.

The test of AUROC = 0.5 relabels the genes (`core.stats.permutation.gene_permutation_auroc`, the quadratic
assignment procedure): exact for a score with any gene-level structure that is unrelated to the reference.
A Mann-Whitney test treats every pair as independent, but a TF's positives share its row and a target's
pairs share its column: a score with gene-level structure unrelated to the reference (a gene it likes as a
target, say) then reaches p < 0.05 far more often than 5%. A cluster-robust SE over source and target
genes does better but is itself too small with the few TFs of a real reference (both measured in
benchmarks/README.md, calibration). No interval is reported; the p-value is the permutation test's.

A reference is evaluated only where it has enough pairs: `reference_evaluability` decides per cell type
(the universe), `evaluable_references` again among the genes a model can score. Each reference left out
gets one descriptive row, `A12:<resource>:not_evaluable`, whose note says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.per_tf import score_seed
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.networks.references import reference_evaluability

NOT_EVALUABLE = "not_evaluable"  # statistic_name (and test id suffix) of a row saying why a reference was left out
from scinterp_assets.core.stats.auroc import DegenerateScoreWarning
from scinterp_assets.core.stats.permutation import gene_permutation_auroc


def reference_membership(reference: pd.DataFrame, genes: list[str]) -> np.ndarray:
    """(G, G) bool: True where (source, target) is a reference pair inside `genes`; diagonal False."""
    index = pd.Index(genes)
    rows = index.get_indexer(reference["source"])
    columns = index.get_indexer(reference["target"])
    inside = (rows >= 0) & (columns >= 0) & (rows != columns)
    membership = np.zeros((len(genes), len(genes)), dtype=bool)
    membership[rows[inside], columns[inside]] = True
    return membership


def reference_auroc_tests(
    reference: pd.DataFrame, resource: str, genes: list[str], score_sets: list[ScoreSet], *, n_permutations: int,
    seed: int,
) -> list[dict]:
    """Registry rows (without shared fields): AUROC of each score set vs reference membership, with the
    two-sided gene-label permutation p of AUROC = 0.5 (module docstring; `n_permutations` relabellings, a
    seed stream per resource and score set). The random control is descriptive (confirmatory = False)."""
    membership = reference_membership(reference, genes)
    off_diagonal = ~np.eye(len(genes), dtype=bool)
    n_positives = int(membership[off_diagonal].sum())
    rows = []
    for score_set in score_sets:
        name = score_set.label.replace(" ", "_")
        values = score_set.matrix[off_diagonal]
        if np.isnan(values).all() or np.all(values == values[0]):
            warnings.warn(f"{score_set.label}: constant score; AUROC 0.5", DegenerateScoreWarning, stacklevel=2)
        result = gene_permutation_auroc(membership, score_set.matrix, n_permutations=n_permutations,
                                        seed=score_seed(seed, resource, name))
        rows.append(
            {
                "analysis_id": "A12",
                "test_id": f"A12:{resource}:{name}",
                "family": "R",
                "layer": score_set.layer if score_set.layer != NO_LAYER else None,
                "aggregation": score_set.aggregation,
                "statistic_name": "auroc",
                "statistic": result.auroc,
                "effect_name": "auroc_minus_0.5",
                "effect": result.auroc - 0.5,
                "p_value": result.p_value,
                "n": int(off_diagonal.sum()),
                "n_positives": n_positives,
                "confirmatory": score_set.method != "random",
                "negatives": "all non-reference ordered pairs",
            }
        )
    return rows


def evaluable_references(reference_edges: pd.DataFrame, genes: Sequence[str],
                         min_edges: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(edges of the references with at least `min_edges` pairs among `genes`, the evaluability rows of
    the others): a reference evaluable in the universe may keep too few pairs among the genes a model can
    score (its evaluable genes)."""
    inside = reference_edges["source"].isin(genes) & reference_edges["target"].isin(genes)
    evaluability = reference_evaluability(
        reference_edges[inside], sorted(reference_edges["resource"].unique()), min_edges,
        where=f"among the {len(genes):,} universe genes the model can score",
        fix="The model's vocabulary misses the others (attention_scores metadata: evaluable_genes and unmapped "
            "examples); a checkpoint whose vocabulary covers the universe evaluates it")
    kept = reference_edges["resource"].isin(evaluability.loc[evaluability["evaluable"], "resource"])
    return reference_edges[kept], evaluability[~evaluability["evaluable"]]


def not_evaluable_rows(evaluability: pd.DataFrame) -> list[dict]:
    """One descriptive A12 row per reference that `evaluability` (EVALUABILITY_COLUMNS) marks not
    evaluable: no statistic, n_positives = the edges it keeps, the reason as note."""
    return [{"analysis_id": "A12", "test_id": f"A12:{row.resource}:{NOT_EVALUABLE}", "family": "R",
             "statistic_name": NOT_EVALUABLE, "n_positives": int(row.edges), "confirmatory": False,
             "note": f"reference {row.resource!r} not evaluable: {row.reason}"}
            for row in evaluability[~evaluability["evaluable"]].itertuples()]


def reference_structure_tests(reference_edges: pd.DataFrame, evaluability: pd.DataFrame, genes: list[str],
                              score_sets: list[ScoreSet], *, min_edges: int, n_permutations: int,
                              seed: int) -> list[dict]:
    """A12 rows of one model x cell type: `reference_auroc_tests` for every reference with at least
    `min_edges` pairs among `genes`, a `not_evaluable` row for each other one and for each reference that
    `evaluability` (the cell type's) marks not evaluable."""
    evaluable, left_out = evaluable_references(reference_edges, genes, min_edges)
    rows = not_evaluable_rows(pd.concat([evaluability, left_out], ignore_index=True))
    for resource, reference in evaluable.groupby("resource"):
        rows += reference_auroc_tests(reference, str(resource), genes, score_sets, n_permutations=n_permutations,
                                      seed=seed)
    return rows


def per_layer_reference_auroc(a12_rows: pd.DataFrame) -> pd.DataFrame:
    """A12 registry rows -> one row per (resource, method, aggregation, layer) with its AUROC, for the depth
    correlation (reference_battery.depth_correlation_tests). Test ids read "[...|]A12:<resource>:<name>",
    where <name> is "<method>_L<layer>_<aggregation>" for per-layer scores."""
    local = a12_rows["test_id"].str.split("|").str[-1].str.split(":")
    layered = a12_rows.assign(resource=local.str[1], name=local.str[2])[a12_rows["layer"].notna()]
    return pd.DataFrame({
        "resource": layered["resource"].to_numpy(),
        "method": layered["name"].str.split("_L").str[0].to_numpy(),
        "aggregation": layered["aggregation"].to_numpy(),
        "layer": layered["layer"].astype(int).to_numpy(),
        "auroc": layered["statistic"].to_numpy(dtype=float),
    })
