"""Output readouts of interventions (fidelity, masked-gene prediction, in-silico perturbation) for both
families, against the same quantities computed one cell at a time, unbatched, from the models' own outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scinterp_assets.core.models import ModelLoadError, load_model
from scinterp_assets.core.models.interventions import intervene, uniform_attention, zero_heads, zero_mlp
from scinterp_assets.core.models.readouts import (
    Batching,
    entropy_sums,
    fidelity,
    head_entropy,
    in_silico_response,
    masked_positions,
    masked_prediction,
    reextracted_attention,
)
from scinterp_assets_tests.core.tiny_models import (
    build_tiny_geneformer,
    build_tiny_scgpt,
    load_tiny_models,
    assert_within,
    float32_sum_tolerance,
    tiny_counts,
)

FAMILIES = ("geneformer", "scgpt")
BATCHING = Batching(batch_size=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_tiny_models(tmp_path_factory.mktemp("readouts"))


def one_cell_output(model, cell) -> tuple[np.ndarray, np.ndarray]:
    """(last-layer states (n, d), outputs (n, k)) of one cell run alone, without padding, through the
    model's own modules (Geneformer: BertForMaskedLM's forward; scGPT: encoder, then decoder)."""
    with torch.inference_mode():
        ids = torch.from_numpy(cell.ids)[None]
        if model.family == "geneformer":
            output = model.bert(input_ids=ids, output_hidden_states=True)
            return output.hidden_states[-1][0].double().numpy(), output.logits[0].double().numpy()
        real = torch.ones_like(ids, dtype=torch.bool)
        last = model.encoder(ids, torch.from_numpy(cell.values)[None], real)[0]
        return last.double().numpy(), model.decoder(last).double().numpy()


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def tolerance(model, count) -> np.ndarray:
    """Batched-and-padded against one-cell float32 runs of a score in [-1, 1] (a cosine distance is within
    [0, 2] but its error is that of the cosine): float32_sum_tolerance over the model's layers plus its
    output head and the longest reduction (the feed-forward size); callers scale it by the magnitude of an
    unnormalised score (a loss)."""
    width = 32  # the tiny models' feed-forward size, their longest reduction
    return float32_sum_tolerance(count, model.n_layers + 1, width)


@pytest.mark.parametrize("family", FAMILIES)
def test_fidelity_is_zero_without_an_intervention_and_layered_with_one(models, family):
    model = models[family]
    cells = model.readout_cells(tiny_counts(n_cells=6))
    none = fidelity(model, cells, [], BATCHING)
    assert np.all(none.hidden_distance == 0) and none.output_distance == 0 and not none.moved(0.0)
    late = fidelity(model, cells, [zero_mlp(1)], BATCHING)
    assert late.hidden_distance[0] == 0, "layer 0 runs before the intervention"
    assert late.hidden_distance[1] > 0.02 and late.max_hidden_distance == late.hidden_distance[1]
    # the output distance, one cell at a time and unbatched
    def comparable(outputs: np.ndarray) -> np.ndarray:  # logits centred per token, single values per cell
        return (outputs - outputs.mean(axis=1 if outputs.shape[1] > 1 else 0, keepdims=True)).ravel()

    expected = []
    for cell in cells:
        clean = comparable(one_cell_output(model, cell)[1][cell.genes])
        with intervene(model, [zero_mlp(1)]):
            changed = comparable(one_cell_output(model, cell)[1][cell.genes])
        expected.append(cosine_distance(clean, changed))
    assert late.output_distance == pytest.approx(np.mean(expected), abs=float(tolerance(model, 1)))
    assert late.moved(0.02)


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_prediction_equals_the_unbatched_computation(models, family):
    model = models[family]
    cells = model.readout_cells(tiny_counts(n_cells=7, seed=3))
    positions = masked_positions(cells, 0.25, seed=11)
    again = masked_positions(cells, 0.25, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(positions, again)), "the same seed masks the same genes"
    for cell, where in zip(cells, positions):
        assert cell.genes[where].all() and len(where) == max(1, round(0.25 * cell.genes.sum()))
    for interventions in ([], [uniform_attention(0, [1])]):
        result = masked_prediction(model, cells, positions, interventions, BATCHING)
        losses, hits = [], []
        with intervene(model, interventions):
            for cell, where in zip(cells, positions):
                masked, targets = model.mask(cell, where)
                outputs = one_cell_output(model, masked)[1][where]
                if model.family == "geneformer":
                    shifted = outputs - outputs.max(axis=1, keepdims=True)
                    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
                    losses.append(-log_probs[np.arange(len(where)), targets].mean())
                    hits.append((outputs.argmax(axis=1) == targets).mean())
                else:
                    assert np.all(masked.values[where] == model.args.mask_value)
                    losses.append(((outputs[:, 0] - targets) ** 2).mean())
        scale = max(1.0, float(np.abs(losses).max()))
        np.testing.assert_allclose(result.loss, losses, rtol=0, atol=float(tolerance(model, 1)) * scale)
        if model.family == "geneformer":
            np.testing.assert_array_equal(result.accuracy, hits)
        else:
            assert np.isnan(result.accuracy).all()
        assert result.n_masked == sum(map(len, positions))


@pytest.mark.parametrize("family", FAMILIES)
def test_in_silico_response_equals_the_unbatched_computation(models, family):
    model = models[family]
    adata = tiny_counts(n_cells=6, seed=5)
    genes = [f"GENE{i}" for i in range(1, 13)]
    perturbed = [0, 3, 7]
    cells = model.readout_cells(adata)
    slots = model.token_slots(adata, genes)
    for interventions in ([], [zero_heads(0, [0])]):
        result = in_silico_response(model, cells, slots, perturbed, len(genes), interventions, BATCHING)
        sums, counts = np.zeros((3, len(genes))), np.zeros((3, len(genes)), dtype=np.int64)
        with intervene(model, interventions):
            for cell in cells:
                cell_slots = np.where(cell.genes, slots[cell.ids], -1)
                clean_states, clean_outputs = one_cell_output(model, cell)
                for row, slot in enumerate(perturbed):
                    (found,) = np.flatnonzero(cell_slots == slot) if slot in cell_slots else (None,)
                    if found is None:
                        continue
                    silenced, kept = model.silence(cell, int(found))
                    states, outputs = one_cell_output(model, silenced)
                    for position in np.flatnonzero((cell_slots >= 0) & (np.arange(len(cell.ids)) != found)):
                        if model.family == "geneformer":
                            assert silenced.ids[kept[position]] == cell.ids[position]
                            response = cosine_distance(clean_states[position], states[kept[position]])
                        else:
                            response = abs(outputs[position, 0] - clean_outputs[position, 0])
                        sums[row, cell_slots[position]] += response
                        counts[row, cell_slots[position]] += 1
        np.testing.assert_array_equal(result.counts, counts)
        assert counts.sum() > 0 and np.all(counts[:, perturbed].diagonal() == 0), "a gene is no target of itself"
        assert_within(result.sums, sums, tolerance(model, counts))
        assert np.isnan(result.mean()[counts == 0]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_reextracted_attention_equals_the_extraction_engine_and_moves_only_for_earlier_interventions(models, family):
    """Readout (a), the study's: the clean re-extraction is the engine's head-mean attention over the same cells;
    an intervention at the readout layer leaves it bit-identical, one at an earlier layer moves it."""
    model = models[family]
    adata = tiny_counts(n_cells=6, seed=2)
    genes = [f"GENE{i}" for i in range(1, 16)]
    cells, slots = model.readout_cells(adata), model.token_slots(adata, genes)
    last = model.n_layers - 1
    clean = reextracted_attention(model, cells, slots, len(genes), last, [], BATCHING)
    engine = model.attention_scores(adata, genes)
    present = (engine.count > 0) & ~np.eye(len(genes), dtype=bool)  # self-pairs are no edges
    np.testing.assert_array_equal(np.isfinite(clean), present)
    # a mean over cells of a probability: one cell's tolerance (both are per-cell means of float32 runs)
    assert_within(clean[present], engine.head_mean(last)[present], tolerance(model, np.ones(present.sum())))
    at_readout = reextracted_attention(model, cells, slots, len(genes), last, [zero_heads(last, [0]), zero_mlp(last)],
                                       BATCHING)
    np.testing.assert_array_equal(at_readout, clean)
    earlier = reextracted_attention(model, cells, slots, len(genes), last, [zero_heads(0, [0])], BATCHING)
    assert not np.allclose(earlier[present], clean[present])
    # uniform attention in every head of the readout layer: the model attends 1 / (real tokens) everywhere
    every_head = uniform_attention(last, range(model.n_heads))
    assert every_head.changes_attention_at(last) and not zero_heads(last, [0]).changes_attention_at(last)
    uniform = reextracted_attention(model, cells, slots, len(genes), last, [every_head], BATCHING)
    sums, counts = np.zeros((len(genes), len(genes))), np.zeros((len(genes), len(genes)))
    for cell in cells:
        held = slots[cell.ids[cell.genes]]
        held = held[held >= 0]
        sums[np.ix_(held, held)] += 1 / len(cell.ids)
        counts[np.ix_(held, held)] += 1
    np.testing.assert_allclose(uniform[present], (sums / np.maximum(counts, 1))[present], rtol=1e-12)


def test_readouts_that_need_an_output_head_say_which_file_lacks_it(tmp_path):
    scgpt_folder = build_tiny_scgpt(tmp_path / "scgpt")
    state = torch.load(scgpt_folder / "best_model.pt", weights_only=True)
    torch.save({key: value for key, value in state.items() if not key.startswith("decoder.fc.4")},
               scgpt_folder / "best_model.pt")  # fmt: skip
    model = load_model(scgpt_folder)  # attention never needs the decoder: the checkpoint still loads
    cells = model.readout_cells(tiny_counts(n_cells=3))
    with pytest.raises(ModelLoadError, match=r"best_model.pt.*expression decoder.*Fix"):
        masked_prediction(model, cells, masked_positions(cells, 0.3, 0), [], BATCHING)

    geneformer_folder = build_tiny_geneformer(tmp_path / "geneformer")
    bert = load_model(geneformer_folder).bert.bert
    bert.save_pretrained(tmp_path / "encoder_only")  # a BertModel checkpoint: no cls.* tensors
    for name in ("token_dictionary.pkl", "gene_median_dictionary.pkl", "gene_name_id_dict.pkl"):
        (tmp_path / "encoder_only" / name).write_bytes((geneformer_folder / name).read_bytes())
    model = load_model(tmp_path / "encoder_only")
    assert not model.has_mlm_head
    adata = tiny_counts(n_cells=3)
    cells = model.readout_cells(adata)
    with pytest.raises(ModelLoadError, match=r"encoder_only.*masked-language-model head"):
        fidelity(model, cells, [zero_mlp(0)], BATCHING)
    # the embedding-shift readout reads hidden states only: no head needed
    response = in_silico_response(model, cells, model.token_slots(adata, ["GENE1", "GENE2"]), [0], 2, [], BATCHING)
    assert response.counts.sum() > 0


def test_entropy_sums_of_uniform_and_one_hot_attention():
    real = torch.tensor([[True, True, True, True, False]])
    probs = torch.zeros(1, 2, 5, 5)
    probs[0, 0, :, :4] = 0.25  # head 0 uniform over the 4 real keys
    probs[0, 1, :, 0] = 1.0  # head 1 always on the first key
    np.testing.assert_allclose(entropy_sums(probs, real).numpy(), [4 * np.log(4), 0.0], rtol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_head_entropy_equals_the_unbatched_computation(models, family):
    model = models[family]
    cells = model.readout_cells(tiny_counts(n_cells=5, seed=2))
    result = head_entropy(model, cells, BATCHING)
    sums, queries = np.zeros((model.n_layers, model.n_heads)), 0
    with torch.inference_mode():
        for cell in cells:
            real, stream = model.layer_probabilities([cell])
            for layer, probs in stream:
                p = probs[0].double().numpy()  # (H, n, n), one cell: no padding
                sums[layer] += np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=(1, 2))
            queries += len(cell.ids)
    assert_within(result, sums / queries, float32_sum_tolerance(1, model.n_layers, 32))
    assert np.all(result > 0) and np.all(result <= np.log(max(len(c.ids) for c in cells)))


@pytest.mark.parametrize("family", FAMILIES)
def test_in_silico_response_silences_each_gene_in_at_most_the_given_number_of_cells(models, family):
    model = models[family]
    adata = tiny_counts(n_cells=8, seed=5)
    genes = [f"GENE{i}" for i in range(1, 13)]
    cells, slots = model.readout_cells(adata), model.token_slots(adata, genes)
    every = in_silico_response(model, cells, slots, [0, 3], len(genes), [], BATCHING)
    capped = in_silico_response(model, cells, slots, [0, 3], len(genes), [], BATCHING, max_cells_per_gene=1)
    assert every.counts.max() > 1 and capped.counts.max() == 1
    assert np.array_equal(capped.counts.any(axis=1), every.counts.any(axis=1)), "each expressed gene silenced once"
    again = in_silico_response(model, cells, slots, [0, 3], len(genes), [], BATCHING, max_cells_per_gene=1)
    np.testing.assert_array_equal(again.sums, capped.sums)  # the seed draws the same cells
    draws = {in_silico_response(model, cells, slots, [0, 3], len(genes), [], BATCHING, max_cells_per_gene=1,
                                seed=seed).sums.tobytes() for seed in range(6)}  # fmt: skip
    assert len(draws) > 1, "other seeds draw other cells"
