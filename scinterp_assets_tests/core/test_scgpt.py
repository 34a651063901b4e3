"""scGPT folders: loading under every q/k/v naming, binning, parity with torch's attention, bad input,
tiny pretraining."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from anndata import AnnData

from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.attention.streaming import plan_batches, torch_threads
from scinterp_assets.core.models import (
    CountDataError,
    GeneCoverageError,
    ModelLoadError,
    load_model,
)
from scinterp_assets.core.models.scgpt import BATCH_NORM_EPS, BinnedValueTokenizer, bin_values
from scinterp_assets.core.models.scgpt_pretrain import TinyScGPTSpec, train_tiny_scgpt
from scinterp_assets.core.models.training import TrainingTimeCapError
from scinterp_assets.resources.model_store import fingerprint_folder
from scinterp_assets_tests.core.tiny_models import (
    SCGPT_OUT_PROJ_NAMES,
    SCGPT_QKV_NAMES,
    build_tiny_scgpt,
    differing_files,
    edit_json,
    tiny_counts,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and a second thread's spin-waits make a busy CPU crawl."""
    with torch_threads(1):
        yield


# ---------------------------------------------------------------------------------------------------------
# loading


@pytest.mark.parametrize("qkv_names", list(SCGPT_QKV_NAMES))
def test_load_tiny_model_under_each_qkv_naming(tmp_path, qkv_names):
    model = load_model(build_tiny_scgpt(tmp_path / "m", qkv_names=qkv_names))
    assert (model.family, model.n_layers, model.n_heads, model.version) == ("scgpt", 2, 2, "scGPT")
    assert (model.tokenizer.pad_id, model.tokenizer.cls_id) == (30, 31)  # specials follow the genes
    assert model.tokenizer.max_genes == 1199  # max_seq_len counts <cls>


def test_vocabulary_size_mismatch_names_both_files_and_numbers(tmp_path):
    folder = build_tiny_scgpt(tmp_path / "m")
    edit_json(folder / "vocab.json", GENE30=None)
    with pytest.raises(ModelLoadError) as raised:
        load_model(folder)
    message = str(raised.value)
    assert "vocab.json" in message and "best_model.pt" in message
    assert "expected 33 tokens, found 32" in message


def test_args_without_nheads_is_refused(tmp_path):
    folder = build_tiny_scgpt(tmp_path / "m")
    edit_json(folder / "args.json", nheads=None)
    with pytest.raises(ModelLoadError, match=r"args\.json: no 'nheads' key"):
        load_model(folder)


def test_pickled_object_instead_of_a_state_dict_is_refused_without_running_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = build_tiny_scgpt(tmp_path / "m")
    torch.save({"encoder.embedding.weight": Payload()}, folder / "best_model.pt")
    with pytest.raises(ModelLoadError) as raised:
        load_model(folder)
    message = str(raised.value)
    assert "best_model.pt" in message and "weights_only=True" in message
    assert "Nothing from the file was executed" in message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ("drop", r"transformer_encoder\.layers\.1\.norm2\.bias is missing"),
        ("reshape", r"linear2\.weight has shape \(16, 31\), expected \(16, 32\)"),
        ("both-names", r"both .*Wqkv\.weight and .*in_proj_weight, two names of the one tensor"),
        ("wrapped", "'model_state_dict' is not a named tensor"),
    ],
)
def test_bad_weights_name_the_key(tmp_path, edit, match):
    folder = build_tiny_scgpt(tmp_path / "m")
    path = folder / "best_model.pt"
    state = torch.load(path, weights_only=True)
    if edit == "drop":
        del state["transformer_encoder.layers.1.norm2.bias"]
    elif edit == "reshape":
        state["transformer_encoder.layers.0.linear2.weight"] = torch.zeros(16, 31)
    elif edit == "both-names":
        state["transformer_encoder.layers.0.self_attn.in_proj_weight"] = torch.zeros(48, 16)
    else:
        state = {"model_state_dict": state, "epoch": 3}
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=match):
        load_model(folder)


