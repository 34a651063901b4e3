import dataclasses
import warnings

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.incremental_confirmatory import ConfirmatorySettings
from scinterp_assets.core.analyses.reference_family import ReferenceFamilySettings, reference_family_tests
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.networks.reference_nulls import reference_nulls
from scinterp_assets.core.networks.references import REFERENCE_COLUMNS
from scinterp_assets.core.stats.registry import empty_registry, registry_rows


def _world():
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(40)]
    regulates = [(genes[tf], genes[target], "trrust", int(rng.choice([-1, 1])), "", 1.0, "regulates")
                 for tf in range(6) for target in rng.choice(np.arange(6, 40), 6, replace=False)]
    pairs = {tuple(sorted(rng.choice(40, 2, replace=False))) for _ in range(50)}
    interacts = [row for a, b in pairs for row in ((genes[a], genes[b], "string", 0, "", 0.9, "interacts"),
                                                   (genes[b], genes[a], "string", 0, "", 0.9, "interacts"))]
    # two TF -> target pairs: a reference too small to evaluate, whose null has two realisations
    tiny = [(genes[0], genes[1], "tiny", 1, "", 1.0, "regulates"), (genes[2], genes[3], "tiny", 1, "", 1.0, "regulates")]
    reference = pd.DataFrame(regulates + interacts + tiny, columns=list(REFERENCE_COLUMNS))
    score_sets = [ScoreSet("attention", layer, "head_mean", rng.random((40, 40))) for layer in range(3)]
    score_sets.append(ScoreSet("correlation", NO_LAYER, "none", rng.random((40, 40))))
    features = pd.DataFrame({"gene": genes, "mean": rng.random(40), "variance": rng.random(40),
                             "detection_rate": rng.random(40)})
    nulls = reference_nulls(reference, genes, n_draws=50, seed=0, relations=("regulates",))
    a12 = registry_rows([{"analysis_id": "A12", "test_id": f"m|c|A12:trrust:attention_L{layer}_head_mean",
                          "layer": layer, "aggregation": "head_mean", "statistic": 0.5 + layer / 100}
                         for layer in range(3)])
    settings = ReferenceFamilySettings(bootstrap_resamples=50, residualisation_folds=3,
                                       residualisation_models=("ols",), top_k_edges=20,
                                       depth_trend_permutations=200,
                                       beyond_features=ConfirmatorySettings(3, 2, 1, 40, 0.05), min_targets_per_tf=3,
                                       min_reference_edges=10, seed=0)
    return reference, genes, score_sets, features, nulls, a12, settings


def _family_rows(reference, genes, score_sets, features, nulls, a12, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return registry_rows(reference_family_tests(reference, genes, score_sets, features, nulls, a12, settings))


def test_signed_directed_and_undirected_references_get_their_analyses():
    rows = _family_rows(*_world())
    by_analysis = rows.assign(resource=rows["test_id"].str.split(":").str[1]).groupby("analysis_id")["resource"]
    seen = {analysis: set(resources) for analysis, resources in by_analysis}
    assert seen["A10"] == {"trrust"}  # only resources with null draws
    assert seen["A11"] == {"trrust"}  # signed and directed only
    for analysis in ("A09", "A13", "A14", "A15"):
        assert seen[analysis] == {"trrust", "string"}, analysis
    beyond = rows[rows["test_id"].str.endswith(":beyond_features")]  # directed references only
    assert set(beyond["test_id"].str.split(":").str[1]) == {"trrust"} and len(beyond) == 4
    assert set(rows.loc[rows["confirmatory"], "test_id"]) == set(beyond["test_id"])  # A09's share, A10: descriptive
    depth = rows[rows["analysis_id"] == "A12"]
    assert len(depth) and depth["test_id"].str.endswith("depth_rho").all()
    assert (depth["p_value"] == 2 / 6).all() and (depth["n"] == 3).all()  # exact over 3! orderings
    assert len(rows) and tuple(rows.columns) == tuple(empty_registry().columns)
    assert (rows["note"] == "").all()  # every null here moves


def test_a_reference_with_too_few_pairs_is_left_out_and_a_null_that_barely_moves_is_named_in_its_a10_rows():
    reference, genes, score_sets, features, nulls, a12, settings = _world()
    assert "tiny" in nulls.uninformative() and "trrust" not in nulls.uninformative()
    assert "draws equal the observed network" in nulls.uninformative()["tiny"]
    rows = _family_rows(reference, genes, score_sets, features, nulls, a12, settings)
    assert not rows["test_id"].str.contains(":tiny:").any()  # 2 pairs < min_reference_edges: A12 says why
    lenient = _family_rows(reference, genes, score_sets, features, nulls, a12,
                           dataclasses.replace(settings, min_reference_edges=1))
    a10 = lenient[lenient["analysis_id"] == "A10"].set_index("test_id")
    tiny = a10[a10.index.str.startswith("A10:tiny:")]
    assert len(tiny) == len(score_sets) and not tiny["confirmatory"].any()
    assert tiny["note"].str.startswith("the null of 'tiny' cannot test anything: its draws barely move (").all()
    assert (a10.loc[a10.index.str.startswith("A10:trrust:"), "note"] == "").all()
