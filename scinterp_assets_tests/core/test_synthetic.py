"""Tests for the synthetic world simulator (FRAMEWORK A25): contract, determinism, and planted signal."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.datasets.synthetic import (
    CONTROL_LABEL,
    SyntheticWorldSpec,
    simulate_world,
    vocabulary_gene_names,
)

TRUTH_TABLES = ("truth_edges", "truth_effects", "truth_perturbation_strength", "truth_modules")


@pytest.fixture(scope="module")
def crispri_world() -> ad.AnnData:
    return simulate_world(SyntheticWorldSpec(modality="CRISPRi"))


@pytest.fixture(scope="module")
def crispra_world() -> ad.AnnData:
    return simulate_world(SyntheticWorldSpec(modality="CRISPRa"))


def log_cp10k(adata: ad.AnnData) -> np.ndarray:
    """(cells, genes) log1p of counts per 10,000: the framework's normalisation for statistics."""
    counts = adata.X.toarray().astype(np.float64)
    return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)


def control_mask(adata: ad.AnnData) -> np.ndarray:
    return (adata.obs["perturbation"] == adata.uns["control_label"]).to_numpy()


def de_positive_counts(adata: ad.AnnData) -> pd.Series:
    """DE positives per perturbation by the framework's rule (section 3), the perturbed gene removed.

    Welch t-test of perturbed vs control cells on log1p CP10k, BH over genes; positive when q < 0.05 and
    |difference of mean log1p| >= 0.5.
    """
    expression, controls = log_cp10k(adata), control_mask(adata)
    genes = adata.var_names.to_numpy()
    positives = {}
    for perturbation in adata.uns["truth_perturbation_strength"]["perturbation"]:
        others = genes != perturbation
        perturbed = expression[(adata.obs["perturbation"] == perturbation).to_numpy()][:, others]
        control = expression[controls][:, others]
        p_values = stats.ttest_ind(perturbed, control, equal_var=False).pvalue
        q_values = stats.false_discovery_control(np.nan_to_num(p_values, nan=1.0))  # NaN: constant gene
        difference = perturbed.mean(axis=0) - control.mean(axis=0)
        positives[perturbation] = int(((q_values < 0.05) & (np.abs(difference) >= 0.5)).sum())
    return pd.Series(positives)


def perturbed_to_control_ratio(adata: ad.AnnData, gene: str) -> float:
    """Mean CP10k of ``gene`` in the cells perturbing it over its mean CP10k in control cells."""
    counts = adata.X.toarray().astype(np.float64)
    cp10k = counts / counts.sum(axis=1, keepdims=True) * 1e4
    column = adata.var_names.get_loc(gene)
    perturbed = (adata.obs["perturbation"] == gene).to_numpy()
    return cp10k[perturbed, column].mean() / cp10k[control_mask(adata), column].mean()


def best_expressed_perturbed_gene(adata: ad.AnnData) -> str:
    control_means = pd.Series(np.asarray(adata.X[control_mask(adata)].mean(axis=0)).ravel(),
                              index=adata.var_names)
    return control_means[adata.uns["truth_perturbation_strength"]["perturbation"]].idxmax()


def test_same_spec_gives_a_bit_identical_world(crispri_world: ad.AnnData) -> None:
    again = simulate_world(SyntheticWorldSpec(modality="CRISPRi"))
    assert (crispri_world.X != again.X).nnz == 0
    pd.testing.assert_frame_equal(crispri_world.obs, again.obs)
    for table in TRUTH_TABLES:
        pd.testing.assert_frame_equal(crispri_world.uns[table], again.uns[table])


def test_wiring_seed_changes_the_network_but_not_gene_identity(crispri_world: ad.AnnData) -> None:
    other = simulate_world(SyntheticWorldSpec(modality="CRISPRi", wiring_seed=1))
    assert list(other.var_names) == list(crispri_world.var_names)
    assert list(other.var["ensembl_id"]) == list(crispri_world.var["ensembl_id"])
    edges = {tuple(row) for row in crispri_world.uns["truth_edges"][["source", "target"]].to_numpy()}
    other_edges = {tuple(row) for row in other.uns["truth_edges"][["source", "target"]].to_numpy()}
    assert len(edges & other_edges) < 0.5 * len(edges)


