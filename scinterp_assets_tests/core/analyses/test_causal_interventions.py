"""The causal-intervention analysis (A17-A19) on tiny checkpoints of both families: the plan, the conditions
table against the readouts run one condition at a time, and the registry rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scinterp_assets.core.analyses.causal_interventions import (
    CONDITION_COLUMNS,
    CANNOT_CHANGE,
    DID_NOT_MOVE,
    InterventionInputs,
    InterventionSettings,
    evaluate_condition,
    intervention_plan,
    intervention_tests,
    run_interventions,
)
from scinterp_assets.core.analyses.perturbation_prediction import PerturbationFilter
from scinterp_assets.core.models import load_model
from scinterp_assets.core.models.readouts import Batching
from scinterp_assets.core.stats.registry import registry_rows
from scinterp_assets_tests.core.tiny_models import build_tiny_geneformer, build_tiny_scgpt, tiny_counts

SETTINGS = InterventionSettings(ks=(1, 2, 3, 4), n_random_draws=3, exhaustive_up_to=0, masked_fraction=0.2, seed=5)
BATCHING = Batching(batch_size=4)
GENES = tuple(f"GENE{i}" for i in range(1, 21))
PERTURBED = ("GENE1", "GENE4", "GENE9")


def de_labels(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(p, t, bool(rng.uniform() < 0.3)) for p in PERTURBED for t in GENES if t != p]
    return pd.DataFrame(rows, columns=["perturbation", "target", "is_de"])


@pytest.fixture(scope="module", params=["geneformer", "scgpt"])
def setup(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    build = build_tiny_geneformer if request.param == "geneformer" else build_tiny_scgpt
    model = load_model(build(folder / "model"))
    adata = tiny_counts(n_cells=6, seed=4)
    inputs = InterventionInputs(model.readout_cells(adata), GENES, model.token_slots(adata, list(GENES)),
                                PERTURBED, de_labels(), PerturbationFilter(1, 1))  # fmt: skip
    rng = np.random.default_rng(1)
    head_auroc, head_entropy = rng.uniform(0.4, 0.8, (2, 2)), rng.uniform(1.0, 3.0, (2, 2))
    table = run_interventions(model, inputs, intervention_plan(head_auroc, head_entropy, SETTINGS), SETTINGS, BATCHING)
    return model, inputs, head_auroc, head_entropy, table


def test_the_plan_holds_every_condition_of_a17_and_a18(setup):
    _, _, head_auroc, head_entropy, _ = setup
    plan = intervention_plan(head_auroc, head_entropy, SETTINGS)
    assert plan[0][0] == "clean" and not plan[0][1].interventions
    names = pd.DataFrame([(a, c.name, c.k, c.target, c.interventions[0].kind) for a, c in plan[1:]],
                         columns=["analysis", "name", "k", "target", "kind"])  # fmt: skip
    a17 = names[names["analysis"] == "A17"]
    assert set(a17["kind"]) == {"zero_heads"}
    head_sets = a17[~a17["name"].str.contains("layer")]
    for k in (1, 2):  # with 4 heads, k = 3 leaves too few to match on entropy
        assert set(head_sets.loc[head_sets["k"] == k, "name"]) == {"top_k", "bottom_k", "entropy_matched_k", "random_k"}
    assert set(head_sets["k"]) == {1, 2, 3}, "k = 4 is every head: no other set to compare with"
    assert (head_sets["name"] == "random_k").sum() == 3 * 3
    assert set(a17.loc[a17["name"].str.contains("layer"), "name"]) == {"regulatory_layer", "random_layer"}
    a18 = names[names["analysis"] == "A18"]
    assert set(a18.loc[a18["target"] == "heads", "kind"]) == {"uniform_attention"}
    assert set(a18.loc[a18["target"] == "mlp", "kind"]) == {"zero_mlp"}
    assert plan == intervention_plan(head_auroc, head_entropy, SETTINGS), "seeded"
    with pytest.raises(ValueError, match="start with the clean run"):
        run_interventions(setup[0], setup[1], plan[1:], SETTINGS, BATCHING)


def test_conditions_table_equals_conditions_evaluated_one_by_one(setup):
    model, inputs, head_auroc, head_entropy, table = setup
    assert list(table.columns) == list(CONDITION_COLUMNS)
    plan = intervention_plan(head_auroc, head_entropy, SETTINGS)
    assert len(table) == len(plan)
    clean = table.iloc[0]
    assert clean["masked_loss_increase"] == 0 and clean["in_silico_pf_auroc_drop"] == 0 and not clean["moved"]
    clean_row, clean_loss = evaluate_condition(model, inputs, "clean", plan[0][1], SETTINGS, BATCHING)
    for index in (1, len(plan) - 1):
        analysis_id, condition = plan[index]
        row, loss = evaluate_condition(model, inputs, analysis_id, condition, SETTINGS, BATCHING)
        assert table.iloc[index]["masked_loss_increase"] == pytest.approx(np.mean(loss - clean_loss))
        assert table.iloc[index]["in_silico_pf_auroc_drop"] == pytest.approx(
            clean_row["in_silico_pf_auroc"] - row["in_silico_pf_auroc"])
    assert table["n_perturbations"].eq(len(PERTURBED)).all()
    assert not (table["k"] == 4).any()


def test_registry_rows_fit_the_schema_and_test_top_k_against_random_draws(setup):
    _, _, _, _, table = setup
    rows = intervention_tests(table, SETTINGS, caveats=["heads ranked on planted"])
    frame = registry_rows(rows, model="tiny", cell_type="tiny")
    assert not frame["test_id"].duplicated().any()
    assert set(frame["analysis_id"]) == {"A17", "A18", "A19"} and set(frame["family"]) == {"C"}
    assert not frame["confirmatory"].any()
    tested = frame[frame["test_id"].str.contains("top_k_vs_random|regulatory_layer_vs_random")
                   & ~frame["note"].str.startswith("descriptive")]  # e.g. the attention readout where it cannot move
    assert len(tested) and tested["p_value"].between(1 / (1 + SETTINGS.n_random_draws), 1).all()
    described = frame[frame["test_id"].str.contains("bottom_k|entropy_matched|dose_response")]
    assert len(described) and described["p_value"].isna().all() and described["note"].str.startswith("descriptive").all()
    assert (frame["analysis_id"] == "A19").sum() == len(table) - 1
    unmoved = table[(table["analysis_id"] != "clean") & ~table["moved"]]
    a19 = frame[frame["analysis_id"] == "A19"]
    assert a19["note"].str.contains(DID_NOT_MOVE, regex=False).sum() == len(unmoved)
    dose = frame[frame["test_id"].str.contains("dose_response")]
    assert len(dose) == 2 * 3  # two analyses with three k each, three readouts
    # the study's readout cannot move for interventions at or after its layer: exactly no harm, and said so
    frozen = table[(table["analysis_id"] != "clean") & ~table["attention_can_change"]]
    assert len(frozen) and (frozen["attention_pf_auroc_drop"] == 0).all()
    assert table.loc[table["attention_can_change"], "attention_pf_auroc_drop"].ne(0).any()
    attention_rows = frame[frame["test_id"].str.endswith(":attention") & ~frame["test_id"].str.contains("dose")]
    flagged = attention_rows["note"].str.contains(CANNOT_CHANGE, regex=False)
    assert flagged.any() and not flagged.all()
    assert attention_rows.loc[flagged, "p_value"].isna().all()  # nothing to test where nothing can move
    assert attention_rows.loc[~flagged & attention_rows["test_id"].str.contains("top_k_vs"), "p_value"].notna().all()
    assert frame["note"].str.contains("heads ranked on planted").all()
