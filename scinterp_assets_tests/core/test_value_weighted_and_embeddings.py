"""Value-weighted attention edges (context-vector cosines) and cell embeddings, against direct per-cell
computations from the tiny models: transformers' BertForMaskedLM for Geneformer, torch's own
TransformerEncoderLayer / MultiheadAttention for scGPT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scinterp_assets.core.attention import streaming
from scinterp_assets.core.attention.embeddings import CellEmbeddings, pool_hidden, resolve_pooling
from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.attention.streaming import AttentionAccumulator, plan_batches, torch_threads
from scinterp_assets.core.models import load_model
from scinterp_assets_tests.core.test_attention_streaming import reference_tokens
from scinterp_assets_tests.core.test_scgpt import reference_embedding, reference_layers
from scinterp_assets_tests.core.tiny_models import (
    assert_within,
    build_tiny_geneformer,
    build_tiny_scgpt,
    float32_sum_tolerance,
    tiny_counts,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors gain nothing from threads (and spin-waiting threads crawl on a busy CPU)."""
    with torch_threads(1):
        yield


def unit_rows(context: np.ndarray) -> np.ndarray:
    """(H, n, d) -> the same vectors scaled to unit length, float64."""
    context = context.astype(np.float64)
    return context / np.linalg.norm(context, axis=-1, keepdims=True)


def add_cosines(total: np.ndarray, contexts: list[np.ndarray], layers, kept) -> None:
    """Add cos(c_i, c_j) of each kept ordered pair ((position, slot) pairs) of one cell per layer and head."""
    for row, layer in enumerate(layers):
        unit = unit_rows(contexts[layer])
        for i, source in kept:
            for j, target in kept:
                total[row, :, source, target] += (unit[:, i] * unit[:, j]).sum(-1)


def with_empty_cells(adata):
    """Cell 3 has no counts at all and cell 7 counts only in genes the vocabulary lacks (NOVEL*)."""
    adata = adata.copy()
    adata.X[3] = 0
    adata.X[7, :30] = 0
    adata.X[7, 30:] = 5
    return adata


def assert_padding_is_exercised(lengths, batch_size):
    batches = plan_batches(lengths, batch_size)
    assert any(len({lengths[i] for i in batch}) > 1 for batch in batches), "padding would go untested"


# ---------------------------------------------------------------------------------------------------------
# the accumulator