def test_seed_resamples_cells_but_keeps_the_truth(crispri_world: ad.AnnData) -> None:
    other = simulate_world(SyntheticWorldSpec(modality="CRISPRi", seed=1))
    assert (crispri_world.X != other.X).nnz > 0
    for table in TRUTH_TABLES:
        pd.testing.assert_frame_equal(crispri_world.uns[table], other.uns[table])


def test_world_follows_the_screen_contract(crispri_world: ad.AnnData) -> None:
    adata, spec = crispri_world, SyntheticWorldSpec()
    n_perturbed_cells = spec.n_perturbed_genes * spec.cells_per_perturbation
    assert adata.shape == (spec.n_control_cells + n_perturbed_cells, spec.n_genes)
    assert isinstance(adata.X, sparse.csr_matrix) and adata.X.dtype == np.float32
    assert np.array_equal(adata.X.data, np.round(adata.X.data)) and adata.X.data.min() > 0
    assert adata.var_names.is_unique and adata.obs_names.is_unique
    assert adata.var_names[0] == "TF01" and adata.var_names[spec.n_tfs] == "G0025"
    assert adata.var["ensembl_id"].iloc[0] == "ENSSYN00000000001" and adata.var["ensembl_id"].is_unique
    assert adata.var["is_tf"].dtype == bool and adata.var["is_tf"].sum() == spec.n_tfs
    assert adata.uns["control_label"] == CONTROL_LABEL and adata.uns["modality"] == "CRISPRi"
    sizes = adata.obs["perturbation"].value_counts()
    assert sizes[CONTROL_LABEL] == spec.n_control_cells and len(sizes) == spec.n_perturbed_genes + 1
    assert (sizes.drop(CONTROL_LABEL) == spec.cells_per_perturbation).all()
    perturbed = adata.uns["truth_perturbation_strength"]
    assert list(perturbed.columns) == ["perturbation", "strength"]
    assert perturbed["strength"].between(*spec.knockdown_range).all()
    is_tf = adata.var.loc[perturbed["perturbation"], "is_tf"]
    assert is_tf.sum() > len(is_tf) / 2 and (~is_tf).sum() >= spec.min_non_tf_perturbations
    # perturbed cells are spread over the states like controls
    perturbed_states = set(adata.obs.loc[~control_mask(adata), "cell_state"])
    assert perturbed_states == {f"state_{s}" for s in range(spec.n_states)}
    assert list(adata.uns["truth_edges"].columns) == ["source", "target", "sign", "weight"]
    assert list(adata.uns["truth_effects"].columns) == ["perturbation", "gene", "log_fold_change"]


def test_counts_look_like_umis(crispri_world: ad.AnnData) -> None:
    controls = crispri_world[control_mask(crispri_world)]
    library_sizes = np.asarray(controls.X.sum(axis=1)).ravel()
    gene_means = np.asarray(controls.X.mean(axis=0)).ravel()
    assert 2_000 < np.median(library_sizes) < 6_000
    assert gene_means.min() < 0.2 and gene_means.max() > 50
    assert 0.05 < 1 - controls.X.nnz / np.prod(controls.shape) < 0.9


def test_world_round_trips_through_h5ad(crispri_world: ad.AnnData, tmp_path) -> None:
    path = tmp_path / "world.h5ad"
    crispri_world.write_h5ad(path)
    loaded = ad.read_h5ad(path)
    assert (loaded.X != crispri_world.X).nnz == 0
    pd.testing.assert_frame_equal(loaded.obs, crispri_world.obs)
    pd.testing.assert_frame_equal(loaded.var, crispri_world.var)
    for table in TRUTH_TABLES:
        pd.testing.assert_frame_equal(loaded.uns[table], crispri_world.uns[table], check_dtype=False)
    assert SyntheticWorldSpec(**loaded.uns["synthetic_spec"]) == SyntheticWorldSpec()


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_tfs", 19), ("n_genes", 150), ("n_states", 2), ("n_perturbed_genes", 20), ("modality", "CRISPRko"),
     ("knockdown_range", (0.9, 0.7)), ("knockdown_range", (0.5, 1.0)), ("activation_fold_range", (0.5, 2.0)),
     ("nb_dispersion", 0.0), ("n_modules", 30), ("n_control_cells", 2.5)],
)
def test_invalid_spec_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SyntheticWorldSpec(**{field: value})


