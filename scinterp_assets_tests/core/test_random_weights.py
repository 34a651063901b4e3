"""Random-weights twins (A25) of both families: same architecture and tokeniser, seeded random weights drawn as
each family initialises an untrained model, and every model operation still works on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scinterp_assets.core.models.readouts import Batching, masked_positions, masked_prediction
from scinterp_assets_tests.core.tiny_models import load_tiny_models, tiny_counts

FAMILIES = ("geneformer", "scgpt")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_tiny_models(tmp_path_factory.mktemp("random-weights"))


def weights(model) -> dict[str, torch.Tensor]:
    module = model.bert if model.family == "geneformer" else model.encoder
    state = {name: value.detach().clone() for name, value in module.state_dict().items()}
    if model.family == "scgpt" and model.decoder is not None:
        state.update({f"decoder.{name}": value.detach().clone() for name, value in model.decoder.state_dict().items()})
    return state


@pytest.mark.parametrize("family", FAMILIES)
def test_a_twin_keeps_the_architecture_and_tokeniser_and_draws_new_weights(models, family):
    trained = models[family]
    before = weights(trained)
    twin = trained.with_random_weights(seed=7)
    assert (twin.n_layers, twin.n_heads, twin.family, twin.version) == (
        trained.n_layers, trained.n_heads, trained.family, trained.version)
    assert twin.tokenizer is trained.tokenizer and twin.random_weights_seed == 7
    assert trained.random_weights_seed is None
    drawn = weights(twin)
    assert {name: value.shape for name, value in drawn.items()} == {name: value.shape for name, value in before.items()}
    matrices = [name for name, value in before.items() if value.ndim == 2]
    assert matrices and all(not torch.equal(drawn[name], before[name]) for name in matrices)
    # the checkpoint itself is untouched, and the same seed draws the same weights without moving torch's stream
    assert all(torch.equal(value, weights(trained)[name]) for name, value in before.items())
    state = torch.random.get_rng_state()
    again = weights(trained.with_random_weights(seed=7))
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(value, again[name]) for name, value in drawn.items())
    other = weights(trained.with_random_weights(seed=8))
    assert not all(torch.equal(value, other[name]) for name, value in drawn.items())


def test_twins_are_initialised_as_each_family_initialises_an_untrained_model(models):
    geneformer = models["geneformer"].with_random_weights(seed=0).bert
    spread = geneformer.config.initializer_range
    query = geneformer.bert.encoder.layer[0].attention.self.query
    # transformers' BERT: normal(0, initializer_range) weights, zero biases (4 sigma bounds the largest draw)
    assert abs(float(query.weight.detach().std()) - spread) < 0.25 * spread and torch.all(query.bias == 0)
    assert float(query.weight.detach().abs().max()) < 6 * spread
    scgpt = models["scgpt"].with_random_weights(seed=0).encoder
    embedding = scgpt.encoder.embedding.weight.detach()
    assert float(embedding.min()) >= -0.1 and float(embedding.max()) <= 0.1  # scGPT's uniform(-0.1, 0.1)
    assert torch.all(scgpt.transformer_encoder.layers[0].self_attn.in_proj_bias == 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_twin_extracts_attention_and_reads_out_like_its_checkpoint(models, family):
    trained = models[family]
    twin = trained.with_random_weights(seed=3)
    cells = tiny_counts(n_cells=6)
    genes = list(cells.var_names[:20])
    scores = twin.attention_scores(cells, genes)
    reference = trained.attention_scores(cells, genes)
    np.testing.assert_array_equal(scores.count, reference.count)  # the same tokens: the same pairs
    pairs = (scores.count > 0) & ~np.eye(len(genes), dtype=bool)  # self-pairs are not edges
    assert pairs.any() and np.isfinite(scores.head_mean(0)[pairs]).all()
    assert not np.allclose(scores.sum, reference.sum)
    readout = twin.readout_cells(cells, seed=0)
    masked = masked_prediction(twin, readout, masked_positions(readout, 0.3, seed=0), [], Batching(batch_size=4))
    assert np.isfinite(masked.loss).all()
