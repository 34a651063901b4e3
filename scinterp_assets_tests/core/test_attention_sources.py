"""Which rows attention keeps per head, and which score sets an every-pair analysis may then rank."""

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.attention.sources import analysis_sources, per_head_defined


def test_analysis_sources_are_perturbed_genes_regulators_and_extras_in_universe_order():
    universe = ["G1", "G2", "G3", "G4", "G5", "G6"]
    reference = pd.DataFrame({"source": ["G5", "G5", "G2", "G6", "X9"], "target": ["G1", "G3", "G4", "G3", "G1"],
                              "relation": ["regulates", "regulates", "interacts", "interacts", "regulates"]})
    sources = analysis_sources(universe, perturbed=["G4", "NTC-free-gene"], reference_edges=reference,
                               extra=["G1", "OUTSIDE"])
    # G5 regulates; G2 and G6 only interact (their pairs read the head mean); X9 and OUTSIDE are not genes
    # of the universe; the order is the universe's
    assert sources == ["G1", "G4", "G5"]


def test_analyses_drop_per_head_aggregations_when_their_rows_are_not_all_sources():
    assert per_head_defined(["a", "b"], sources=["a", "b", "c"])
    assert not per_head_defined(["a", "b"], sources=["b"])
    from scinterp_assets.core.analyses.score_sets import attention_score_sets

    scores = _scores(sources=("g0", "g4", "g5"))
    genes = list(scores.genes)
    every = attention_score_sets(scores, "attention", genes)
    assert {s.aggregation for s in every} == {"head_mean", "head_max"}
    # an every-pair analysis (rows: every gene) leaves head_max out, and never reads the per-head sums
    fresh = _scores(sources=("g0", "g4", "g5"))
    kept = attention_score_sets(fresh, "attention", genes, ranked_rows=genes)
    assert [(s.layer, s.aggregation) for s in kept] == [(s.layer, s.aggregation) for s in every
                                                        if s.aggregation == "head_mean"]
    assert fresh.bytes_read == fresh.count.nbytes + fresh.head_mean_sum.nbytes
    # a perturbation analysis ranking from sources only keeps every aggregation
    assert len(attention_score_sets(scores, "attention", genes, ranked_rows=["g0", "g5"])) == len(every)


def _scores(sources=None):
    from scinterp_assets.core.attention.scores import AttentionScores

    genes = tuple(f"g{i}" for i in range(6))
    rng = np.random.default_rng(4)
    total = rng.random((2, 3, 6, 6))
    count = rng.integers(0, 4, (6, 6))
    count = np.maximum(count, count.T)
    if sources is None:
        return AttentionScores(genes, (1, 3), total, count, 4)
    rows = [genes.index(gene) for gene in sources]
    return AttentionScores(genes, (1, 3), total[:, :, rows].copy(), count, 4, sources=sources,
                           head_mean_sum=total.mean(axis=1))


def test_score_sets_read_from_the_accumulators_equal_those_built_from_the_edge_table():
    from scinterp_assets.core.analyses.score_sets import attention_score_sets, score_sets_from_edges
    from scinterp_assets.core.attention.edges import EDGE_AGGREGATIONS, attention_edge_table

    genes = ["g5", "g0", "g2", "g3"]  # an evaluable subset, in another order than the scores'
    for scores in (_scores(), _scores(sources=("g0", "g4", "g5"))):
        for method, aggregations in EDGE_AGGREGATIONS.items():
            direct = attention_score_sets(scores, method, genes)
            tabled = score_sets_from_edges(attention_edge_table(scores, method=method, aggregations=aggregations),
                                           genes)
            assert [(s.method, s.layer, s.aggregation) for s in direct] == [
                (s.method, s.layer, s.aggregation) for s in tabled]
            for one, other in zip(direct, tabled):
                np.testing.assert_array_equal(one.matrix, other.matrix)
    sets = attention_score_sets(_scores(sources=("g0", "g4", "g5")), "attention", genes)
    (head_max,) = [s for s in sets if s.layer == 1 and s.aggregation == "head_max"]
    assert np.isnan(head_max.matrix[[2, 3]]).all() and np.isfinite(head_max.matrix[0, 1:]).any()  # g2, g3: no rows