@pytest.mark.parametrize(
    "overrides",
    [{"n_modules": 0}, {"n_states": 5, "modality": "CRISPRa"},
     {"n_genes": 200, "n_tfs": 50, "n_perturbed_genes": 60}],
)
def test_unusual_valid_specs_simulate(overrides: dict[str, object]) -> None:
    small = {"n_control_cells": 50, "cells_per_perturbation": 2, "n_modules": 4}
    spec = SyntheticWorldSpec(**{**small, **overrides})
    adata = simulate_world(spec)
    assert adata.shape == (50 + 2 * spec.n_perturbed_genes, spec.n_genes)
    assert len(adata.uns["truth_modules"]["module"].unique()) == spec.n_modules


def test_truth_effects_are_the_total_effects_of_the_planted_network(crispri_world: ad.AnnData) -> None:
    genes = list(crispri_world.var_names)
    index = {gene: i for i, gene in enumerate(genes)}
    edges = crispri_world.uns["truth_edges"]
    weights = np.zeros((len(genes), len(genes)))
    weights[edges["source"].map(index), edges["target"].map(index)] = edges["weight"]
    total_effect = np.linalg.inv(np.eye(len(genes)) - weights)  # oracle: (I - W)^-1
    strengths = crispri_world.uns["truth_perturbation_strength"].set_index("perturbation")["strength"]
    effects = crispri_world.uns["truth_effects"].pivot(
        index="perturbation", columns="gene", values="log_fold_change")
    effects = effects.reindex(index=strengths.index, columns=genes).fillna(0.0)
    expected = np.log(1 - strengths.to_numpy())[:, None] * total_effect[strengths.index.map(index)]
    np.testing.assert_allclose(effects.to_numpy(), expected, atol=1e-10)
    assert np.all(np.sign(edges["weight"]) == edges["sign"])
    assert crispri_world.var.loc[edges["source"], "is_tf"].all()
    # effects reach genes that are not direct targets: propagation over >= 2 steps
    direct = set(zip(edges["source"], edges["target"]))
    effect_pairs = crispri_world.uns["truth_effects"][["perturbation", "gene"]].itertuples(index=False)
    assert any(p != g and (p, g) not in direct for p, g in effect_pairs)
    # modules are co-expressed but never regulated
    assert not set(crispri_world.uns["truth_modules"]["gene"]) & set(edges["target"])


def test_crispri_knocks_down_the_perturbed_gene(crispri_world: ad.AnnData) -> None:
    gene = best_expressed_perturbed_gene(crispri_world)
    reduction = 1 - perturbed_to_control_ratio(crispri_world, gene)
    print(f"CRISPRi {gene}: mean CP10k {reduction:.0%} lower than controls")
    assert 0.55 < reduction < 0.95


def test_crispra_raises_the_perturbed_gene(crispra_world: ad.AnnData) -> None:
    gene = best_expressed_perturbed_gene(crispra_world)
    fold = perturbed_to_control_ratio(crispra_world, gene)
    print(f"CRISPRa {gene}: mean CP10k x{fold:.1f} of controls")
    assert 2.0 < fold < 8.0


@pytest.mark.parametrize("world", ["crispri_world", "crispra_world"])
def test_tf_perturbations_move_targets_in_the_planted_direction(world: str, request) -> None:
    adata = request.getfixturevalue(world)
    expression, controls = log_cp10k(adata), control_mask(adata)
    control_means = np.asarray(adata.X[controls].mean(axis=0)).ravel()
    agreements = []
    for row in adata.uns["truth_effects"].itertuples(index=False):
        column = adata.var_names.get_loc(row.gene)
        if row.perturbation == row.gene or abs(row.log_fold_change) < 0.5 or control_means[column] < 1.0:
            continue
        perturbed = (adata.obs["perturbation"] == row.perturbation).to_numpy()
        shift = expression[perturbed, column].mean() - expression[controls, column].mean()
        agreements.append(np.sign(shift) == np.sign(row.log_fold_change))
    print(f"{world}: {np.mean(agreements):.1%} of {len(agreements)} strong planted effects go the right way")
    assert len(agreements) > 50 and np.mean(agreements) > 0.9


