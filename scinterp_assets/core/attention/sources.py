"""Which genes attention extraction keeps per head: the rows (query genes) the analyses read.

Per-head accumulators are L x H x S x G; at the study's shape (V2-316M, G = 2,000) every gene as a source
is 10 GB, the ~400 genes the analyses query 2 GB. The head mean of every pair is kept either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

# aggregations that need each head's scores: defined only on the source rows when sources are a subset
PER_HEAD_AGGREGATIONS = frozenset({"head_max"})


def analysis_sources(universe: Sequence[str], perturbed: Iterable[str], reference_edges: pd.DataFrame,
                     extra: Iterable[str] = ()) -> list[str]:
    """The universe genes the analyses query as sources, in universe order: the perturbed genes (the rows
    perturbation analyses rank targets in), the sources of "regulates" references (TF rows) and `extra`.
    Undirected references ("interacts") read the head mean of every pair, so their genes are not added."""
    regulators = reference_edges.loc[reference_edges["relation"] == "regulates", "source"]
    wanted = set(map(str, perturbed)) | set(map(str, regulators)) | set(map(str, extra))
    return [gene for gene in universe if gene in wanted]


def score_sets_defined_on(score_sets: list, rows: Iterable[str], sources: Sequence[str]) -> list:
    """The score sets defined on every source row in `rows` (the genes an analysis ranks targets from: every
    evaluable gene for every-pair analyses, the perturbed genes for perturbation analyses): all of them where
    those rows are sources; otherwise those whose aggregation does not need each head's scores
    (PER_HEAD_AGGREGATIONS are kept for the source rows only, and a NaN row would rank lowest, not be left
    out)."""
    if set(rows) <= set(sources):
        return list(score_sets)
    return [score_set for score_set in score_sets if score_set.aggregation not in PER_HEAD_AGGREGATIONS]
