"""The positive-control checkpoint (core/models/positive_control.py), loaded by the platform's own Geneformer
loader: its planted heads rank each world's planted edges first, silencing a regulator moves its targets'
states far more than other genes' through them, and its embeddings are balanced as the construction says."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from scinterp_assets.core.datasets.synthetic import SyntheticWorldSpec, simulate_world
from scinterp_assets.core.models.geneformer import load_geneformer
from scinterp_assets.core.models.positive_control import (
    BALANCE, PositiveControlSpec, build_positive_control, regulatory_matrix,
)
from scinterp_assets.core.stats.auroc import auroc

PLANTED = range(PositiveControlSpec().planted_heads)  # the first heads of the last layer
SPEC = dict(n_genes=200, n_tfs=20, n_modules=4, n_control_cells=60, n_perturbed_genes=30, cells_per_perturbation=1)


@pytest.fixture(scope="module")
def worlds():
    return [simulate_world(SyntheticWorldSpec(**SPEC, wiring_seed=wiring, seed=wiring)) for wiring in (1, 2)]


@pytest.fixture(scope="module")
def control(worlds, tmp_path_factory):
    folder = build_positive_control(worlds, tmp_path_factory.mktemp("control") / "positive-control")
    return folder, load_geneformer(folder)


def _controls(world):
    return world[world.obs["perturbation"] == "non-targeting"][:30].copy()


def _truth(world, genes):
    index = {gene: i for i, gene in enumerate(genes)}
    truth = pd.DataFrame(world.uns["truth_edges"])
    labels = np.zeros((len(genes), len(genes)), dtype=bool)
    labels[truth["source"].map(index), truth["target"].map(index)] = True
    return labels, sorted(set(truth["source"].map(index)))


def test_the_planted_heads_rank_each_worlds_planted_edges_first(worlds, control):
    _, model = control
    last = model.bert.config.num_hidden_layers - 1
    for world in worlds:
        genes = list(world.var_names)
        scores = model.attention_scores(_controls(world), genes, batch_size=8).mean()
        labels, regulators = _truth(world, genes)
        planted = np.nan_to_num(scores[last, list(PLANTED)][:, regulators].max(axis=0), nan=-1.0)
        # the other world's edges are negatives here that the head also attends to: a few percent of pairs
        assert auroc(labels[regulators].ravel(), planted.ravel()) > 0.9


def test_silencing_a_regulator_moves_its_targets_through_the_planted_head(worlds, control):
    _, model = control
    world = worlds[0]
    cell = _controls(world)[:1]
    (ids,) = model.tokenizer.tokenize(cell)
    inverse = {token: gene for gene, token in model.tokenizer.token_ids.items()}
    symbol = dict(zip(world.var["ensembl_id"], world.var_names))
    names = [symbol[inverse[int(token)]] for token in ids]
    truth = pd.DataFrame(world.uns["truth_edges"])
    regulator = next(name for name in names if (truth["source"] == name).sum() >= 3
                     and truth.loc[truth["source"] == name, "target"].isin(names).sum() >= 2)
    position = names.index(regulator)

    def shifts(bert) -> np.ndarray:
        with torch.no_grad():
            before = bert(input_ids=torch.as_tensor([list(ids)]), output_hidden_states=True).hidden_states[-1][0]
            kept = [token for i, token in enumerate(ids) if i != position]
            after = bert(input_ids=torch.as_tensor([kept]), output_hidden_states=True).hidden_states[-1][0]
        before = torch.cat([before[:position], before[position + 1:]])
        return (1 - torch.nn.functional.cosine_similarity(before, after, dim=-1)).numpy()

    kept = [name for name in names if name != regulator]
    targets = np.isin(kept, truth.loc[truth["source"] == regulator, "target"])
    shift = shifts(model.bert)
    assert shift[targets].min() > 10 * np.median(shift[~targets])
    # zeroing the planted heads (what A17 does to them) removes the effect: its targets move like any gene
    ablated = copy.deepcopy(model.bert)
    width = ablated.config.hidden_size // ablated.config.num_attention_heads
    with torch.no_grad():
        ablated.bert.encoder.layer[-1].attention.output.dense.weight[:, : len(PLANTED) * width] = 0
    silenced = shifts(ablated)
    assert silenced[targets].max() < 0.1 * shift[targets].min()


def test_every_token_embedding_is_balanced_for_the_layernorm(worlds, control):
    folder, model = control
    embeddings = model.bert.bert.embeddings.word_embeddings.weight.detach().double().numpy()
    assert np.allclose(embeddings.sum(axis=1), 0, atol=1e-4)
    assert np.allclose((embeddings**2).sum(axis=1), BALANCE, rtol=1e-5)
    regulators, matrix = regulatory_matrix(worlds, model.tokenizer.token_ids)
    links = {pair for world in worlds for pair in zip(world.uns["truth_edges"]["source"], world.uns["truth_edges"]["target"])}
    assert matrix.sum() == len(links) and len(regulators) == len({source for source, _ in links})
    assert (folder / "positive_control.json").is_file() and (folder / "token_dictionary.pkl").is_file()


def test_a_screen_without_planted_truth_is_refused(worlds, tmp_path):
    plain = worlds[0].copy()
    del plain.uns["truth_edges"]
    with pytest.raises(ValueError, match="planted truth_edges"):
        build_positive_control([plain], tmp_path / "control", PositiveControlSpec())