def test_unsupported_value_encoding_is_refused(tmp_path):
    folder = build_tiny_scgpt(tmp_path / "m")
    edit_json(folder / "args.json", input_emb_style="category")
    with pytest.raises(ModelLoadError, match="input_emb_style is 'category'"):
        load_model(folder)


# ---------------------------------------------------------------------------------------------------------
# binning and tokenisation


def test_bins_of_a_hand_made_cell():
    # non-zero values 1 2 4 8 16 100; n_bins 4 -> 3 edges at quantiles 0, 0.5, 1 = 1, 6, 100.
    # 1 sits on edge 0 only -> bin 1; 2, 4 in [1, 6) -> 1; 8, 16 in [6, 100) -> 2; 100 on the last edge -> 3
    values = np.array([0, 1, 2, 4, 8, 16, 100, 0], dtype=float)
    bins = bin_values(values, n_bins=4, rng=np.random.default_rng(0))
    assert bins.tolist() == [0, 1, 1, 1, 2, 2, 3, 0]
    # n_bins 6 over 10 20 30 40 50: edges are the values themselves -> bins 1..5
    spread = np.array([30.0, 10, 0, 50, 20, 40])
    assert bin_values(spread, 6, np.random.default_rng(0)).tolist() == [3, 1, 0, 5, 2, 4]
    assert bin_values(np.zeros(3), 51, np.random.default_rng(0)).tolist() == [0, 0, 0]