def test_accumulator_adds_context_cosines_exactly():
    accumulator = AttentionAccumulator(("g0", "g1", "g2"), layers=(0,), n_heads=2, device="cpu",
                                       value_weighted=True)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 2, 3, 3, generator=generator)
    context = torch.randn(2, 2, 3, 4, generator=generator)
    slots = torch.tensor([[0, 2, -1], [2, 1, 0]])
    accumulator.add_layer(0, probs, accumulator.add_cells(slots), context)
    attention, weighted = accumulator.result(), accumulator.value_weighted_result()

    expected = np.zeros((1, 2, 3, 3))
    for cell, row in enumerate(slots.tolist()):
        unit = unit_rows(context[cell].numpy())
        for i, source in enumerate(row):
            for j, target in enumerate(row):
                if source >= 0 and target >= 0:
                    expected[0, :, source, target] += (unit[:, i] * unit[:, j]).sum(-1)
    # averaged over heads (FRAMEWORK section 4): no per-head rows are kept
    assert weighted.sum.shape == (1, 2, 0, 3) and weighted.sources == ()
    np.testing.assert_allclose(weighted.head_mean_sum, expected.mean(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(weighted.count, attention.count)
    assert weighted.head_mean_sum[0, 2, 2] == pytest.approx(2.0, abs=1e-12)  # g2 in both cells: cos 1
    np.testing.assert_allclose(weighted.head_mean_sum, weighted.head_mean_sum.transpose(0, 2, 1), atol=1e-12)

    plain = AttentionAccumulator(("g0",), layers=(0,), n_heads=2, device="cpu")
    selection = plain.add_cells(torch.tensor([[0]]))
    with pytest.raises(ValueError, match="refused"):
        plain.add_layer(0, probs[:1, :, :1, :1], selection, context[:1, :, :1])
    with pytest.raises(ValueError, match="value_weighted=True"):
        plain.value_weighted_result()
    with pytest.raises(ValueError, match="required"):
        accumulator.add_layer(0, probs, accumulator.add_cells(slots))
    with pytest.raises(ValueError, match="context must be"):
        accumulator.add_layer(0, probs, accumulator.add_cells(slots), context[:, :1])


# ---------------------------------------------------------------------------------------------------------
# Geneformer: value-weighted parity with BertForMaskedLM, V recomputed from the layer's weights per cell


def geneformer_reference(folder, adata, genes, layers, max_genes):
    """Attention and context-cosine sums and pair counts, one cell at a time, no padding."""
    from transformers import BertForMaskedLM

    cells, token_ids = reference_tokens(adata, folder, max_genes)
    bert = BertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    id_of = dict(zip(adata.var_names, adata.var["ensembl_id"]))
    slot = {token_ids[id_of[g]]: k for k, g in enumerate(genes) if id_of[g] in token_ids}
    n_heads, n_genes = bert.config.num_attention_heads, len(genes)
    attention = np.zeros((len(layers), n_heads, n_genes, n_genes))
    cosine = np.zeros_like(attention)
    count = np.zeros((n_genes, n_genes), dtype=np.int64)
    for tokens in cells:
        if not tokens:
            continue
        with torch.no_grad():
            output = bert(torch.tensor([tokens]), output_attentions=True, output_hidden_states=True)
            contexts = []
            for index, bert_layer in enumerate(bert.bert.encoder.layer):
                # V from the layer's own weights on the layer's input (hidden_states[index]), split into heads
                value = bert_layer.attention.self.value(output.hidden_states[index])[0]
                value = value.view(len(tokens), n_heads, -1).transpose(0, 1)  # (H, n, d_head)
                contexts.append((output.attentions[index][0] @ value).numpy())
        kept = [(i, slot[t]) for i, t in enumerate(tokens) if t in slot]
        for i, source in kept:
            for j, target in kept:
                count[source, target] += 1
                for row, layer in enumerate(layers):
                    attention[row, :, source, target] += output.attentions[layer][0, :, i, j].double().numpy()
        add_cosines(cosine, contexts, layers, kept)
    return attention, cosine, count


GENEFORMER_CASES = {
    # name: (version, max_position_embeddings, genes (None: all var names), layers, batch_size)
    "v1-all-genes": ("V1", 64, None, None, 5),
    "v1-truncated-subset-layer-1": (
        "V1",
        8,
        ["GENE3", "GENE1", "NOVEL0", "GENE20", "GENE7", "GENE12"],
        [1],
        4,
    ),
    "v2-subset": ("V2", 64, ["GENE2", "GENE5", "NOVEL1", "GENE9", "GENE11", "GENE30"], None, 3),
}


@pytest.mark.parametrize("case", list(GENEFORMER_CASES))
def test_geneformer_value_weighted_matches_direct_reference(tmp_path, case):
    version, max_positions, genes, layers, batch_size = GENEFORMER_CASES[case]
    folder = build_tiny_geneformer(tmp_path / "m", version=version, max_position_embeddings=max_positions)
    adata = with_empty_cells(tiny_counts(n_cells=12))
    genes = list(adata.var_names) if genes is None else genes
    model = load_model(folder)
    assert_padding_is_exercised([len(cell) for cell in model.tokenizer.tokenize(adata)], batch_size)

    plain = model.attention_scores(adata, genes, layers=layers, batch_size=batch_size)
    attention, weighted = model.attention_scores(adata, genes, layers=layers, batch_size=batch_size,
                                                 value_weighted=True)  # fmt: skip
    expected_layers = [0, 1] if layers is None else layers
    max_genes = max_positions - 2 if version == "V2" else max_positions
    ref_attention, ref_cosine, ref_count = geneformer_reference(
        folder, adata, genes, expected_layers, max_genes
    )

    assert type(plain) is AttentionScores and type(weighted) is AttentionScores
    np.testing.assert_array_equal(attention.sum, plain.sum)  # the opt-in changes nothing else
    np.testing.assert_array_equal(attention.count, plain.count)
    assert (weighted.genes, weighted.layers, weighted.n_cells) == (plain.genes, plain.layers, plain.n_cells)
    assert weighted.genes == tuple(genes) and weighted.layers == tuple(expected_layers)
    np.testing.assert_array_equal(weighted.count, ref_count)
    # longest float32 reduction: the cell's tokens (up to max_positions) or the width / feed-forward size
    tolerance = float32_sum_tolerance(ref_count, n_layers=2, reduction_length=max(max_positions, 32))
    assert_within(attention.sum, ref_attention, tolerance)
    assert_within(weighted.head_mean_sum, ref_cosine.mean(axis=1), tolerance)
    reference = AttentionScores(tuple(genes), tuple(expected_layers), ref_cosine, ref_count, 12).head_mean()
    assert_within(weighted.head_mean(), reference, float32_sum_tolerance(1, 2, max(max_positions, 32)))
    finite = weighted.head_mean()[np.isfinite(weighted.head_mean())]
    assert finite.size and np.all(np.abs(finite) <= 1 + 1e-9) and finite.min() < 0.9  # not all cosine 1
    assert plain.provenance["score"] == attention.provenance["score"] == "attention_probability"
    assert weighted.provenance["score"] == weighted.score == "value_weighted_cosine"
    assert {k: v for k, v in weighted.provenance.items() if k != "score"} == {
        k: v for k, v in plain.provenance.items() if k != "score"
    }


def test_value_weighted_false_runs_no_extra_work(tmp_path, monkeypatch):
    def forbidden(*_args, **_kwargs):
        raise AssertionError("value-weighted work ran without value_weighted=True")

    monkeypatch.setattr(streaming, "head_unit_vectors", forbidden)
    adata = tiny_counts(n_cells=6)
    genes = ["GENE1", "GENE2", "GENE5"]
    for model in (
        load_model(build_tiny_geneformer(tmp_path / "g")),
        load_model(build_tiny_scgpt(tmp_path / "s")),
    ):
        scores = model.attention_scores(adata, genes)
        assert type(scores) is AttentionScores and scores.provenance["score"] == "attention_probability"
        with pytest.raises(AssertionError, match="value-weighted work ran"):
            model.attention_scores(adata, genes, value_weighted=True)
        # the plain generators still yield (layer, probabilities) pairs
    model = load_model(build_tiny_geneformer(tmp_path / "g2"))
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.bool)
    with torch.inference_mode():
        assert [len(item) for item in model.layer_attention(ids, mask, 1)] == [2, 2]
        with_context = list(model.layer_attention(ids, mask, 1, with_context=True))
    assert [tuple(item[2].shape) for item in with_context] == [(1, 2, 3, 8)] * 2


# ---------------------------------------------------------------------------------------------------------
# scGPT: value-weighted parity with torch's MultiheadAttention, v from its in_proj weights per cell


def scgpt_reference(folder, model, adata, genes, layers, seed, qkv_names):
    state = torch.load(folder / "best_model.pt", weights_only=True)
    vocab = json.loads((folder / "vocab.json").read_text())
    torch_layers = reference_layers(state, qkv_names)
    slot = {vocab[g]: k for k, g in enumerate(genes) if g in vocab}
    attention = np.zeros((len(layers), 2, len(genes), len(genes)))
    cosine = np.zeros_like(attention)
    count = np.zeros((len(genes), len(genes)), dtype=np.int64)
    for cell in model.tokenizer.tokenize(adata, seed=seed):
        ids, values = cell.ids.tolist(), cell.values.tolist()
        if len(ids) <= 1:  # <cls> alone: skipped by the adapter
            continue
        hidden = reference_embedding(state, ids, values)
        attentions, contexts = [], []
        with torch.no_grad():
            for layer in torch_layers:
                mha = layer.self_attn
                _, weights = mha(hidden, hidden, hidden, need_weights=True, average_attn_weights=False)
                width = mha.embed_dim
                value = F.linear(hidden[0], mha.in_proj_weight[2 * width :], mha.in_proj_bias[2 * width :])
                value = value.view(len(ids), mha.num_heads, -1).transpose(0, 1)  # (H, n, d_head)
                attentions.append(weights[0].double().numpy())
                contexts.append((weights[0] @ value).numpy())
                hidden = layer(hidden)
        kept = [(i, slot[t]) for i, t in enumerate(ids) if i > 0 and t in slot]  # position 0 is <cls>
        for i, source in kept:
            for j, target in kept:
                count[source, target] += 1
                for row, layer in enumerate(layers):
                    attention[row, :, source, target] += attentions[layer][:, i, j]
        add_cosines(cosine, contexts, layers, kept)
    return attention, cosine, count


SUBSET = ["GENE3", "GENE1", "NOVEL0", "GENE20", "GENE7", "GENE12", "GENE29"]
SCGPT_CASES = {
    # name: (qkv_names, max_seq_len, genes (None: all var names), layers, batch_size, batch_norm)
    "wqkv-all-genes": ("Wqkv", 1200, None, None, 5, False),
    "in-proj-cut-to-8-subset-layer-1": ("in_proj", 8, SUBSET, [1], 4, False),
    "impl-wqkv-batchnorm-subset": ("impl_Wqkv", 1200, SUBSET, None, 3, True),
}


@pytest.mark.parametrize("case", list(SCGPT_CASES))
def test_scgpt_value_weighted_matches_direct_reference(tmp_path, case):
    qkv_names, max_seq_len, genes, layers, batch_size, batch_norm = SCGPT_CASES[case]
    folder = build_tiny_scgpt(
        tmp_path / "m", qkv_names=qkv_names, max_seq_len=max_seq_len, batch_norm=batch_norm
    )
    adata = with_empty_cells(tiny_counts(n_cells=12))
    genes = list(adata.var_names) if genes is None else genes
    model = load_model(folder)
    seed = 5
    if max_seq_len >= 30:
        assert_padding_is_exercised(
            [len(c.ids) for c in model.tokenizer.tokenize(adata, seed=seed)], batch_size
        )

    plain = model.attention_scores(adata, genes, layers=layers, batch_size=batch_size, seed=seed)
    attention, weighted = model.attention_scores(
        adata, genes, layers=layers, batch_size=batch_size, seed=seed, value_weighted=True
    )
    expected_layers = [0, 1] if layers is None else layers
    ref_attention, ref_cosine, ref_count = scgpt_reference(
        folder, model, adata, genes, expected_layers, seed, qkv_names
    )

    assert type(plain) is AttentionScores and plain.n_cells == weighted.n_cells == 10  # two empty cells
    np.testing.assert_array_equal(attention.sum, plain.sum)
    np.testing.assert_array_equal(attention.count, plain.count)
    assert (weighted.genes, weighted.layers) == (tuple(genes), tuple(expected_layers))
    np.testing.assert_array_equal(weighted.count, ref_count)
    # longest float32 reduction: the cell's tokens (<cls> and at most max_seq_len genes) or the widths
    reduction = max(min(max_seq_len, adata.n_vars) + 1, 32)
    tolerance = float32_sum_tolerance(ref_count, n_layers=2, reduction_length=reduction)
    assert_within(attention.sum, ref_attention, tolerance)
    assert_within(weighted.head_mean_sum, ref_cosine.mean(axis=1), tolerance)
    reference = AttentionScores(tuple(genes), tuple(expected_layers), ref_cosine, ref_count, 12).head_mean()
    assert_within(weighted.head_mean(), reference, float32_sum_tolerance(1, 2, reduction))
    finite = weighted.head_mean()[np.isfinite(weighted.head_mean())]
    assert finite.size and np.all(np.abs(finite) <= 1 + 1e-9) and finite.min() < 0.9
    assert (attention.provenance["score"], weighted.provenance["score"]) == (
        "attention_probability", "value_weighted_cosine",
    )  # fmt: skip
    assert weighted.provenance["seed"] == seed and weighted.provenance["family"] == "scgpt"


def test_value_weighted_scores_round_trip_through_a_file(tmp_path):
    model = load_model(build_tiny_scgpt(tmp_path / "m"))
    _, weighted = model.attention_scores(tiny_counts(n_cells=4), ["GENE1", "GENE2"], value_weighted=True)
    loaded = AttentionScores.load(weighted.save(tmp_path / "vw.npz"))
    assert loaded.score == "value_weighted_cosine" and loaded.sources == ()
    np.testing.assert_array_equal(loaded.head_mean_sum, weighted.head_mean_sum)


# ---------------------------------------------------------------------------------------------------------
# cell embeddings


def geneformer_final_hidden(folder, tokens):
    """Final hidden states (n, d) of one cell, no padding, through transformers' own forward."""
    from transformers import BertForMaskedLM

    bert = BertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return bert(torch.tensor([tokens]), output_hidden_states=True).hidden_states[-1][0].numpy()


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_geneformer_embeddings_match_final_hidden_states(tmp_path, version):
    folder = build_tiny_geneformer(tmp_path / "m", version=version)
    model = load_model(folder)
    adata = with_empty_cells(tiny_counts(n_cells=12))
    batch_size = 5
    auto = model.cell_embeddings(adata, batch_size=batch_size)
    mean = model.cell_embeddings(adata, batch_size=batch_size, pooling="mean")

    names = list(adata.obs_names)
    assert auto.cell_ids == mean.cell_ids == tuple(n for n in names if n not in ("cell3", "cell7"))
    assert auto.skipped == ("cell3", "cell7")
    assert auto.values.dtype == np.float32 and auto.values.shape == (10, 16)
    assert auto.pooling == ("cls" if version == "V2" else "mean") and mean.pooling == "mean"
    assert auto.provenance["family"] == "geneformer" and auto.provenance["pooling"] == auto.pooling

    cells, token_ids = reference_tokens(adata, folder, 62 if version == "V2" else 64)
    assert_padding_is_exercised([len(cells[names.index(n)]) for n in auto.cell_ids], batch_size)
    specials = {token_ids[name] for name in ("<cls>", "<eos>") if name in token_ids}
    for row, name in enumerate(auto.cell_ids):
        tokens = cells[names.index(name)]
        hidden = geneformer_final_hidden(folder, tokens)
        genes = [i for i, token in enumerate(tokens) if token not in specials]
        assert len(genes) == len(tokens) - len(specials)
        np.testing.assert_allclose(mean.values[row], hidden[genes].mean(axis=0), rtol=0, atol=1e-5)
        if version == "V2":
            assert tokens[0] == token_ids["<cls>"]
            np.testing.assert_allclose(auto.values[row], hidden[0], rtol=0, atol=1e-5)
    if version == "V1":
        np.testing.assert_array_equal(auto.values, mean.values)
        with pytest.raises(ValueError, match="needs a <cls> token"):
            model.cell_embeddings(adata, pooling="cls")
    else:
        np.testing.assert_array_equal(
            model.cell_embeddings(adata, batch_size, pooling="cls").values, auto.values
        )


def scgpt_final_hidden(folder, cell, qkv_names="Wqkv"):
    """Final layer output (n, d) of one tokenised cell through torch's own TransformerEncoderLayer."""
    state = torch.load(folder / "best_model.pt", weights_only=True)
    hidden = reference_embedding(state, cell.ids.tolist(), cell.values.tolist())
    with torch.no_grad():
        for layer in reference_layers(state, qkv_names):
            hidden = layer(hidden)
    return hidden[0].numpy()


def test_scgpt_embeddings_match_the_encoder_output(tmp_path):
    folder = build_tiny_scgpt(tmp_path / "m")
    model = load_model(folder)
    adata = with_empty_cells(tiny_counts(n_cells=12))
    seed, batch_size = 3, 5
    auto = model.cell_embeddings(adata, batch_size=batch_size, seed=seed)
    mean = model.cell_embeddings(adata, batch_size=batch_size, seed=seed, pooling="mean")

    names = list(adata.obs_names)
    assert auto.cell_ids == mean.cell_ids == tuple(n for n in names if n not in ("cell3", "cell7"))
    assert auto.skipped == ("cell3", "cell7") and auto.pooling == "cls" and mean.pooling == "mean"
    assert auto.values.dtype == np.float32 and auto.values.shape == (10, 16)
    assert auto.provenance["seed"] == seed and auto.provenance["family"] == "scgpt"

    cells = model.tokenizer.tokenize(adata, seed=seed)
    assert_padding_is_exercised([len(cells[names.index(n)].ids) for n in auto.cell_ids], batch_size)
    for row, name in enumerate(auto.cell_ids):
        cell = cells[names.index(name)]
        assert cell.ids[0] == model.tokenizer.cls_id
        with torch.no_grad():  # the encoder's own output for this cell alone
            own = model.encoder(torch.from_numpy(cell.ids)[None], torch.from_numpy(cell.values)[None],
                                torch.ones(1, len(cell.ids), dtype=torch.bool))[0].numpy()  # fmt: skip
        for hidden in (own, scgpt_final_hidden(folder, cell)):
            np.testing.assert_allclose(auto.values[row], hidden[0], rtol=0, atol=1e-5)
            np.testing.assert_allclose(mean.values[row], hidden[1:].mean(axis=0), rtol=0, atol=1e-5)

    other_seed = model.cell_embeddings(adata, batch_size=batch_size, seed=seed + 1)
    assert not np.allclose(other_seed.values, auto.values)  # the seed reaches the binning


def test_scgpt_without_cls_pools_the_mean(tmp_path):
    model = load_model(build_tiny_scgpt(tmp_path / "m", specials=("<pad>",)))
    adata = tiny_counts(n_cells=5)
    auto = model.cell_embeddings(adata, batch_size=2)
    assert auto.pooling == "mean" and auto.skipped == () and auto.cell_ids == tuple(adata.obs_names)
    cell = model.tokenizer.tokenize(adata)[2]
    with torch.no_grad():
        own = model.encoder(torch.from_numpy(cell.ids)[None], torch.from_numpy(cell.values)[None],
                            torch.ones(1, len(cell.ids), dtype=torch.bool))[0].numpy()  # fmt: skip
    np.testing.assert_allclose(auto.values[2], own.mean(axis=0), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="needs a <cls> token"):
        model.cell_embeddings(adata, pooling="cls")
    with pytest.raises(ValueError, match="'auto', 'cls' or 'mean'"):
        model.cell_embeddings(adata, pooling="max")


def test_pooling_helpers():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    hidden[1, 2] = float("nan")  # padding must never reach a mean
    genes = torch.tensor([[False, True, True], [False, True, False]])
    np.testing.assert_array_equal(pool_hidden(hidden, genes, "mean").numpy(), [[3.0, 4.0], [8.0, 9.0]])
    np.testing.assert_array_equal(pool_hidden(hidden, genes, "cls").numpy(), [[0.0, 1.0], [6.0, 7.0]])
    with pytest.raises(ValueError, match="at least one gene"):
        pool_hidden(hidden, torch.zeros(2, 3, dtype=torch.bool), "mean")
    assert resolve_pooling("auto", "mean", True, "x") == "mean"


def test_cell_embeddings_container_validates_and_round_trips(tmp_path):
    embeddings = CellEmbeddings(("a", "b"), np.ones((2, 3), dtype=np.float32), "mean", ("c",), {"seed": 1})
    loaded = CellEmbeddings.load(embeddings.save(tmp_path / "sub" / "emb.npz"))
    assert (loaded.cell_ids, loaded.skipped, loaded.pooling) == (("a", "b"), ("c",), "mean")
    assert loaded.provenance == {"seed": 1}
    np.testing.assert_array_equal(loaded.values, embeddings.values)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["emb.npz"]
    with pytest.raises(ValueError, match="float32"):
        CellEmbeddings(("a",), np.ones((1, 3)), "mean")
    with pytest.raises(ValueError, match="float32"):
        CellEmbeddings(("a", "b"), np.ones((1, 3), dtype=np.float32), "mean")
    with pytest.raises(ValueError, match="pooling"):
        CellEmbeddings(("a",), np.ones((1, 3), dtype=np.float32), "max")
    with pytest.raises(ValueError, match="both embedded and skipped"):
        CellEmbeddings(("a",), np.ones((1, 3), dtype=np.float32), "cls", ("a",))


# ---------------------------------------------------------------------------------------------------------
# device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["geneformer", "scgpt"])
def test_cuda_matches_cpu(tmp_path, family):
    build = build_tiny_geneformer if family == "geneformer" else build_tiny_scgpt
    model = load_model(
        build(tmp_path / "m", version="V2") if family == "geneformer" else build(tmp_path / "m")
    )
    adata = with_empty_cells(tiny_counts(n_cells=12))
    genes = list(adata.var_names)
    on_gpu = model.attention_scores(adata, genes, batch_size=5, device="cuda", value_weighted=True)
    on_cpu = model.attention_scores(adata, genes, batch_size=5, device="cpu", value_weighted=True)
    for gpu, cpu in zip(on_gpu, on_cpu):
        np.testing.assert_array_equal(gpu.count, cpu.count)
        np.testing.assert_allclose(gpu.sum, cpu.sum, rtol=0, atol=1e-4)
    for pooling in ("cls", "mean"):
        gpu = model.cell_embeddings(adata, batch_size=5, device="cuda", pooling=pooling)
        cpu = model.cell_embeddings(adata, batch_size=5, device="cpu", pooling=pooling)
        assert gpu.cell_ids == cpu.cell_ids
        np.testing.assert_allclose(gpu.values, cpu.values, rtol=0, atol=1e-4)
