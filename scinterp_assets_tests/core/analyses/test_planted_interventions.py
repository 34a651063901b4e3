"""Positive control of the causal-intervention analysis: a Geneformer-format checkpoint with one head
hand-set to carry planted regulatory signal (planted_head.py). Ranking heads by reference AUROC finds it;
ablating it is detected by the masked-gene and in-silico readouts, and ablating any other single head is
not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scinterp_assets.core.analyses.causal_interventions import (
    CANNOT_CHANGE,
    InterventionInputs,
    InterventionSettings,
    intervention_tests,
    intervention_plan,
    run_interventions,
)
from scinterp_assets.core.analyses.head_selection import head_reference_auroc
from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter
from scinterp_assets.core.analyses.reference_battery import reference_labels
from scinterp_assets.core.models import load_model
from scinterp_assets.core.models.readouts import Batching, head_entropy
from scinterp_assets.core.stats.registry import registry_rows
from scinterp_assets_tests.core.planted_head import (
    N_HEADS,
    N_LAYERS,
    PLANTED,
    build_planted_geneformer,
    planted_counts,
    planted_de_labels,
    tfs,
)

SETTINGS = InterventionSettings(ks=(1,), n_random_draws=19, exhaustive_up_to=64, masked_fraction=0.15, seed=0)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model = load_model(build_planted_geneformer(tmp_path_factory.mktemp("planted") / "model"))
    screen = planted_counts(60, seed=1)  # the cells attention is extracted from
    held_out = planted_counts(20, seed=2)  # the cells interventions are read out on
    genes = [str(name) for name in screen.var_names]
    labels = planted_de_labels()
    reference = labels[labels["is_de"]].rename(columns={"perturbation": "source"})[["source", "target"]]
    scores = model.attention_scores(screen, genes, sources=tfs())
    per_head = np.stack([scores.mean(layer) for layer in range(model.n_layers)])
    head_auroc = head_reference_auroc(per_head, list(scores.sources), reference_labels(reference, genes))
    batching = Batching(batch_size=32)
    cells = model.readout_cells(held_out)
    inputs = InterventionInputs(cells, tuple(genes), model.token_slots(held_out, genes), tuple(tfs()), labels,
                                PerturbationFilter(1, 1))  # fmt: skip
    plan = intervention_plan(head_auroc, head_entropy(model, cells, batching), SETTINGS)
    single_heads = [(analysis, c) for analysis, c in plan if analysis in ("clean", "A17") and c.target != "mlp"
                    and not c.name.endswith("layer")]  # A17's single-head conditions: exact, and quick  # fmt: skip
    table = run_interventions(model, inputs, single_heads, SETTINGS, batching)
    return head_auroc, table, registry_rows(intervention_tests(table, SETTINGS))


def test_reference_auroc_ranks_the_planted_head_first(planted):
    head_auroc, table, _ = planted
    assert head_auroc.shape == (N_LAYERS, N_HEADS)
    assert np.unravel_index(np.argmax(head_auroc), head_auroc.shape) == PLANTED
    top = table[(table["analysis_id"] == "A17") & (table["condition"] == "top_k") & (table["k"] == 1)].iloc[0]
    assert top["heads"] == f"L{PLANTED[0]}H{PLANTED[1]}" and top["moved"]


@pytest.mark.parametrize("readout", ["masked_loss", "in_silico"])
def test_ablating_the_planted_head_is_detected_and_other_single_heads_are_not(planted, readout):
    _, table, registry = planted
    row = registry[registry["test_id"] == f"A17:zero_heads:top_k_vs_random:k1:{readout}"].iloc[0]
    n_heads = N_LAYERS * N_HEADS
    assert row["n"] == n_heads - 1, "every other single head is compared (exact test)"
    assert row["p_value"] == pytest.approx(1 / n_heads) and row["p_value"] <= 0.05
    column = {"masked_loss": "masked_loss_increase", "in_silico": "in_silico_pf_auroc_drop"}[readout]
    single = table[(table["analysis_id"] == "A17") & (table["k"] == 1)]
    planted_harm = float(single.loc[single["condition"] == "top_k", column].iloc[0])
    other_harms = single.loc[single["condition"] == "random_k", column].to_numpy()
    assert planted_harm > 0.1 and np.abs(other_harms).max() < 0.1 * planted_harm


def test_the_clean_in_silico_readout_recovers_the_planted_targets(planted):
    _, table, registry = planted
    clean = table.iloc[0]
    assert clean["condition"] == "clean" and clean["n_perturbations"] == len(tfs())
    assert clean["in_silico_pf_auroc"] > 0.9
    rows = registry.set_index("test_id")
    assert rows.loc["A17:clean:in_silico_pf_auroc", "statistic"] == clean["in_silico_pf_auroc"]
    print(f"planted head: clean PF AUROC, in-silico {clean['in_silico_pf_auroc']:.3f}, re-extracted attention "
          f"{clean['attention_pf_auroc']:.3f}")


def test_the_study_readout_is_flagged_where_it_cannot_move(planted):
    """Readout (a), attention re-extracted at the last layer: ablating a head there cannot change it."""
    _, table, registry = planted
    single = table[(table["analysis_id"] == "A17") & (table["k"] == 1)]
    at_last = single["heads"].str.startswith(f"L{N_LAYERS - 1}H")
    assert at_last.any() and not single.loc[at_last, "attention_can_change"].any()
    assert (single.loc[at_last, "attention_pf_auroc_drop"] == 0).all()
    assert single.loc[~at_last, "attention_can_change"].all()
    row = registry[registry["test_id"] == "A17:zero_heads:top_k_vs_random:k1:attention"].iloc[0]
    # the planted head sits before the readout layer: tested, against the other heads that can move it only
    assert row["n"] == N_LAYERS * N_HEADS - 1 - N_HEADS and 0 < row["p_value"] <= 1
    assert CANNOT_CHANGE not in row["note"]
    print(f"planted head ablated: attention PF AUROC drop {row['statistic']:.4f}, p {row['p_value']:.3f}")