def test_tied_values_get_seeded_random_bins():
    # 1 1 1 5 with n_bins 5: edges 1, 1, 1, 5, so each 1 may take bin 1, 2 or 3; 5 sits on the last edge only
    values = np.array([1.0, 1.0, 1.0, 5.0])
    draws = [bin_values(values, 5, np.random.default_rng(seed)) for seed in range(40)]
    assert all(set(d[:3]) <= {1, 2, 3} and d[3] == 4 for d in draws)
    assert {b for d in draws for b in d[:3]} == {1, 2, 3}
    many_ties = np.r_[np.ones(40), np.arange(2.0, 12.0)]
    same = [bin_values(many_ties, 51, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(*same)
    other = bin_values(many_ties, 51, np.random.default_rng(8))
    assert not np.array_equal(same[0], other)
    np.testing.assert_array_equal(same[0][40:], other[40:])  # untied values never move


def hand_made_tokenizer(max_seq_len: int = 1200) -> BinnedValueTokenizer:
    vocab = {"A": 0, "B": 1, "C": 2, "D": 3, "E": 4, "<pad>": 5, "<cls>": 6}
    return BinnedValueTokenizer(vocab, n_bins=4, max_seq_len=max_seq_len, pad_value=-2)


def test_tokens_of_a_hand_made_cell_from_counts_or_normalised_values():
    tokenizer = hand_made_tokenizer()
    counts = np.array([[8, 0, 2, 2, 2, 50]], dtype=np.float32)  # X is unknown to the vocabulary
    adata = AnnData(X=sp.csr_matrix(counts), var=pd.DataFrame(index=list("ABCDEX")))
    [cell] = tokenizer.tokenize(adata, seed=3)
    # non-zero known: A 8, C 2, D 2, E 2 -> edges 2, 2, 8: the 2s take bin 1 or 2 (tie), 8 -> bin 3
    assert cell.ids.tolist() == [6, 0, 2, 3, 4] and cell.values[0] == 0 and cell.values[1] == 3
    assert set(cell.values[2:].tolist()) <= {1.0, 2.0}
    normalised = AnnData(X=np.log1p(counts / counts.sum() * 1e4), var=adata.var)
    [same] = tokenizer.tokenize(normalised, seed=3)
    np.testing.assert_array_equal(same.ids, cell.ids)
    np.testing.assert_array_equal(same.values, cell.values)
    [with_zeros] = tokenizer.tokenize(adata, seed=3, include_zero_genes=True, cls_value=-5)
    assert with_zeros.ids.tolist() == [6, 0, 1, 2, 3, 4] and with_zeros.values[:3].tolist() == [-5, 3, 0]
    ids, values, attend = tokenizer.pad([cell, with_zeros])
    assert ids[0, -1] == 5 and values[0, -1] == -2 and attend.sum(axis=1).tolist() == [5, 6]


def test_long_cells_keep_cls_and_a_seeded_subset_binned_before_cutting():
    adata = tiny_counts(n_cells=1, n_genes=30, extra_genes=0, seed=4)
    vocab = {f"GENE{i}": i - 1 for i in range(1, 31)} | {"<pad>": 30, "<cls>": 31}
    full = BinnedValueTokenizer(vocab, 51, 1200, -2).tokenize(adata, seed=5)[0]
    cut = [BinnedValueTokenizer(vocab, 51, 6, -2).tokenize(adata, seed=seed)[0] for seed in (5, 5, 6)]
    assert len(full.ids) > 6
    assert all(len(cell.ids) == 6 and cell.ids[0] == 31 for cell in cut)
    np.testing.assert_array_equal(cut[0].ids, cut[1].ids)
    assert not np.array_equal(cut[0].ids, cut[2].ids)
    # the kept genes carry the bins they had in the whole cell (same seed: same tie-breaking draws)
    bin_of = dict(zip(full.ids.tolist(), full.values.tolist()))
    assert [bin_of[token] for token in cut[0].ids[1:].tolist()] == cut[0].values[1:].tolist()


def test_negative_or_non_finite_values_are_refused(tmp_path):
    model = load_model(build_tiny_scgpt(tmp_path / "m", n_genes=2))
    for values in ([[1.0, -2.0]], [[1.0, np.inf]]):
        adata = AnnData(X=np.array(values, dtype=np.float32), var=pd.DataFrame(index=["GENE1", "GENE2"]))
        with pytest.raises(CountDataError, match="negative or non-finite values"):
            model.attention_scores(adata, ["GENE1"])


def test_no_gene_in_the_vocabulary_is_a_coverage_error_and_a_symbol_column_fixes_it(tmp_path):
    model = load_model(build_tiny_scgpt(tmp_path / "m"))
    adata = tiny_counts(n_cells=4)
    var = pd.DataFrame({"symbol": list(adata.var_names)}, index=adata.var["ensembl_id"])
    by_id = AnnData(X=adata.X, var=var)
    assert model.coverage(by_id).fraction == 0.0
    with pytest.raises(GeneCoverageError, match=r"only 0 of 33 genes \(0\.0%\) map to a token .*vocab\.json"):
        model.attention_scores(by_id, list(by_id.var_names[:3]))
    assert model.coverage(by_id, symbol_column="symbol").n_mapped == 30
    genes = list(by_id.var_names[:3])
    expected = model.attention_scores(adata, list(adata.var_names[:3]))
    fixed = model.attention_scores(by_id, genes, symbol_column="symbol")
    np.testing.assert_array_equal(fixed.sum, expected.sum)
    with pytest.raises(GeneCoverageError, match=r"30 of 33 genes \(90\.9%\)"):
        model.attention_scores(adata, ["GENE1"], min_coverage=0.95)


# ---------------------------------------------------------------------------------------------------------
# parity with a direct reference: torch.nn.MultiheadAttention(need_weights=True), one cell at a time


def reference_layers(state: dict, qkv_names: str, n_layers: int = 2) -> list[torch.nn.Module]:
    """torch's own post-norm layers, loaded from the checkpoint's tensors (flash names renamed by hand)."""
    layers = []
    for i in range(n_layers):
        prefix = f"transformer_encoder.layers.{i}."
        qkv = prefix + SCGPT_QKV_NAMES[qkv_names]
        out_proj = prefix + SCGPT_OUT_PROJ_NAMES[qkv_names]
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
        own = {key: state[prefix + key] for key in layer.state_dict() if "self_attn." not in key}
        own["self_attn.in_proj_weight"] = state[qkv.format("weight")]
        own["self_attn.in_proj_bias"] = state[qkv.format("bias")]
        own["self_attn.out_proj.weight"] = state[out_proj.format("weight")]
        own["self_attn.out_proj.bias"] = state[out_proj.format("bias")]
        layer.load_state_dict(own)
        layers.append(layer)
    return layers


def reference_embedding(state: dict, ids: list[int], values: list[float]) -> torch.Tensor:
    """scGPT's input embedding written out: LayerNorm(embedding) + LayerNorm(W2 relu(W1 min(v, 512))), then
    BatchNorm when the checkpoint has one."""
    ids_t, values_t = torch.tensor(ids), torch.tensor(values, dtype=torch.float32).clamp(max=512)[:, None]
    genes = F.layer_norm(state["encoder.embedding.weight"][ids_t], (16,),
                         state["encoder.enc_norm.weight"], state["encoder.enc_norm.bias"])  # fmt: skip
    value = {k.removeprefix("value_encoder."): v for k, v in state.items() if k.startswith("value_encoder.")}
    hidden = torch.relu(F.linear(values_t, value["linear1.weight"], value["linear1.bias"]))
    hidden = F.linear(hidden, value["linear2.weight"], value["linear2.bias"])
    hidden = F.layer_norm(hidden, (16,), value["norm.weight"], value["norm.bias"])
    total = genes + hidden
    if "bn.weight" in state:  # over the width, with the running statistics (eval mode)
        total = F.batch_norm(total, state["bn.running_mean"], state["bn.running_var"], state["bn.weight"],
                             state["bn.bias"], training=False, eps=BATCH_NORM_EPS)  # fmt: skip
    return total[None]


def reference_scores(folder, model, adata, genes, layers, seed, qkv_names):
    state = torch.load(folder / "best_model.pt", weights_only=True)
    vocab = json.loads((folder / "vocab.json").read_text())
    torch_layers = reference_layers(state, qkv_names)
    slot = {vocab[g]: k for k, g in enumerate(genes) if g in vocab}
    total = np.zeros((len(layers), 2, len(genes), len(genes)))
    count = np.zeros((len(genes), len(genes)), dtype=np.int64)
    for cell in model.tokenizer.tokenize(adata, seed=seed):
        ids, values = cell.ids.tolist(), cell.values.tolist()
        hidden = reference_embedding(state, ids, values)
        attentions = []
        with torch.no_grad():
            for layer in torch_layers:
                _, weights = layer.self_attn(
                    hidden, hidden, hidden, need_weights=True, average_attn_weights=False
                )
                attentions.append(weights[0].double().numpy())
                hidden = layer(hidden)
        kept = [(i, slot[t]) for i, t in enumerate(ids) if i > 0 and t in slot]  # position 0 is <cls>
        positions, slots = (np.array([pair[k] for pair in kept], dtype=np.int64) for k in (0, 1))
        np.add.at(count, (slots[:, None], slots[None, :]), 1)
        for row, index in enumerate(layers):
            block = attentions[index][:, positions[:, None], positions[None, :]]  # (H, K, K)
            np.add.at(total[row], (slice(None), slots[:, None], slots[None, :]), block)
    return total, count


SUBSET = ["GENE3", "GENE1", "NOVEL0", "GENE20", "GENE7", "GENE12", "GENE29"]
CASES = {
    # name: (max_seq_len, genes (None: all var names), layers, batch_size, batch_norm, specials)
    "all-genes": (1200, None, None, 5, False, ("<pad>", "<cls>", "<eoc>")),
    "cut-to-8-subset-layer-1": (8, SUBSET, [1], 4, False, ("<pad>", "<cls>", "<eoc>")),
    "batchnorm-no-pad-token": (1200, SUBSET, None, 3, True, ("<cls>",)),
}


@pytest.mark.parametrize("qkv_names", list(SCGPT_QKV_NAMES))
@pytest.mark.parametrize("case", list(CASES))
def test_engine_matches_direct_reference(tmp_path, case, qkv_names):
    max_seq_len, genes, layers, batch_size, batch_norm, specials = CASES[case]
    folder = build_tiny_scgpt(
        tmp_path / "m", qkv_names=qkv_names, batch_norm=batch_norm, max_seq_len=max_seq_len, specials=specials
    )
    adata = tiny_counts(n_cells=12)
    genes = list(adata.var_names) if genes is None else genes
    model = load_model(folder)
    seed = 11

    cells = model.tokenizer.tokenize(adata, seed=seed)
    lengths = [len(cell.ids) for cell in cells]
    assert all(cell.ids[0] == model.tokenizer.cls_id for cell in cells)
    if max_seq_len < 30:
        assert max(lengths) == max_seq_len, "no cell was cut: the length limit would go untested"
    else:
        batches = plan_batches(lengths, batch_size)
        assert any(len({lengths[i] for i in batch}) > 1 for batch in batches), "padding would go untested"

    calls = []
    scores = model.attention_scores(
        adata, genes, layers=layers, batch_size=batch_size, seed=seed, progress=lambda *a: calls.append(a)
    )
    expected_layers = [0, 1] if layers is None else layers
    total, count = reference_scores(folder, model, adata, genes, expected_layers, seed, qkv_names)

    assert type(scores) is AttentionScores and scores.provenance["seed"] == seed  # stores keep exact types
    assert scores.genes == tuple(genes) and scores.layers == tuple(expected_layers) and scores.n_cells == 12
    np.testing.assert_array_equal(scores.count, count)
    np.testing.assert_allclose(scores.sum, total, rtol=0, atol=1e-5)
    reference_mean = AttentionScores(tuple(genes), tuple(expected_layers), total, count, 12).mean()
    np.testing.assert_allclose(scores.mean(), reference_mean, rtol=0, atol=1e-6, equal_nan=True)
    assert np.isfinite(scores.mean()).sum() > 0
    assert calls[-1][:2] == (12, 12)
    if "NOVEL0" in genes:
        row = genes.index("NOVEL0")
        assert scores.count[row].sum() == 0 and scores.count[:, row].sum() == 0


def test_seed_changes_tie_breaking_and_is_recorded(tmp_path):
    model = load_model(build_tiny_scgpt(tmp_path / "m"))
    adata = tiny_counts(n_cells=6)
    genes = list(adata.var_names[:10])
    first, again, other = (model.attention_scores(adata, genes, seed=seed) for seed in (1, 1, 2))
    np.testing.assert_array_equal(first.sum, again.sum)
    np.testing.assert_array_equal(first.count, other.count)  # the same genes, differently binned ties
    assert not np.allclose(first.sum, other.sum)
    assert (first.provenance["seed"], other.provenance["seed"]) == (1, 2)
    assert first.provenance["family"] == "scgpt" and first.provenance["n_bins"] == 51


def test_restricted_context_bins_over_the_requested_genes_only(tmp_path):
    model = load_model(build_tiny_scgpt(tmp_path / "m"))
    adata = tiny_counts(n_cells=6)
    genes = ["GENE2", "GENE4", "GENE8", "NOVEL1"]
    restricted = model.attention_scores(adata, genes, restrict_context=True)
    alone = model.attention_scores(adata[:, genes].copy(), genes)
    np.testing.assert_array_equal(restricted.count, alone.count)
    np.testing.assert_allclose(restricted.sum, alone.sum, rtol=0, atol=1e-12)
    assert restricted.provenance["restrict_context"] is True


# ---------------------------------------------------------------------------------------------------------
# tiny pretraining


def programme_expression(n_cells: int, n_genes: int, seed: int) -> AnnData:
    """Cells in four states, each switching on its own gene programme: a gene's bin is learnable."""
    rng = np.random.default_rng(seed)
    states = rng.integers(0, 4, n_cells)
    programme = rng.lognormal(0.0, 1.5, (4, n_genes))
    rates = programme[states] / programme[states].sum(axis=1, keepdims=True) * 600
    var = pd.DataFrame(index=[f"SYN{i}" for i in range(1, n_genes + 1)])
    return AnnData(X=sp.csr_matrix(rng.poisson(rates).astype(np.float32)), var=var)


def test_tiny_pretraining_writes_a_released_layout_and_learns(tmp_path):
    adatas = [programme_expression(200, 60, seed=1), programme_expression(100, 60, seed=2)]
    spec = TinyScGPTSpec(n_layers=2, n_heads=2, d_model=32, d_hid=64, max_steps=120, num_threads=1)
    messages: list[str] = []
    folder = train_tiny_scgpt(adatas, tmp_path / "tiny", spec=spec, log=messages.append)

    assert folder == tmp_path / "tiny" and [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no staging left
    written = sorted(p.name for p in folder.iterdir())
    assert written == ["args.json", "best_model.pt", "pretraining.json", "vocab.json"]
    record = json.loads((folder / "pretraining.json").read_text())
    assert record["steps"] == 120 and record["final_loss"] < 0.5 * record["initial_loss"]
    assert "initial" in messages[0] and "final" in messages[-1]
    args = json.loads((folder / "args.json").read_text())
    shape = (args["embsize"], args["nheads"], args["nlayers"], args["n_bins"], args["pad_value"])
    assert shape == (32, 2, 2, 51, -2)
    vocab = json.loads((folder / "vocab.json").read_text())
    assert len(vocab) == 63 and [vocab[s] for s in ("<pad>", "<cls>", "<eoc>")] == [60, 61, 62]
    state = torch.load(folder / "best_model.pt", weights_only=True)
    assert "transformer_encoder.layers.1.self_attn.Wqkv.weight" in state
    assert not any("in_proj" in key for key in state) and any(key.startswith("decoder.") for key in state)

    model = load_model(folder)
    assert (model.family, model.n_layers, model.n_heads) == ("scgpt", 2, 2)
    assert model.coverage(adatas[0]).fraction == 1.0
    scores = model.attention_scores(adatas[0][:20], ["SYN1", "SYN2", "SYN3"])
    assert scores.sum.shape == (2, 2, 3, 3) and scores.n_cells == 20


def test_tiny_pretraining_twice_writes_identical_bytes(tmp_path):
    """Same spec and data, two fresh folders: every file is byte-identical, pretraining.json included (it
    holds no wall-clock time), so two machines building the demo register the same fingerprint."""
    adatas = [programme_expression(200, 60, seed=1), programme_expression(100, 60, seed=2)]
    spec = TinyScGPTSpec(n_layers=2, n_heads=2, d_model=32, d_hid=64, max_steps=30)
    first = train_tiny_scgpt(adatas, tmp_path / "first", spec=spec, log=lambda _: None)
    second = train_tiny_scgpt(adatas, tmp_path / "second", spec=spec, log=lambda _: None)
    assert len(list(first.iterdir())) == 4 and differing_files(first, second) == []
    assert "seconds" not in json.loads((first / "pretraining.json").read_text())
    assert fingerprint_folder(first) == fingerprint_folder(second)


def test_tiny_pretraining_that_reaches_its_time_cap_is_refused_and_writes_nothing(tmp_path):
    adatas = [programme_expression(50, 20, seed=1)]
    spec = TinyScGPTSpec(n_layers=1, n_heads=2, d_model=16, d_hid=16, max_steps=50, max_seconds=1e-9)
    with pytest.raises(TrainingTimeCapError, match=r"max_seconds=1e-09 after 0 of 50 steps.*Fix: raise max_"):
        train_tiny_scgpt(adatas, tmp_path / "tiny", spec=spec, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_a_vocabulary_without_specials_is_completed_as_scgpts_loader_does(tmp_path):
    """Official scGPT appends <pad>, <cls>, <eoc> (in that order) when vocab.json lacks them; the embedding
    rows are there, so the model is the same."""
    folder = build_tiny_scgpt(tmp_path / "full")
    adata = tiny_counts(n_cells=6)
    genes = list(adata.var_names[:8])
    expected = load_model(folder).attention_scores(adata, genes, seed=0)
    vocab = json.loads((folder / "vocab.json").read_text())
    (folder / "vocab.json").write_text(json.dumps({k: v for k, v in vocab.items() if not k.startswith("<")}))
    with pytest.warns(UserWarning, match=r"lacks <pad>, <cls>, <eoc>; appended with ids 30, 31, 32"):
        model = load_model(folder)
    np.testing.assert_array_equal(model.attention_scores(adata, genes, seed=0).sum, expected.sum)
    (folder / "vocab.json").write_text(json.dumps({k: v for k, v in vocab.items() if k not in ("<cls>", "<eoc>", "GENE1")}))
    with pytest.raises(ModelLoadError, match="expected 33 tokens, found 30"):  # a gene row is missing too
        load_model(folder)
