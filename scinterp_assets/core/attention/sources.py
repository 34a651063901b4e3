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


def per_head_defined(rows: Iterable[str], sources: Sequence[str]) -> bool:
    """Whether PER_HEAD_AGGREGATIONS are defined on every row in `rows` (the genes an analysis ranks targets
    from: every evaluable gene for every-pair analyses, the perturbed genes for perturbation analyses): they
    are kept for the source rows only, and a NaN row would rank lowest, not be left out, so an analysis whose
    rows are not all sources must leave them out (and then need not read the per-head accumulators at all)."""
    return set(rows) <= set(sources)
