import numpy as np
import pandas as pd

from scinterp_assets.core.networks.reference_nulls import ReferenceNulls, reference_nulls
from scinterp_assets.core.networks.references import empty_reference, validate_reference


def _reference(seed=0):
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(60)]
    rows = []
    for tf in genes[:8]:
        for target in rng.choice(genes[8:], size=int(rng.integers(4, 12)), replace=False):
            rows.append((tf, target, "trrust", 1, "", np.nan, "regulates"))
    pairs = {tuple(sorted(rng.choice(genes, 2, replace=False))) for _ in range(40)}
    for a, b in pairs:
        rows += [(a, b, "string", 0, "", 0.9, "interacts"), (b, a, "string", 0, "", 0.9, "interacts")]
    frame = pd.DataFrame(rows, columns=["source", "target", "resource", "sign", "confidence", "weight", "relation"])
    return validate_reference(pd.concat([empty_reference(), frame], ignore_index=True)), genes


def _degrees(codes, n):
    return np.bincount(codes // n, minlength=n), np.bincount(codes % n, minlength=n)


def test_each_selected_resource_gets_verified_draws_that_round_trip(tmp_path):
    reference, genes = _reference()
    nulls = reference_nulls(reference, genes, n_draws=30, seed=1, relations=("regulates", "interacts"))
    assert set(nulls.codes) == {"trrust", "string"}
    n = len(genes)
    for resource, codes in nulls.codes.items():
        edges = reference[reference["resource"] == resource]
        observed = pd.Series(np.arange(n), index=genes)
        obs_codes = observed[edges["source"]].to_numpy() * n + observed[edges["target"]].to_numpy()
        for draw in codes:  # margins checked here, independently of the module's own verification
            np.testing.assert_array_equal(_degrees(draw, n)[0], _degrees(obs_codes, n)[0])
            np.testing.assert_array_equal(_degrees(draw, n)[1], _degrees(obs_codes, n)[1])
            assert not np.any(draw // n == draw % n)
    assert nulls.summaries.set_index("resource")["passed"].all()
    assert (nulls.summaries["median_jaccard_distance"] > 0.2).all()
    stored = ReferenceNulls.load(nulls.save(tmp_path / "nulls.npz"))
    assert stored.genes == nulls.genes and stored.codes.keys() == nulls.codes.keys()
    for resource in nulls.codes:
        np.testing.assert_array_equal(stored.codes[resource], nulls.codes[resource])
    pd.testing.assert_frame_equal(stored.mixing_curves, nulls.mixing_curves, check_dtype=False)


def test_relations_select_resources_and_seeds_are_per_resource():
    reference, genes = _reference()
    only_tf = reference_nulls(reference, genes, n_draws=5, seed=1, relations=("regulates",))
    both = reference_nulls(reference, genes, n_draws=5, seed=1, relations=("regulates", "interacts"))
    assert set(only_tf.codes) == {"trrust"}
    np.testing.assert_array_equal(only_tf.codes["trrust"], both.codes["trrust"])