def test_control_coexpression_ranks_planted_edges_above_chance(crispri_world: ad.AnnData) -> None:
    controls = log_cp10k(crispri_world)[control_mask(crispri_world)]
    correlation = np.abs(np.nan_to_num(stats.spearmanr(controls).statistic))
    genes = list(crispri_world.var_names)
    index = {gene: i for i, gene in enumerate(genes)}
    edges = crispri_world.uns["truth_edges"]
    planted = np.zeros((len(genes), len(genes)), dtype=bool)
    planted[edges["source"].map(index), edges["target"].map(index)] = True
    candidates = np.zeros_like(planted)
    candidates[crispri_world.var["is_tf"].to_numpy()] = True  # every ordered pair with a TF as source
    np.fill_diagonal(candidates, False)
    labels, scores = planted[candidates], correlation[candidates]
    auroc = roc_auc_score(labels, scores)
    # the mean over 20 shuffles has a null sd of about 0.005 (one shuffle: about 0.02)
    rng = np.random.default_rng(0)
    shuffled_auroc = np.mean([roc_auc_score(rng.permutation(labels), scores) for _ in range(20)])
    print(f"Spearman AUROC for planted TF->target edges: {auroc:.3f} (shuffled labels: {shuffled_auroc:.3f})")
    assert auroc > 0.65
    assert abs(shuffled_auroc - 0.5) < 0.02
    # module co-members look co-expressed although no edge joins them
    modules = crispri_world.uns["truth_modules"]
    same_module = modules.merge(modules, on="module").query("gene_x != gene_y")
    module_correlation = correlation[same_module["gene_x"].map(index), same_module["gene_y"].map(index)]
    assert np.median(module_correlation) > np.median(scores[~labels])


@pytest.mark.parametrize("world", ["crispri_world", "crispra_world"])
def test_most_tf_perturbations_pass_the_de_filter(world: str, request) -> None:
    adata = request.getfixturevalue(world)
    positives = de_positive_counts(adata)
    n_genes = adata.n_vars - 1  # the perturbed gene is removed
    passing = (positives >= 3) & (n_genes - positives >= 3)
    is_tf = adata.var.loc[positives.index, "is_tf"].to_numpy()
    print(f"{world}: {passing.sum()}/{len(passing)} perturbations pass the DE filter "
          f"({passing[is_tf].sum()}/{is_tf.sum()} TFs, {passing[~is_tf].sum()}/{(~is_tf).sum()} non-TFs)")
    assert passing[is_tf].mean() >= 0.75
    # non-TF perturbations change only themselves, so they must not show trans effects
    assert passing[~is_tf].sum() <= 1


def _vocabulary(symbol_ids: dict[str, str], extra_tokens: tuple[str, ...] = ()) -> tuple[dict, dict]:
    tokens = {"<pad>": 0, "<mask>": 1}
    for gene in [*symbol_ids.values(), *extra_tokens]:
        tokens.setdefault(gene, len(tokens))
    return symbol_ids, tokens


def test_vocabulary_gene_names_keep_one_to_one_genes_that_every_vocabulary_holds() -> None:
    first = _vocabulary({"A": "E1", "B": "E2", "C": "E3", "C-AS": "E3", "D": "E4", "F": "E6"})
    second_names, second_tokens = _vocabulary({"A": "E1", "B": "E9", "C": "E3", "D": "E4", "F": "E6"})
    del second_tokens["E4"]  # D: named alike, but the second model has no token for it
    names = vocabulary_gene_names([first, (second_names, second_tokens)], 2)
    # B maps to different ids, C shares its id with another symbol, D lacks a token: A and F remain
    assert sorted(names["symbol"]) == ["A", "F"]
    assert dict(zip(names["symbol"], names["ensembl_id"])) == {"A": "E1", "F": "E6"}
    with pytest.raises(ValueError, match="share 2 one-to-one genes, fewer than the 3"):
        vocabulary_gene_names([first, (second_names, second_tokens)], 3)


def test_vocabulary_gene_names_depend_only_on_the_gene_index() -> None:
    vocabulary = _vocabulary({f"S{i}": f"E{i}" for i in range(50)})
    few, many = vocabulary_gene_names([vocabulary], 10), vocabulary_gene_names([vocabulary], 40)
    pd.testing.assert_frame_equal(few, many.iloc[:10])
    assert many["symbol"].tolist() != sorted(many["symbol"])  # a seeded order, not the alphabet's start


