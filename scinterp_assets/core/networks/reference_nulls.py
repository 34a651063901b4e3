"""Degree-preserving null draws for every resource of a universe-restricted reference (FRAMEWORK section 5).

One `ReferenceNulls` per cell type: the universe's gene order (node i = genes[i]) and, per resource, the
verified draws of `null.degree_preserving_null` (directed for "regulates" resources, undirected for
"interacts" ones) with their diagnostics. A10 scores attention against every draw (`null.null_auroc`).
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scinterp_assets.core.attention.scores import save_npz_atomically
from scinterp_assets.core.networks.null import (
    DEFAULT_MAX_SMALLEST_P,
    DEFAULT_MIN_MEDIAN_DISTANCE,
    NullMixingWarning,
    degree_preserving_null,
)
from scinterp_assets.core.progress import Progress, no_progress

MIXING_CURVE_COLUMNS = ("resource", "trades", "mean_jaccard_distance")


@dataclass(frozen=True)
class ReferenceNulls:
    """genes: node order; codes: resource -> (n_draws, n_edges) edge codes source * len(genes) + target;
    summaries: one row per resource (NullDraws.summary() plus resource, relation, warnings); its
    `mixing_problem` is "" when the draws can serve as a null, else why not (`uninformative`);
    mixing_curves: MIXING_CURVE_COLUMNS."""

    genes: tuple[str, ...]
    codes: dict[str, np.ndarray]
    summaries: pd.DataFrame
    mixing_curves: pd.DataFrame

    def __post_init__(self) -> None:
        if set(self.codes) != set(self.summaries["resource"] if len(self.summaries) else []):
            raise ValueError("codes and summaries name different resources")

    def save(self, path: str | Path) -> Path:
        resources = sorted(self.codes)
        return save_npz_atomically(
            path,
            genes=np.asarray(self.genes, dtype=np.str_),
            resources=np.asarray(resources, dtype=np.str_),
            summaries=np.asarray(self.summaries.to_json(orient="records"), dtype=np.str_),
            mixing_curves=np.asarray(self.mixing_curves.to_json(orient="records"), dtype=np.str_),
            **{f"codes_{index}": self.codes[resource] for index, resource in enumerate(resources)},
        )

    def uninformative(self) -> dict[str, str]:
        """Resources whose draws barely move (NullDiagnostics.mixing_problem) -> the reason: a null test
        against them has no power and its rows say so."""
        if not len(self.summaries):
            return {}
        if "mixing_problem" not in self.summaries:  # stored before the reason was recorded
            flagged = self.summaries[self.summaries["low_mixing"] | self.summaries["unique_realisation"]]
            return {resource: "flagged as barely mixed; re-materialise reference_null for the reason"
                    for resource in flagged["resource"]}
        flagged = self.summaries[self.summaries["mixing_problem"].fillna("") != ""]
        return dict(zip(flagged["resource"], flagged["mixing_problem"]))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceNulls:
        with np.load(Path(path), allow_pickle=False) as stored:
            resources = stored["resources"].tolist()
            return cls(
                genes=tuple(stored["genes"].tolist()),
                codes={resource: stored[f"codes_{index}"] for index, resource in enumerate(resources)},
                summaries=pd.DataFrame(json.loads(str(stored["summaries"]))),
                mixing_curves=pd.DataFrame(json.loads(str(stored["mixing_curves"])), columns=list(MIXING_CURVE_COLUMNS)),
            )


def reference_nulls(
    reference: pd.DataFrame, genes: Sequence[str], *, n_draws: int, seed: int, relations: Sequence[str],
    min_median_distance: float = DEFAULT_MIN_MEDIAN_DISTANCE,
    max_smallest_p: float = DEFAULT_MAX_SMALLEST_P,
    progress: Progress = no_progress,
) -> ReferenceNulls:
    """Null draws for each resource of a restricted reference whose relation is in `relations`; the two
    thresholds decide when draws barely move (`degree_preserving_null`); `progress` after each resource.

    reference: restricted reference edges (REFERENCE_COLUMNS; every gene in `genes`). Each resource gets its
    own seed stream derived from (seed, CRC-32 of its name), so adding a resource does not change the draws
    of the others.
    """
    node = pd.Series(np.arange(len(genes)), index=pd.Index(genes))
    codes, summaries, curves = {}, [], []
    drawn = [(resource, edges) for resource, edges in reference.groupby("resource", sort=True)
             if str(edges["relation"].iloc[0]) in relations]
    for index, (resource, edges) in enumerate(drawn, start=1):
        relation = str(edges["relation"].iloc[0])
        resource_seed = int(np.random.SeedSequence([seed, zlib.crc32(str(resource).encode())]).generate_state(1)[0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NullMixingWarning)
            draws = degree_preserving_null(
                node[edges["source"]].to_numpy(), node[edges["target"]].to_numpy(), len(genes),
                n_draws=n_draws, seed=resource_seed, directed=relation == "regulates",
                min_median_distance=min_median_distance, max_smallest_p=max_smallest_p,
            )
        codes[resource] = draws.codes
        summaries.append({"resource": resource, "relation": relation, **draws.summary(),
                          "warnings": "; ".join(str(w.message) for w in caught if issubclass(w.category, NullMixingWarning))})
        curves.append(draws.diagnostics.mixing_curve.assign(resource=resource))
        progress(index, len(drawn), f"{resource}: {n_draws} verified draws of {len(edges)} edges")
    return ReferenceNulls(
        genes=tuple(genes),
        codes=codes,
        summaries=pd.DataFrame(summaries),
        mixing_curves=pd.concat(curves, ignore_index=True).loc[:, list(MIXING_CURVE_COLUMNS)] if curves
        else pd.DataFrame(columns=list(MIXING_CURVE_COLUMNS)),
    )
