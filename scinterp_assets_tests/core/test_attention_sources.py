"""Which rows attention keeps per head, and which score sets an every-pair analysis may then rank."""

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.attention.sources import analysis_sources, every_pair_score_sets


def test_analysis_sources_are_perturbed_genes_regulators_and_extras_in_universe_order():
    universe = ["G1", "G2", "G3", "G4", "G5", "G6"]
    reference = pd.DataFrame({"source": ["G5", "G5", "G2", "G6", "X9"], "target": ["G1", "G3", "G4", "G3", "G1"],
                              "relation": ["regulates", "regulates", "interacts", "interacts", "regulates"]})
    sources = analysis_sources(universe, perturbed=["G4", "NTC-free-gene"], reference_edges=reference,
                               extra=["G1", "OUTSIDE"])
    # G5 regulates; G2 and G6 only interact (their pairs read the head mean); X9 and OUTSIDE are not genes
    # of the universe; the order is the universe's
    assert sources == ["G1", "G4", "G5"]


def test_every_pair_analyses_drop_per_head_aggregations_when_sources_are_a_subset():
    genes = ["a", "b", "c"]
    matrix = np.arange(9.0).reshape(3, 3)
    sets = [ScoreSet("attention", 0, "head_mean", matrix), ScoreSet("attention", 0, "head_max", matrix),
            ScoreSet("correlation", -1, "none", matrix)]
    assert every_pair_score_sets(sets, genes, sources=genes) == sets
    kept = every_pair_score_sets(sets, genes, sources=["b"])
    assert [(s.method, s.aggregation) for s in kept] == [("attention", "head_mean"), ("correlation", "none")]
