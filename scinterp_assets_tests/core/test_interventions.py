"""Interventions (zero heads, uniform attention, zero MLP) on both families against a float64 layer computed
by hand from the checkpoint's weights, and their scoping: the model is restored bit for bit, also after an
exception."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scinterp_assets.core.attention.streaming import pad_sequences
from scinterp_assets.core.models.interventions import (
    Intervention,
    intervene,
    uniform_attention,
    zero_heads,
    zero_mlp,
)
from scinterp_assets_tests.core.tiny_models import load_tiny_models, tiny_counts

FAMILIES = ("geneformer", "scgpt")
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_tiny_models(tmp_path_factory.mktemp("interventions"))


class Batch:
    """A padded batch of tiny cells and a way to run it through the whole model of either family."""

    def __init__(self, model, n_cells: int = 5):
        self.model = model
        adata = tiny_counts(n_cells=n_cells)
        if model.family == "geneformer":
            ids, mask = pad_sequences(model.tokenizer.tokenize(adata), model.tokenizer.pad_token)
            self.ids, self.real = torch.from_numpy(ids), torch.from_numpy(mask)
            self.values = None
            self.layers = model.bert.bert.encoder.layer
        else:
            ids, values, attend = model.tokenizer.pad(model.tokenizer.tokenize(adata, seed=0))
            self.ids, self.values, self.real = (torch.from_numpy(a) for a in (ids, values, attend))
            self.layers = model.encoder.transformer_encoder.layers
        assert not self.real.all(), "the batch must hold padding for the mask to be exercised"

    def run(self) -> torch.Tensor:
        """The whole model's output: Geneformer's MLM logits, scGPT's last hidden state."""
        with torch.inference_mode():
            if self.values is None:
                return self.model.bert(input_ids=self.ids, attention_mask=self.real.long()).logits
            return self.model.encoder(self.ids, self.values, self.real)

    def layer_io(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, output) of one encoder layer in a run of the whole model."""
        seen = {}

        def capture(_module, args, kwargs, output):
            seen["input"] = args[0] if args else kwargs["hidden_states"]
            seen["output"] = output[0] if isinstance(output, tuple) else output

        handle = self.layers[layer].register_forward_hook(capture, with_kwargs=True)
        try:
            self.run()
        finally:
            handle.remove()
        return seen["input"], seen["output"]


def layer_weights(model, layer: int) -> dict[str, np.ndarray | float]:
    """One layer's weights as float64 arrays under family-neutral names (torch Linear: y = x W^T + b)."""
    as_array = lambda tensor: tensor.detach().double().numpy()  # noqa: E731
    if model.family == "geneformer":
        block = model.bert.bert.encoder.layer[layer]
        attention, width = block.attention.self, model.bert.config.hidden_size
        return {
            "Wq": as_array(attention.query.weight), "bq": as_array(attention.query.bias),
            "Wk": as_array(attention.key.weight), "bk": as_array(attention.key.bias),
            "Wv": as_array(attention.value.weight), "bv": as_array(attention.value.bias),
            "Wo": as_array(block.attention.output.dense.weight), "bo": as_array(block.attention.output.dense.bias),
            "g1": as_array(block.attention.output.LayerNorm.weight), "h1": as_array(block.attention.output.LayerNorm.bias),
            "W1": as_array(block.intermediate.dense.weight), "b1": as_array(block.intermediate.dense.bias),
            "W2": as_array(block.output.dense.weight), "b2": as_array(block.output.dense.bias),
            "g2": as_array(block.output.LayerNorm.weight), "h2": as_array(block.output.LayerNorm.bias),
            "eps": float(model.bert.config.layer_norm_eps), "width": width,
        }  # fmt: skip
    block = model.encoder.transformer_encoder.layers[layer]
    qkv, qkv_bias, width = as_array(block.self_attn.in_proj_weight), as_array(block.self_attn.in_proj_bias), block.linear1.in_features
    return {
        "Wq": qkv[:width], "bq": qkv_bias[:width], "Wk": qkv[width : 2 * width], "bk": qkv_bias[width : 2 * width],
        "Wv": qkv[2 * width :], "bv": qkv_bias[2 * width :],
        "Wo": as_array(block.self_attn.out_proj.weight), "bo": as_array(block.self_attn.out_proj.bias),
        "g1": as_array(block.norm1.weight), "h1": as_array(block.norm1.bias),
        "W1": as_array(block.linear1.weight), "b1": as_array(block.linear1.bias),
        "W2": as_array(block.linear2.weight), "b2": as_array(block.linear2.bias),
        "g2": as_array(block.norm2.weight), "h2": as_array(block.norm2.bias),
        "eps": float(block.norm1.eps), "width": width,
    }  # fmt: skip


