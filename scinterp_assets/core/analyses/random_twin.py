"""A25, the untrained reference: a checkpoint's attention-derived PF AUROC beside its random-weights twin's
(the same architecture and tokeniser with seeded random weights, evaluated as its own model partition).

For every attention score set (method, layer, head aggregation) both partitions rank the same targets of the
same evaluable perturbations, so the comparison is paired by perturbation: effect = mean over perturbations of
(trained - twin) PF AUROC.

The rows are descriptive: no p-value and no interval. One random draw of the weights is one sample from the
architecture's untrained distribution, so no test over this single draw can hold its level; and the
perturbations share their targets, so an interval that resamples perturbations only would be too narrow (a
two-way interval would need both partitions' resamples, which are not stored). What the twin scores is in the
registry under its own model key, every analysis of it, outside the confirmatory family.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.perturbation_prediction import score_key_name
from scinterp_assets.core.stats.registry import registry_rows

ATTENTION_METHODS = ("attention", "value_weighted")  # the score sets a model's weights produce
TWIN_EFFECT = "mean_pf_auroc_trained_minus_random_weights"


def random_twin_rows(pf_auroc: pd.DataFrame, trained: str, twin: str, cell_type: str) -> list[dict]:
    """A25 rows for one checkpoint (`trained`) and its twin (`twin`) in one cell type, from the long PF AUROC
    table of every partition (`perturbation_auroc_table`: PF_AUROC_COLUMNS + model, cell_type). One row per
    attention score set both partitions hold, over the perturbations both evaluated; none if either partition
    is absent."""
    in_context = pf_auroc[(pf_auroc["cell_type"] == cell_type) & pf_auroc["method"].isin(ATTENTION_METHODS)]
    key = ["method", "layer", "aggregation", "perturbation"]
    paired = in_context[in_context["model"] == trained].merge(
        in_context[in_context["model"] == twin][[*key, "auroc"]], on=key, suffixes=("", "_twin"))
    paired = paired[np.isfinite(paired["auroc"]) & np.isfinite(paired["auroc_twin"])]
    rows = []
    for (method, layer, aggregation), group in paired.groupby(["method", "layer", "aggregation"], sort=True):
        group = group.sort_values("perturbation")
        difference = (group["auroc"] - group["auroc_twin"]).to_numpy()
        name = score_key_name((method, int(layer), aggregation))
        rows.append({
            "analysis_id": "A25",
            "test_id": f"A25:{name}_trained_vs_random_weights",
            "family": "V",
            "layer": int(layer),
            "aggregation": aggregation,
            "statistic_name": "mean_pf_auroc_trained",
            "statistic": float(group["auroc"].mean()),
            "effect_name": TWIN_EFFECT,
            "effect": float(difference.mean()),
            "p_value": np.nan,
            "n": len(difference),
            "n_positives": int(group["n_positives"].sum()),
            "confirmatory": False,
            "note": (f"descriptive: the random-weights twin '{twin}' scores a mean PF AUROC of "
                     f"{group['auroc_twin'].mean():.3f} over the same perturbations; one draw of untrained weights, "
                     "so no test"),
        })
    return rows


def random_twin_registry(registry: pd.DataFrame, pf_auroc: pd.DataFrame, twins: dict[str, str]) -> pd.DataFrame:
    """A25 registry rows of every (twin -> trained) pair in `twins` and every cell type where the registry
    holds both partitions, test ids qualified as "model|cell_type|A25:...". The fields a row shares with its
    partition (checkpoint, modality, universe, label rule, negatives, code and input data versions) are the
    trained partition's A01 rows', which rank the same perturbations."""
    shared_fields = ["checkpoint", "modality", "universe_size", "negatives", "label_rule", "code_version",
                     "input_data_versions"]
    a01 = registry[registry["analysis_id"] == "A01"].drop_duplicates(["model", "cell_type"]).set_index(
        ["model", "cell_type"])
    held = set(zip(registry["model"], registry["cell_type"]))
    rows = []
    for twin, trained in sorted(twins.items()):
        for cell_type in sorted({cell for model, cell in held if model == twin}):
            if (trained, cell_type) not in held or (trained, cell_type) not in a01.index:
                continue
            shared = a01.loc[(trained, cell_type), shared_fields].to_dict()
            for row in random_twin_rows(pf_auroc, trained, twin, cell_type):
                rows.append({**shared, **row, "model": trained, "cell_type": cell_type,
                             "test_id": f"{trained}|{cell_type}|{row['test_id']}"})
    return registry_rows(rows)