def test_world_named_by_given_genes_carries_them_everywhere() -> None:
    spec = SyntheticWorldSpec(n_control_cells=20, cells_per_perturbation=2)
    names = pd.DataFrame({"symbol": [f"SYM{i}" for i in range(spec.n_genes)],
                          "ensembl_id": [f"ENSG{i:011d}" for i in range(spec.n_genes)]})
    named, plain = simulate_world(spec, names), simulate_world(spec)
    np.testing.assert_array_equal(named.X.toarray(), plain.X.toarray())  # names change no count
    assert named.var_names.tolist() == names["symbol"].tolist()
    assert named.var["ensembl_id"].tolist() == names["ensembl_id"].tolist()
    renamed = dict(zip(plain.var_names, named.var_names))
    expected_edges = plain.uns["truth_edges"].assign(source=lambda t: t["source"].map(renamed),
                                                     target=lambda t: t["target"].map(renamed))
    pd.testing.assert_frame_equal(named.uns["truth_edges"], expected_edges)
    assert set(named.obs["perturbation"].cat.categories) - {CONTROL_LABEL} <= set(names["symbol"])
    with pytest.raises(ValueError, match="gene_names has 299 rows for n_genes=300"):
        simulate_world(spec, names.iloc[:-1])
    with pytest.raises(ValueError, match="'ensembl_id' without repeated values"):
        simulate_world(spec, names.assign(ensembl_id="ENSG0"))


@pytest.mark.parametrize("wiring_seed", [1, 2])
def test_total_effect_equals_the_full_matrix_series_bit_for_bit_on_the_demo_worlds(wiring_seed: int) -> None:
    """The TF-row series gives the demo's worlds exactly the matrix the full G x G series gave."""
    from scinterp_assets.core.datasets.synthetic import _plant_network

    network = _plant_network(SyntheticWorldSpec(wiring_seed=wiring_seed))  # the demo's 300 genes, 24 TFs
    total, walk = np.eye(network.weights.shape[0]), np.eye(network.weights.shape[0])
    while (walk := walk @ network.weights).any():
        total += walk
    np.testing.assert_array_equal(network.total_effect, total)


def test_gene_vocabulary_keeps_only_genes_the_tokeniser_ranks_under_their_own_id(tmp_path) -> None:
    import pickle

    from scinterp_assets.core.models.dictionaries import ModelLoadError
    from scinterp_assets.core.models.geneformer import read_gene_vocabulary
    from scinterp_assets.core.models.pretrain import write_geneformer_dictionaries

    tokens = {"<pad>": 0, "<mask>": 1, "E1": 2, "E2": 3, "E3": 4, "E4": 5}
    medians = {"E1": np.float32(1.5), "E2": np.float32(0.0), "E3": np.float32(2.0), "E4": np.float32(0.7)}
    write_geneformer_dictionaries(tmp_path, tokens, medians, {"A": "E1", "B": "E2", "C": "E3", "D": "E4"})
    (tmp_path / "ensembl_mapping_dict.pkl").write_bytes(pickle.dumps({"E3": "E4", "E1": "E1"}))
    names, kept = read_gene_vocabulary(tmp_path)
    assert names == {"A": "E1", "B": "E2", "C": "E3", "D": "E4"}
    assert kept == {"E1": 2, "E4": 5}  # E2: median 0; E3: mapped onto E4's token
    with pytest.raises(ModelLoadError, match="gene vocabulary .*gene_dictionaries"):
        read_gene_vocabulary(tmp_path / "absent")


def test_state_specific_wiring_adds_edges_without_changing_the_common_network() -> None:
    plain = simulate_world(SyntheticWorldSpec(n_control_cells=50, cells_per_perturbation=1))
    wired = simulate_world(SyntheticWorldSpec(n_control_cells=50, cells_per_perturbation=1, state_specific_edges=10))
    common = plain.uns["truth_edges"]
    pd.testing.assert_frame_equal(wired.uns["truth_edges"].iloc[: len(common)], common)
    state_edges = wired.uns["truth_state_edges"]
    assert len(wired.uns["truth_edges"]) == len(common) + len(state_edges) and len(state_edges) == 3 * 10
    assert state_edges.groupby("state").size().tolist() == [10, 10, 10]
    pairs = set(zip(state_edges["source"], state_edges["target"]))
    assert len(pairs) == 30 and not pairs & set(zip(common["source"], common["target"]))
    assert "truth_state_edges" not in plain.uns
    with pytest.raises(ValueError, match="state_specific_edges: 5000 per state x 3 states exceeds"):
        simulate_world(SyntheticWorldSpec(n_control_cells=50, cells_per_perturbation=1, state_specific_edges=5000))