def layer_by_hand(x, real, w, n_heads, *, zeroed=(), uniform=(), mlp_zeroed=False) -> np.ndarray:
    """A post-norm ReLU encoder layer (both families' tiny models) in float64 numpy, with heads' context
    vectors zeroed, heads attending uniformly to the real tokens (values kept), or the MLP output zeroed."""
    x = x.astype(np.float64)
    batch, length, width = x.shape
    d_head = width // n_heads
    split = lambda y: y.reshape(batch, length, n_heads, d_head).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(x @ w[f"W{p}"].T + w[f"b{p}"]) for p in "qkv")
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d_head)
    logits = np.where(real[:, None, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    context = probs @ v  # (B, H, n, d_head)
    for head in zeroed:
        context[:, head] = 0.0
    for head in uniform:
        mean = (v[:, head] * real[:, :, None]).sum(axis=1) / real.sum(axis=1)[:, None]
        context[:, head] = mean[:, None, :]
    attended = context.transpose(0, 2, 1, 3).reshape(batch, length, width) @ w["Wo"].T + w["bo"]

    def norm(y, gain, shift):
        centred = y - y.mean(axis=-1, keepdims=True)
        return centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + w["eps"]) * gain + shift

    hidden = norm(x + attended, w["g1"], w["h1"])
    feed_forward = np.maximum(hidden @ w["W1"].T + w["b1"], 0.0) @ w["W2"].T + w["b2"]
    return norm(hidden + (0.0 if mlp_zeroed else feed_forward), w["g2"], w["h2"])


def hand_tolerance(w, length: int, expected: np.ndarray) -> float:
    """float32 error bound of one layer against the float64 computation: each output passes through a few
    chained float32 reductions (q/k/v and the projections over the width, the softmax-weighted sum over the
    tokens, the feed-forward pair over its hidden size), each within reduction_length * eps32 relative to
    first order (Higham); LayerNorm rescales the error with the output, so it is taken relative to the
    largest output, and doubled for the chain's interactions."""
    longest = max(w["width"], w["W1"].shape[0], length)
    chained = 6  # q/k logits, softmax sum, context, projection, two feed-forward maps
    return 2 * chained * longest * EPS32 * max(1.0, float(np.abs(expected).max()))


CASES = {
    "zero one head": lambda layer: [zero_heads(layer, [1])],
    "uniform one head": lambda layer: [uniform_attention(layer, [0])],
    "zero MLP": lambda layer: [zero_mlp(layer)],
    "zero one, uniform the other, zero MLP": lambda layer: [
        zero_heads(layer, [0]), uniform_attention(layer, [1]), zero_mlp(layer)],
}
HAND_ARGUMENTS = {
    "zero one head": {"zeroed": [1]},
    "uniform one head": {"uniform": [0]},
    "zero MLP": {"mlp_zeroed": True},
    "zero one, uniform the other, zero MLP": {"zeroed": [0], "uniform": [1], "mlp_zeroed": True},
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layer", [0, 1])
def test_intervened_layer_equals_the_hand_computation(models, family, case, layer):
    model = models[family]
    batch = Batch(model)
    weights = layer_weights(model, layer)
    clean_input, clean_output = batch.layer_io(layer)
    with intervene(model, CASES[case](layer)):
        layer_input, output = batch.layer_io(layer)
    assert torch.equal(layer_input, clean_input)  # an intervention at this layer leaves its input alone
    real = batch.real.numpy()
    expected = layer_by_hand(layer_input.numpy(), real, weights, model.n_heads, **HAND_ARGUMENTS[case])
    clean_expected = layer_by_hand(clean_input.numpy(), real, weights, model.n_heads)
    tolerance = hand_tolerance(weights, real.shape[1], expected)
    # padded query positions are never read; compare every real token of every cell
    np.testing.assert_allclose(output.numpy()[real], expected[real], rtol=0, atol=tolerance)
    np.testing.assert_allclose(clean_output.numpy()[real], clean_expected[real], rtol=0, atol=tolerance)
    assert np.abs(expected - clean_expected)[real].max() > 100 * tolerance, "the intervention must matter"


def hook_count(model) -> int:
    modules = model.bert.modules() if model.family == "geneformer" else model.encoder.modules()
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_is_restored_bit_for_bit_after_success_and_after_an_exception(models, family):
    model = models[family]
    batch = Batch(model)
    every_kind = [zero_heads(0, [0, 1]), uniform_attention(1, [1]), zero_mlp(1)]
    hooks_before, clean = hook_count(model), batch.run()
    with intervene(model, every_kind):
        assert not torch.equal(batch.run(), clean)
    assert torch.equal(batch.run(), clean) and hook_count(model) == hooks_before

    with pytest.raises(RuntimeError, match="raised inside"):
        with intervene(model, every_kind):
            batch.run()
            raise RuntimeError("raised inside the block")
    assert torch.equal(batch.run(), clean) and hook_count(model) == hooks_before

    def fail_mid_layer(*_args):  # the exception comes from inside the forward pass, between the hooks
        raise RuntimeError("raised inside the forward pass")

    sites = model.intervention_sites(1)
    with pytest.raises(RuntimeError, match="raised inside"):
        with intervene(model, every_kind):
            # before the uniform-attention hook at the projection, after the one that read the layer input
            handle = sites.head_projection.register_forward_pre_hook(fail_mid_layer, prepend=True)
            try:
                batch.run()
            finally:
                handle.remove()
    assert torch.equal(batch.run(), clean) and hook_count(model) == hooks_before


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_moves_only_after_the_intervened_layer(models, family):
    """Layer l's own probabilities are computed before its intervention acts: a readout there or earlier
    cannot change by construction (the study's readout flaw), one after it can."""
    model = models[family]
    batch = Batch(model)

    def probabilities() -> list[torch.Tensor]:
        with torch.inference_mode():
            if model.family == "geneformer":
                stream = model.layer_attention(batch.ids, batch.real, model.n_layers - 1)
            else:
                stream = model.encoder.layer_attention(batch.ids, batch.values, batch.real, model.n_layers - 1)
            return [probs.clone() for _, probs in stream]

    clean = probabilities()
    for intervention in (zero_heads(0, [0]), uniform_attention(0, [0])):
        with intervene(model, [intervention]):
            changed = probabilities()
        # the probabilities the layer computes are those of the clean run ...
        assert torch.equal(changed[0], clean[0])
        assert not torch.equal(changed[1], clean[1]) and intervention.changes_attention_at(1)
    # ... which zeroed heads still use, while uniform attention replaces them (the readout then reads those)
    assert not zero_heads(0, [0]).changes_attention_at(0) and uniform_attention(0, [0]).changes_attention_at(0)


def test_interventions_are_checked_against_the_model(models):
    model = models["geneformer"]
    with pytest.raises(ValueError, match="layers 0..1"):
        with intervene(model, [zero_mlp(2)]):
            pass
    with pytest.raises(ValueError, match=r"heads 0..1, not \[5\]"):
        with intervene(model, [zero_heads(0, [0, 5])]):
            pass
    with pytest.raises(ValueError, match="names a head twice"):
        zero_heads(0, [1, 1])
    with pytest.raises(ValueError, match="names no head"):
        uniform_attention(0, [])
    with pytest.raises(ValueError, match="whole layer"):
        Intervention("zero_mlp", 0, (1,))
    assert hook_count(model) == 0
    assert zero_heads(1, [3, 0]).describe() == "zero_heads L1 H0,3"
