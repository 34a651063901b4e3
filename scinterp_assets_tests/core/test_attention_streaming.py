"""The streaming engine: exact sums on hand-set tensors, and parity with a direct per-cell reference."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertForMaskedLM

from scinterp_assets.core.attention.edges import attention_edge_table
from scinterp_assets.core.attention.scores import AttentionScores
from scinterp_assets.core.attention.streaming import (
    AttentionAccumulator,
    pad_sequences,
    plan_batches,
    torch_threads,
)
from scinterp_assets.core.models import load_model
from scinterp_assets_tests.core.tiny_models import (
    assert_within,
    build_tiny_geneformer,
    build_tiny_scgpt,
    float32_sum_tolerance,
    tiny_counts,
)

# ---------------------------------------------------------------------------------------------------------
# accumulator, batching, scores container


def test_accumulator_adds_selected_pairs_exactly():
    genes = ("g0", "g1", "g2")
    accumulator = AttentionAccumulator(genes, layers=(1,), n_heads=2, device="cpu")
    probs = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).reshape(2, 2, 3, 3) / 100
    # cell 0: g0 at position 0, g2 at position 1, position 2 skipped; cell 1: g2, g1, g0
    slots = torch.tensor([[0, 2, -1], [2, 1, 0]])
    selection = accumulator.add_cells(slots)
    accumulator.add_layer(1, probs, selection)
    scores = accumulator.result()

    expected = np.zeros((1, 2, 3, 3))
    for cell, row in enumerate(slots.tolist()):
        for i, source in enumerate(row):
            for j, target in enumerate(row):
                if source >= 0 and target >= 0:
                    expected[0, :, source, target] += probs[cell, :, i, j].numpy()
    np.testing.assert_allclose(scores.sum, expected, rtol=0, atol=1e-12)
    # hand-checkable: g0 -> g2 is (cell 0: query 0, key 1) + (cell 1: query 2, key 0)
    assert scores.sum[0, 0, 0, 2] == pytest.approx(0.01 + 0.24)
    np.testing.assert_array_equal(scores.count, [[2, 1, 2], [1, 1, 1], [2, 1, 2]])
    assert scores.n_cells == 2 and scores.layers == (1,) and scores.genes == genes


def test_accumulator_refuses_a_gene_twice_in_one_cell():
    accumulator = AttentionAccumulator(("a", "b"), layers=(0,), n_heads=1, device="cpu")
    with pytest.raises(ValueError, match="same accumulator gene"):
        accumulator.add_cells(torch.tensor([[0, 1, 0]]))


def test_plan_batches_longest_first_and_stable():
    batches = plan_batches([3, 7, 3, 9, 1], batch_size=2)
    assert [b.tolist() for b in batches] == [[3, 1], [0, 2], [4]]
    with pytest.raises(ValueError):
        plan_batches([1], batch_size=0)


@pytest.mark.parametrize("seed", range(5))
def test_a_token_budget_bounds_every_batch_and_covers_every_cell_once(seed):
    lengths = np.random.default_rng(seed).integers(1, 60, size=40)
    budget = 3_000
    batches = plan_batches(lengths, batch_size=8, token_budget=budget)
    assert sorted(np.concatenate(batches).tolist()) == list(range(40))
    for batch in batches:
        padded = lengths[batch].max()
        assert len(batch) <= 8 and (len(batch) * padded**2 <= budget or len(batch) == 1)
        assert lengths[batch[0]] == padded  # longest first within the batch, as without a budget
    assert plan_batches([3, 7, 3, 9, 1], batch_size=2, token_budget=10**6)[0].tolist() == [3, 1]  # not binding
    assert [b.tolist() for b in plan_batches([10, 10, 5, 5, 5, 5], batch_size=8, token_budget=200)] == [
        [0, 1], [2, 3, 4, 5]]
    with pytest.raises(ValueError, match="token_budget"):
        plan_batches([1], batch_size=2, token_budget=0)


def test_a_binding_token_budget_changes_batches_not_results(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "model")
    adata = tiny_counts(n_cells=12)
    genes = ["GENE4", "GENE8", "GENE15", "GENE16", "GENE23"]
    model = load_model(folder)
    whole = model.attention_scores(adata, genes, batch_size=12)
    one_by_one = model.attention_scores(adata, genes, batch_size=12, token_budget=1)  # every cell alone
    np.testing.assert_array_equal(one_by_one.count, whole.count)
    # other batch shapes round the float32 forward pass differently: within its error bound, the longest
    # reduction being over the tokens (at most the positions) or the feed-forward width
    config = model.bert.config
    reduction = max(config.max_position_embeddings, config.intermediate_size)
    assert_within(one_by_one.sum, whole.sum, float32_sum_tolerance(whole.count, model.n_layers, reduction))


@pytest.mark.parametrize("family", ["geneformer", "scgpt"])
@pytest.mark.parametrize("sources", [None, ["GENE2", "GENE9", "GENE15"]])
def test_chunked_rows_give_the_same_sums_as_whole_cells(tmp_path, monkeypatch, family, sources):
    """Peak memory is bounded by accumulating a chunk of rows at a time (CHUNK_ENTRIES): chunks of a few rows
    give the sums whole cells give, bit for bit for attention (each pair is added once per cell, in cell order),
    within float64 rounding for the value-weighted cosines (a product of a few rows may round differently)."""
    from scinterp_assets.core.attention import streaming

    build = build_tiny_geneformer if family == "geneformer" else build_tiny_scgpt
    model = load_model(build(tmp_path / "model"))
    adata = tiny_counts(n_cells=8)
    genes = [f"GENE{i}" for i in range(1, 21)]
    whole = model.attention_scores(adata, genes, sources=sources, value_weighted=True)
    monkeypatch.setattr(streaming, "CHUNK_ENTRIES", 7)  # one to three rows of a cell's ~5-20 genes per chunk
    chunked = model.attention_scores(adata, genes, sources=sources, value_weighted=True)
    for full, parts in zip(whole, chunked):
        np.testing.assert_array_equal(parts.count, full.count)
        np.testing.assert_array_equal(parts.sum, full.sum)
    np.testing.assert_array_equal(chunked[0].head_mean_sum, whole[0].head_mean_sum)
    np.testing.assert_allclose(chunked[1].head_mean_sum, whole[1].head_mean_sum, rtol=1e-13, atol=1e-13)


def test_pad_sequences():
    ids, mask = pad_sequences([np.array([5, 6, 7]), np.array([8])], pad_id=0)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 0, 0]])
    np.testing.assert_array_equal(mask, [[True, True, True], [True, False, False]])


def test_torch_threads_restores_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _scores(n_genes=3, n_layers=1, n_heads=2):
    rng = np.random.default_rng(0)
    count = np.array([[2, 1, 0], [1, 3, 2], [0, 2, 2]], dtype=np.int64)[:n_genes, :n_genes]
    return AttentionScores(
        genes=tuple(f"g{i}" for i in range(n_genes)),
        layers=tuple(range(n_layers)),
        sum=rng.random((n_layers, n_heads, n_genes, n_genes)),
        count=count,
        n_cells=3,
    )


def test_mean_is_nan_on_diagonal_and_missing_pairs():
    scores = _scores()
    mean = scores.mean()
    assert np.isnan(mean[..., [0, 1, 2], [0, 1, 2]]).all()
    assert np.isnan(mean[..., 0, 2]).all() and np.isnan(mean[..., 2, 0]).all()
    np.testing.assert_allclose(mean[..., 1, 2], scores.sum[..., 1, 2] / 2)


def test_save_load_round_trip(tmp_path):
    scores = _scores()
    path = scores.save(tmp_path / "sub" / "scores.npz")
    loaded = AttentionScores.load(path)
    assert loaded.genes == scores.genes and loaded.layers == scores.layers and loaded.n_cells == 3
    np.testing.assert_array_equal(loaded.sum, scores.sum)
    np.testing.assert_array_equal(loaded.count, scores.count)
    assert [p.name for p in path.parent.iterdir()] == ["scores.npz"]  # no temp file left behind


def test_scores_validate_shapes():
    scores = _scores()
    with pytest.raises(ValueError, match="float64"):
        AttentionScores(scores.genes, scores.layers, scores.sum.astype(np.float32), scores.count, 3)
    with pytest.raises(ValueError, match="int64"):
        AttentionScores(scores.genes, scores.layers, scores.sum, scores.count[:2], 3)
    with pytest.raises(ValueError, match="duplicates"):
        AttentionScores(("a", "a", "b"), scores.layers, scores.sum, scores.count, 3)
    with pytest.raises(ValueError, match="n_cells"):
        AttentionScores(scores.genes, scores.layers, scores.sum, scores.count, 1)


# ---------------------------------------------------------------------------------------------------------
# parity with a direct reference: BertForMaskedLM(output_attentions=True), one cell at a time, in numpy


def reference_tokens(adata, folder, max_genes, context=None):
    """Rank-value tokens per cell, written as plainly as possible (a slow oracle)."""
    token_ids = pickle.loads((folder / "token_dictionary.pkl").read_bytes())
    medians = pickle.loads((folder / "gene_median_dictionary.pkl").read_bytes())
    counts = np.asarray(adata.X, dtype=np.float64)
    ids = list(adata.var["ensembl_id"])
    v2 = "<cls>" in token_ids
    cells = []
    for row in counts:
        total = row.sum()
        ranked = sorted(
            (-(row[j] / total * 10_000 / float(medians[ids[j]])), token_ids[ids[j]])
            for j in range(len(ids))
            if ids[j] in token_ids and row[j] > 0 and (context is None or adata.var_names[j] in context)
        )
        tokens = [token for _, token in ranked][:max_genes]
        cells.append([token_ids["<cls>"], *tokens, token_ids["<eos>"]] if v2 else tokens)
    return cells, token_ids


def reference_scores(folder, adata, genes, layers, max_genes, context=None):
    cells, token_ids = reference_tokens(adata, folder, max_genes, context)
    bert = BertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    id_of = dict(zip(adata.var_names, adata.var["ensembl_id"]))
    slot = {token_ids[id_of[g]]: k for k, g in enumerate(genes) if id_of[g] in token_ids}
    n_heads, n_genes = bert.config.num_attention_heads, len(genes)
    total = np.zeros((len(layers), n_heads, n_genes, n_genes))
    count = np.zeros((n_genes, n_genes), dtype=np.int64)
    for tokens in cells:
        if not tokens:  # a cell with no known gene never reaches the model
            continue
        with torch.no_grad():
            attentions = bert(torch.tensor([tokens]), output_attentions=True).attentions
        kept = [(i, slot[t]) for i, t in enumerate(tokens) if t in slot]
        for i, source in kept:
            for j, target in kept:
                count[source, target] += 1
                for row, layer in enumerate(layers):
                    total[row, :, source, target] += attentions[layer][0, :, i, j].double().numpy()
    return total, count


CASES = {
    # name: (version, max_position_embeddings, genes (None: all var names), layers, batch_size)
    "v1-all-genes": ("V1", 64, None, None, 5),
    "v1-truncated-subset": ("V1", 8, ["GENE3", "GENE1", "NOVEL0", "GENE20", "GENE7", "GENE12"], [1], 4),
    "v2-subset": ("V2", 64, ["GENE2", "GENE5", "NOVEL1", "GENE9", "GENE11", "GENE30"], None, 3),
    "v2-truncated": ("V2", 12, None, [0], 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_engine_matches_direct_reference(tmp_path, case):
    version, max_positions, genes, layers, batch_size = CASES[case]
    folder = build_tiny_geneformer(tmp_path / "model", version=version, max_position_embeddings=max_positions)
    adata = tiny_counts(n_cells=12)
    genes = list(adata.var_names) if genes is None else genes
    model = load_model(folder)
    max_genes = max_positions - 2 if version == "V2" else max_positions

    lengths = [len(cell) for cell in model.tokenizer.tokenize(adata)]
    batches = plan_batches(lengths, batch_size)
    mixed = any(len({lengths[i] for i in batch}) > 1 for batch in batches)
    assert mixed, "no batch mixes lengths: padding would go untested"

    calls = []
    scores = model.attention_scores(
        adata, genes, layers=layers, batch_size=batch_size, progress=lambda *args: calls.append(args)
    )
    expected_layers = list(range(model.n_layers)) if layers is None else layers
    total, count = reference_scores(folder, adata, genes, expected_layers, max_genes)

    assert scores.genes == tuple(genes) and scores.layers == tuple(expected_layers) and scores.n_cells == 12
    np.testing.assert_array_equal(scores.count, count)
    np.testing.assert_allclose(scores.sum, total, rtol=0, atol=1e-5)
    reference_mean = AttentionScores(tuple(genes), tuple(expected_layers), total, count, 12).mean()
    np.testing.assert_allclose(scores.mean(), reference_mean, rtol=0, atol=1e-6, equal_nan=True)
    assert np.isfinite(scores.mean()).sum() > 0
    assert [c[:2] for c in calls] == [(min(12, (k + 1) * batch_size), 12) for k in range(len(batches))]


def head_sum_tolerance(head_mean_sum: np.ndarray, n_heads: int) -> np.ndarray:
    """Largest difference between a head-mean sum accumulated from float32 per-cell head sums and the same
    sum formed in float64: a float32 sum of H non-negative probabilities carries a relative error of at most
    (H - 1) eps32 (Higham), so the total over cells is within (H - 1) eps32 of itself, plus float64 rounding."""
    eps32, eps64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
    return np.abs(head_mean_sum) * ((n_heads - 1) * eps32 + 64 * eps64)


def test_sources_keep_the_dense_rows_and_every_pair_of_the_head_mean():
    genes = tuple(f"g{i}" for i in range(6))
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(3, 4, 7, 7, generator=generator)
    context = torch.randn(3, 4, 7, 5, generator=generator)
    # cell 1 holds no source gene (g4, g1), cell 3 nothing at all; cell 2 is one contiguous run (a slice)
    probs = torch.cat([probs, torch.rand(1, 4, 7, 7, generator=generator)])
    context = torch.cat([context, torch.randn(1, 4, 7, 5, generator=generator)])
    slots = torch.tensor([[0, 2, -1, 5, 1, 3, 4], [2, 0, 5, -1, -1, -1, -1], [5, 4, 3, 2, 1, 0, -1],
                          [-1, -1, -1, -1, -1, -1, -1]])
    results = {}
    for name, sources in (("dense", None), ("sources", ("g4", "g1"))):  # given out of order on purpose
        accumulator = AttentionAccumulator(genes, (0,), 4, "cpu", value_weighted=True, sources=sources)
        accumulator.add_layer(0, probs, accumulator.add_cells(slots), context)
        results[name] = (accumulator.result(), accumulator.value_weighted_result())
    (dense, dense_weighted), (part, part_weighted) = results["dense"], results["sources"]

    assert part.sources == ("g1", "g4") and part.sum.shape == (1, 4, 2, 6) and dense.sources == genes
    np.testing.assert_array_equal(part.sum, dense.sum[:, :, [1, 4]])  # same adds in the same order
    np.testing.assert_array_equal(part.count, dense.count)
    assert_within(part.head_mean_sum, dense.head_mean_sum, head_sum_tolerance(dense.head_mean_sum, 4))
    assert not np.array_equal(part.head_mean_sum[:, [0, 2, 3, 5]], 0)  # rows beyond the sources are there
    np.testing.assert_array_equal(part_weighted.head_mean_sum, dense_weighted.head_mean_sum)
    np.testing.assert_array_equal(part.mean(), dense.mean()[:, :, [1, 4]])
    assert np.isnan(part.mean()[0, :, 0, 1]).all() and np.isnan(part.mean()[0, :, 1, 4]).all()  # own gene
    # independently of the accumulator: the head mean of every pair, a brute-force loop over cells and heads
    expected = np.zeros((6, 6))
    for cell, row in enumerate(slots.tolist()):
        for i, source in enumerate(row):
            for j, target in enumerate(row):
                if source >= 0 and target >= 0:
                    expected[source, target] += probs[cell, :, i, j].double().mean().item()
    assert_within(part.head_mean_sum[0], expected, head_sum_tolerance(expected, 4))
    assert part.n_cells == 4 and part.count[5, 5] == 3  # g5 in cells 0, 1 and 2
    with pytest.raises(ValueError, match="not requested: \\['g9'\\]"):
        AttentionAccumulator(genes, (0,), 4, "cpu", sources=("g1", "g9"))


def test_attention_edge_table_reads_head_max_from_the_sources_only():
    genes = tuple(f"g{i}" for i in range(5))
    rng = np.random.default_rng(1)
    total = rng.random((2, 3, 5, 5))
    count = np.full((5, 5), 4, dtype=np.int64)
    dense = AttentionScores(genes, (0, 1), total, count, 4)
    part = AttentionScores(genes, (0, 1), total[:, :, [0, 3]].copy(), count, 4, sources=("g0", "g3"),
                           head_mean_sum=total.mean(axis=1))
    dense_edges, part_edges = attention_edge_table(dense), attention_edge_table(part)
    key = ["source", "target", "layer", "aggregation"]
    head_mean = [table[table["aggregation"] == "head_mean"].sort_values(key).reset_index(drop=True)
                 for table in (dense_edges, part_edges)]
    pd.testing.assert_frame_equal(head_mean[0], head_mean[1])
    assert len(head_mean[1]) == 2 * 5 * 4  # every ordered pair of every layer
    head_max = part_edges[part_edges["aggregation"] == "head_max"]
    assert set(head_max["source"]) == {"g0", "g3"} and len(head_max) == 2 * 2 * 4
    expected = dense_edges[(dense_edges["aggregation"] == "head_max") & dense_edges["source"].isin(["g0", "g3"])]
    pd.testing.assert_frame_equal(head_max.sort_values(key).reset_index(drop=True),
                                  expected.sort_values(key).reset_index(drop=True))
    # and independently: the max over heads of sum / count, the mean over heads of the same
    first = head_max[(head_max["layer"] == 0) & (head_max["source"] == "g3") & (head_max["target"] == "g1")]
    assert first["score"].item() == pytest.approx((total[0, :, 3, 1] / 4).max(), rel=1e-15)
    mean_edge = head_mean[1][(head_mean[1]["layer"] == 1) & (head_mean[1]["source"] == "g2")
                             & (head_mean[1]["target"] == "g4")]
    assert mean_edge["score"].item() == pytest.approx((total[1, :, 2, 4] / 4).mean(), rel=1e-14)
    with pytest.raises(ValueError, match="required"):
        AttentionScores(genes, (0, 1), part.sum, count, 4, sources=("g0", "g3"))
    with pytest.raises(ValueError, match="order of `genes`"):
        AttentionScores(genes, (0, 1), part.sum, count, 4, sources=("g3", "g0"), head_mean_sum=part.head_mean_sum)


def test_stored_scores_are_mapped_not_read_and_old_files_still_load(tmp_path):
    scores = _scores()
    part = AttentionScores(scores.genes, scores.layers, scores.sum[:, :, [1]].copy(), scores.count, 3,
                           sources=("g1",), head_mean_sum=scores.head_mean_sum)
    loaded = AttentionScores.load(part.save(tmp_path / "part.npz"))
    assert isinstance(loaded.sum, np.memmap) and isinstance(loaded.head_mean_sum, np.memmap)
    assert loaded.sources == ("g1",) and not loaded.sum.flags.writeable
    np.testing.assert_array_equal(loaded.sum, part.sum)
    np.testing.assert_array_equal(loaded.head_mean_sum, part.head_mean_sum)
    np.savez(tmp_path / "old.npz", genes=np.asarray(scores.genes), layers=np.asarray(scores.layers),
             sum=scores.sum, count=scores.count, n_cells=np.int64(3))  # the layout before sources
    old = AttentionScores.load(tmp_path / "old.npz")
    assert old.sources == scores.genes
    np.testing.assert_array_equal(old.head_mean_sum, scores.sum.mean(axis=1))
    np.savez_compressed(tmp_path / "packed.npz", genes=np.asarray(scores.genes), layers=np.asarray(scores.layers),
                        sum=scores.sum, count=scores.count, n_cells=np.int64(3))
    with pytest.raises(ValueError, match="compressed"):
        AttentionScores.load(tmp_path / "packed.npz")


@pytest.mark.parametrize("family", ["geneformer", "scgpt"])
def test_model_sources_match_the_dense_rows(tmp_path, family):
    folder = (build_tiny_geneformer(tmp_path / "m", version="V2") if family == "geneformer"
              else build_tiny_scgpt(tmp_path / "m"))
    model = load_model(folder)
    adata = tiny_counts(n_cells=10)
    genes = ["GENE2", "GENE5", "NOVEL1", "GENE9", "GENE11", "GENE30", "GENE1"]
    dense, dense_weighted = model.attention_scores(adata, genes, batch_size=3, seed=2, value_weighted=True)
    part, part_weighted = model.attention_scores(adata, genes, batch_size=3, seed=2, value_weighted=True,
                                                 sources=["GENE9", "GENE2", "NOVEL1"])
    rows = [genes.index(gene) for gene in part.sources]
    assert part.sources == ("GENE2", "NOVEL1", "GENE9")
    np.testing.assert_array_equal(part.sum, dense.sum[:, :, rows])
    np.testing.assert_array_equal(part.count, dense.count)
    assert_within(part.head_mean_sum, dense.head_mean_sum, head_sum_tolerance(dense.head_mean_sum, model.n_heads))
    np.testing.assert_array_equal(part_weighted.head_mean_sum, dense_weighted.head_mean_sum)


def test_restricted_context_matches_reference(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "model")
    adata = tiny_counts(n_cells=10)
    genes = ["GENE4", "GENE8", "GENE15", "GENE16", "GENE23", "NOVEL2"]
    scores = load_model(folder).attention_scores(adata, genes, batch_size=4, restrict_context=True)
    total, count = reference_scores(folder, adata, genes, [0, 1], 64, context=set(genes))
    np.testing.assert_array_equal(scores.count, count)
    np.testing.assert_allclose(scores.sum, total, rtol=0, atol=1e-5)


def test_symbols_and_pytorch_bin_give_identical_scores(tmp_path):
    adata = tiny_counts(n_cells=8)
    by_symbol = tiny_counts(n_cells=8, ensembl_column=False)
    genes = ["GENE1", "GENE2", "GENE6", "GENE10", "NOVEL0"]
    safetensors = load_model(build_tiny_geneformer(tmp_path / "st")).attention_scores(adata, genes)
    pickled_model = load_model(build_tiny_geneformer(tmp_path / "bin", safetensors=False))
    pickled = pickled_model.attention_scores(by_symbol, genes)
    np.testing.assert_array_equal(safetensors.count, pickled.count)
    np.testing.assert_allclose(safetensors.sum, pickled.sum, rtol=0, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tmp_path):
    model = load_model(build_tiny_geneformer(tmp_path / "model"))
    adata = tiny_counts(n_cells=12)
    genes = list(adata.var_names)
    on_gpu = model.attention_scores(adata, genes, batch_size=5, device="cuda")
    on_cpu = model.attention_scores(adata, genes, batch_size=5, device="cpu")
    np.testing.assert_array_equal(on_gpu.count, on_cpu.count)
    np.testing.assert_allclose(on_gpu.sum, on_cpu.sum, rtol=0, atol=1e-4)


def test_forward_stops_at_last_requested_layer_and_hooks_never_survive(tmp_path):
    model = load_model(build_tiny_geneformer(tmp_path / "model"))
    adata = tiny_counts(n_cells=6)
    attention_modules = [layer.attention.self for layer in model.bert.bert.encoder.layer]
    hooks_before = [len(module._forward_hooks) for module in attention_modules]
    calls = []
    watcher = model.bert.bert.encoder.layer[1].register_forward_hook(lambda *_: calls.append(1))
    try:
        model.attention_scores(adata, ["GENE1", "GENE2"], layers=[0])
        assert calls == []  # layer 1 never ran
        model.attention_scores(adata, ["GENE1", "GENE2"], layers=[1], batch_size=6)
        assert calls == [1]
    finally:
        watcher.remove()

    def fail(*_):
        raise RuntimeError("stop")

    # fails inside layer 0, after its self-attention (and the capture hook on it) has run
    failing = model.bert.bert.encoder.layer[0].attention.output.register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="stop"):
            model.attention_scores(adata, ["GENE1", "GENE2"], batch_size=2)
    finally:
        failing.remove()
    with pytest.raises(RuntimeError, match="stop"):
        model.attention_scores(adata, ["GENE1", "GENE2"], batch_size=2, progress=fail)
    assert [len(module._forward_hooks) for module in attention_modules] == hooks_before


def test_bytes_read_counts_each_served_layer_once(tmp_path):
    scores = _scores(n_layers=3)
    part = AttentionScores.load(AttentionScores(
        scores.genes, scores.layers, scores.sum[:, :, [1]].copy(), scores.count, 3, sources=("g1",),
        head_mean_sum=scores.head_mean_sum).save(tmp_path / "part.npz"))
    one_layer = part.head_mean_sum[0].nbytes
    assert part.bytes_read == part.count.nbytes  # the counts only: nothing served yet
    part.head_mean(scores.layers[1])
    part.head_mean(scores.layers[1])
    assert part.bytes_read == part.count.nbytes + one_layer
    part.mean()  # every layer's per-head rows
    assert part.bytes_read == part.count.nbytes + one_layer + part.sum.nbytes
    assert part.nbytes == part.sum.nbytes + part.head_mean_sum.nbytes + part.count.nbytes
