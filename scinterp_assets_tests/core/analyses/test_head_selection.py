"""Head selection for causal interventions and the rank test of a targeted condition against random ones."""

from __future__ import annotations

import numpy as np
import pytest

from scinterp_assets.core.analyses.head_selection import (
    head_conditions,
    head_reference_auroc,
    layer_conditions,
    rank_p_value,
)
from scinterp_assets.core.analyses.reference_battery import ReferenceLabels
from scinterp_assets.core.models.interventions import Intervention


def labels_over(genes, pairs) -> ReferenceLabels:
    index = {gene: i for i, gene in enumerate(genes)}
    membership = np.zeros((len(genes), len(genes)), dtype=bool)
    for source, target in pairs:
        membership[index[source], index[target]] = True
    return ReferenceLabels("planted", tuple(genes), membership, np.zeros_like(membership, dtype=np.int8), True)


def brute_force_auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie), over every positive-negative pair."""
    positives, negatives = scores[truth], scores[~truth]
    greater = (positives[:, None] > negatives[None, :]).mean()
    return float(greater + 0.5 * (positives[:, None] == negatives[None, :]).mean())


def test_head_reference_auroc_ranks_the_planted_head_first_and_equals_brute_force():
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(12)]
    pairs = [("G0", "G3"), ("G0", "G5"), ("G1", "G7"), ("G1", "G2"), ("G4", "G9")]
    labels = labels_over(genes, pairs)
    sources = ["G0", "G1", "G6", "G4"]  # G6 is no TF: its row is not ranked
    per_head = rng.uniform(size=(2, 3, len(sources), len(genes)))
    rows = [genes.index(gene) for gene in sources]
    per_head[1, 2] += 2.0 * labels.membership[rows]  # head (1, 2) attends to its TF's targets
    result = head_reference_auroc(per_head, sources, labels)
    assert np.unravel_index(np.argmax(result), result.shape) == (1, 2) and result[1, 2] == 1.0
    tf_sources = [i for i, gene in enumerate(sources) if gene in {"G0", "G1", "G4"}]
    for layer in range(2):
        for head in range(3):
            truth, scores = [], []
            for i in tf_sources:
                keep = np.arange(len(genes)) != rows[i]
                truth.append(labels.membership[rows[i]][keep])
                scores.append(per_head[layer, head, i][keep])
            expected = brute_force_auroc(np.concatenate(truth), np.concatenate(scores))
            assert result[layer, head] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="expected"):
        head_reference_auroc(per_head[:, :, :2], sources, labels)
    assert np.isnan(head_reference_auroc(per_head[:, :, 2:3], ["G6"], labels)).all()


def heads_of(condition) -> set[tuple[int, int]]:
    realised = {(i.layer, head) for i in condition.interventions for head in i.heads}
    assert realised == set(condition.heads)
    return realised


def test_head_conditions_pick_top_bottom_matched_and_random_heads():
    head_auroc = np.array([[0.50, 0.90, 0.40], [0.80, 0.55, 0.30], [0.60, 0.70, 0.45]])
    entropy = np.array([[1.0, 2.0, 3.0], [2.1, 5.0, 0.5], [1.9, 2.4, 2.2]])
    conditions = head_conditions(head_auroc, entropy, [2, 20], kind="zero_heads", n_random_draws=5, seed=3)
    by = {(c.name, c.k, c.draw): c for c in conditions}
    assert heads_of(by[("top_k", 2, 0)]) == {(0, 1), (1, 0)}
    assert heads_of(by[("bottom_k", 2, 0)]) == {(1, 2), (0, 2)}
    # the top heads have entropies 2.0 and 2.1: the closest other heads, in turn, are (2, 0) (1.9) and (2, 2) (2.2)
    assert heads_of(by[("entropy_matched_k", 2, 0)]) == {(2, 0), (2, 2)}
    assert {k for (_, k, _) in by} == {2}, "k = 20 is every one of the 9 heads: nothing to compare with"
    draws = [heads_of(by[("random_k", 2, d)]) for d in range(5)]
    assert all(len(d) == 2 for d in draws) and len({frozenset(d) for d in draws}) > 1
    again = head_conditions(head_auroc, entropy, [2, 20], kind="zero_heads", n_random_draws=5, seed=3)
    assert again == conditions
    uniform = head_conditions(head_auroc, entropy, [2], kind="uniform_attention", n_random_draws=1, seed=3)
    assert {i.kind for c in uniform for i in c.interventions} == {"uniform_attention"}
    with pytest.raises(ValueError, match="cannot rank heads"):
        head_conditions(np.full((2, 2), np.nan), np.ones((2, 2)), [1], kind="zero_heads", n_random_draws=1, seed=0)


def test_heads_of_layers_without_an_auroc_are_neither_ranked_nor_drawn():
    head_auroc = np.array([[np.nan, np.nan, np.nan], [0.7, 0.4, 0.55], [0.6, 0.5, 0.65]])
    conditions = head_conditions(head_auroc, np.ones((3, 3)), [1, 2, 6], kind="zero_heads", n_random_draws=20, seed=0)
    assert {c.k for c in conditions} == {1, 2}, "k = 6 is every ranked head"
    assert all(layer != 0 for c in conditions for layer, _ in c.heads)
    bottom = next(c for c in conditions if c.name == "bottom_k" and c.k == 1)
    assert bottom.heads == ((1, 1),)
    layers = layer_conditions(head_auroc, target="mlp", n_random_draws=5, seed=0)
    assert [c.layers for c in layers] == [(2,), (1,)], "layer 2 has the best mean AUROC (0.583 against 0.55)"


def test_layer_conditions_use_the_layer_with_the_best_mean_head_auroc():
    head_auroc = np.array([[0.5, 0.6], [0.9, 0.7], [np.nan, np.nan], [0.4, 0.5]])
    mlp = layer_conditions(head_auroc, target="mlp", n_random_draws=2, seed=0)
    assert mlp[0].name == "regulatory_layer" and mlp[0].interventions == (Intervention("zero_mlp", 1),)
    assert [c.name for c in mlp[1:]] == ["random_layer"] * 2
    assert {c.layers for c in mlp[1:]} == {(0,), (3,)}, "layer 2 has no AUROC: never drawn"
    heads = layer_conditions(head_auroc, target="heads", n_random_draws=5, seed=0)
    assert len(heads) == 3 and heads[0].heads == ((1, 0), (1, 1)) and heads[0].k == 2


def test_rank_p_value_counts_random_effects_at_least_as_large():
    assert rank_p_value(5.0, [1.0, 2.0, 3.0]) == pytest.approx(1 / 4)
    assert rank_p_value(2.0, [1.0, 2.0, 3.0]) == pytest.approx(3 / 4)
    assert rank_p_value(2.0, [np.nan, 1.0]) == pytest.approx(1 / 2)
    assert np.isnan(rank_p_value(np.nan, [1.0])) and np.isnan(rank_p_value(1.0, []))


def test_rank_p_value_is_valid_when_the_targeted_condition_is_one_more_random_draw():
    """Under exchangeability P(p <= alpha) <= alpha: 4,000 null experiments of 19 draws each."""
    rng = np.random.default_rng(7)
    p_values = np.array([rank_p_value(*(lambda e: (e[0], e[1:]))(rng.normal(size=20))) for _ in range(4000)])
    for alpha in (0.05, 0.1, 0.25):
        rate = float(np.mean(p_values <= alpha))
        assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / len(p_values))


def test_random_k_enumerates_every_other_set_when_there_are_few():
    head_auroc = np.array([[0.9, 0.5, 0.6], [0.7, 0.4, 0.55]])
    entropy = np.ones((2, 3))
    conditions = head_conditions(head_auroc, entropy, [1, 2], kind="zero_heads", n_random_draws=3, seed=0,
                                 exhaustive_up_to=5)  # fmt: skip
    single = [c.heads for c in conditions if c.name == "random_k" and c.k == 1]
    assert sorted(single) == [((l, h),) for l in range(2) for h in range(3) if (l, h) != (0, 0)]
    pairs = [c for c in conditions if c.name == "random_k" and c.k == 2]
    assert len(pairs) == 3, "15 - 1 other pairs exceed the limit: seeded draws instead"


def test_accumulated_head_auroc_reads_each_accumulated_layer_over_the_evaluable_genes(tmp_path):
    from scinterp_assets.core.analyses.head_selection import accumulated_head_auroc
    from scinterp_assets.core.attention.edges import evaluable_genes
    from scinterp_assets.core.models import load_model
    from scinterp_assets_tests.core.tiny_models import build_tiny_geneformer, tiny_counts

    model = load_model(build_tiny_geneformer(tmp_path / "model"))
    adata = tiny_counts(n_cells=10, seed=1)
    universe = [f"GENE{i}" for i in range(1, 16)]
    scores = model.attention_scores(adata, universe, sources=["GENE2", "GENE5", "GENE7"], layers=[1])
    genes = evaluable_genes(scores)
    pairs = [("GENE2", "GENE3"), ("GENE2", "GENE9"), ("GENE5", "GENE1"), ("GENE5", "GENE12"), ("GENE7", "GENE4")]
    labels = labels_over(genes, pairs)
    result = accumulated_head_auroc(scores, genes, labels, model.n_layers)
    assert result.shape == (2, model.n_heads) and np.isnan(result[0]).all(), "layer 0 was not accumulated"
    columns = [scores.genes.index(gene) for gene in genes]
    expected = head_reference_auroc(scores.mean(1)[None][..., columns], list(scores.sources), labels)[0]
    np.testing.assert_array_equal(result[1], expected)
    assert np.isfinite(result[1]).all()
