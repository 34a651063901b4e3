"""Family R (part of A12): reference AUROC of every score set against a reference network.

All ordered pairs (i != j) of the evaluable genes are ranked; positives are the reference's directed
pairs (undirected resources list both directions). A seeded random score is the negative control.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.stats.auroc import auroc_mann_whitney_p


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
    reference: pd.DataFrame, resource: str, genes: list[str], score_sets: list[ScoreSet]
) -> list[dict]:
    """Registry rows (without shared fields): AUROC of each score set vs reference membership, with the
    Mann-Whitney p-value of AUROC = 0.5. The random control is descriptive (confirmatory = False)."""
    membership = reference_membership(reference, genes)
    off_diagonal = ~np.eye(len(genes), dtype=bool)
    labels = membership[off_diagonal]
    n_positives = int(labels.sum())
    rows = []
    for score_set in score_sets:
        area, p_value = auroc_mann_whitney_p(labels, score_set.matrix[off_diagonal])
        name = score_set.label.replace(" ", "_")
        rows.append(
            {
                "analysis_id": "A12",
                "test_id": f"A12:{resource}:{name}",
                "family": "R",
                "layer": score_set.layer if score_set.layer != NO_LAYER else None,
                "aggregation": score_set.aggregation,
                "statistic_name": "auroc",
                "statistic": area,
                "effect_name": "auroc_minus_0.5",
                "effect": area - 0.5,
                "p_value": p_value,
                "n": int(labels.size),
                "n_positives": n_positives,
                "confirmatory": score_set.method != "random",
                "negatives": "all non-reference ordered pairs",
            }
        )
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
