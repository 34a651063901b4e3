"""The QC verdict (core/verdict.py) on hand-built registries: a context whose rows meet every criterion, and
one change at a time that must turn a criterion into fail or not evaluable, naming why."""

import json

import pandas as pd
import pytest

from scinterp_assets.core.analyses.causal_interventions import CANNOT_CHANGE
from scinterp_assets.core.stats.registry import registry_rows
from scinterp_assets.core.verdict import (
    CRITERIA, FAIL, NOT_EVALUABLE, PASS, VERDICT, VerdictThresholds, assess_context, first_page,
    verdict_preconditions, verdict_rows,
)

SCORE = "attention_L2_head_max"
OTHER = "attention_L1_head_mean"
BASELINES = ("baseline_variance", "baseline_mean", "baseline_detection_rate")
ARMS = [(model, split, "A05" if split == "perturbation_split" else "A06")
        for model in ("logistic", "boosted") for split in ("perturbation_split", "target_split", "joint_split")]
THRESHOLDS = VerdictThresholds()


def _row(test: str, **fields) -> dict:
    return {"analysis_id": test.split(":")[0], "test_id": f"m|c|{test}", **fields}


def _score_rows(score: str) -> list[dict]:
    """Rows with which `score` meets C1-C3."""
    rows = [_row(f"A04:{baseline}_vs_{score}", effect=-0.2, q_value=0.001, confirmatory=True) for baseline in BASELINES]
    for model, split, analysis in ARMS:
        rows.append(_row(f"{analysis}:{model}:{split}:{score}", effect=0.1, ci_low=0.05, q_value=0.001, confirmatory=True))
        rows += [_row(f"{analysis}:{model}:{split}:flexible:{score}:{metric}", effect=0.05)
                 for metric in ("auroc", "auprc", "recall_at_10", "recall_at_50", "recall_at_100")]
    rows += [_row(f"A12:planted:{score}", statistic_name="auroc", statistic=0.9, n_positives=40, confirmatory=True),
             _row(f"A09:planted:{score}:ols", statistic=0.85, effect=0.9),
             _row(f"A09:planted:{score}:beyond_features", effect=0.2, q_value=0.001, confirmatory=True),
             _row(f"A10:planted:{score}", statistic_name="null_z", statistic=12.0)]
    return rows


def _causal_rows(ks=(1, 2), harms=(0.1, 0.2), distances=(0.3, 0.4)) -> list[dict]:
    rows = []
    for k, harm, distance in zip(ks, harms, distances):
        rows += [_row(f"A17:zero_heads:top_k_vs_random:k{k}:{readout}", statistic=harm, effect=harm - 0.01, note="")
                 for readout in ("in_silico", "masked_loss")]
        rows.append(_row(f"A17:zero_heads:top_k_vs_random:k{k}:attention", statistic=-0.5, effect=-0.5, note=""))
        rows.append(_row(f"A19:A17:zero_heads:top_k:k{k}:heads", statistic=distance, effect=distance))
    return rows


def _context(rows: list[dict]) -> pd.DataFrame:
    return registry_rows(rows, model="m", cell_type="c")


def _assess(rows: list[dict], **thresholds) -> dict:
    return assess_context(_context(rows), VerdictThresholds(**thresholds))


def _replace(rows: list[dict], test: str, **fields) -> list[dict]:
    assert any(row["test_id"] == f"m|c|{test}" for row in rows), test
    return [{**row, **fields} if row["test_id"] == f"m|c|{test}" else row for row in rows]


def test_a_context_meeting_every_criterion_passes_on_one_edge_score():
    result = _assess(_score_rows(SCORE) + _causal_rows())
    assert {name: result[name].status for name in CRITERIA} == dict.fromkeys(CRITERIA, PASS)
    assert result[VERDICT].status == PASS and result[VERDICT].edge_score == SCORE
    c1 = result["C1_beats_gene_baselines"]
    assert c1.statistic == pytest.approx(0.2) and c1.bound == pytest.approx(0.001) and len(c1.test_ids) == 3
    assert result["C3_beyond_covariates_and_degree"].bound == 12.0


@pytest.mark.parametrize("readout", ["attention", "masked_loss"])
def test_the_other_readouts_are_required_only_when_listed(readout):
    rows = [{**row, "statistic": -0.5, "effect": -0.5} if row["test_id"].endswith(f":{readout}") else row
            for row in _score_rows(SCORE) + _causal_rows()]
    assert _assess(rows)["C4_causal_heads"].status == PASS
    strict = _assess(rows, causal_readouts=("in_silico", readout))["C4_causal_heads"]
    assert strict.status == FAIL and f"{readout}, k = 1" in strict.reason


@pytest.mark.parametrize("change, criterion, status, words", [
    (("A04:baseline_mean_vs_" + SCORE, {"q_value": 0.2}), "C1_beats_gene_baselines", FAIL, "baseline_mean is not beaten"),
    (("A04:baseline_variance_vs_" + SCORE, {"effect": 0.05}), "C1_beats_gene_baselines", FAIL,
     "baseline_variance does better (edge - baseline -0.050"),
    ((f"A06:boosted:joint_split:{SCORE}", {"ci_low": -0.01}), "C2_incremental_value", FAIL, "boosted / joint_split"),
    ((f"A05:logistic:perturbation_split:flexible:{SCORE}:auprc", {"effect": -0.01}), "C2_incremental_value", FAIL,
     "auprc delta -0.010 disagrees"),
    ((f"A09:planted:{SCORE}:ols", {"effect": 0.7}), "C3_beyond_covariates_and_degree", FAIL, "keeps 70%"),
    ((f"A12:planted:{SCORE}", {"statistic": 0.5}), "C3_beyond_covariates_and_degree", FAIL, "not above chance"),
    ((f"A10:planted:{SCORE}", {"statistic": 2.5}), "C3_beyond_covariates_and_degree", FAIL, "null z = 2.50"),
    ((f"A09:planted:{SCORE}:beyond_features", {"q_value": 0.3}), "C3_beyond_covariates_and_degree", FAIL,
     "beyond-features"),
    ((f"A10:planted:{SCORE}", {"note": "the null of 'planted' cannot test anything: its draws barely move"}),
     "C3_beyond_covariates_and_degree", NOT_EVALUABLE, "barely moves"),
    (("A17:zero_heads:top_k_vs_random:k2:in_silico", {"statistic": 0.05, "effect": 0.01}), "C4_causal_heads", FAIL,
     "harm decreases with k"),
    (("A17:zero_heads:top_k_vs_random:k1:in_silico", {"effect": -0.01}), "C4_causal_heads", FAIL, "below random heads"),
    (("A19:A17:zero_heads:top_k:k2:heads", {"statistic": 0.01}), "C4_causal_heads", FAIL, "did not move the model"),
])
def test_each_unmet_standard_fails_or_is_not_evaluable_and_says_why(change, criterion, status, words):
    test, fields = change
    result = _assess(_replace(_score_rows(SCORE) + _causal_rows(), test, **fields))
    assert result[criterion].status == status and words in result[criterion].reason
    assert result[VERDICT].status == status and criterion in result[VERDICT].reason
    others = [name for name in CRITERIA if name != criterion]
    assert all(result[name].status == PASS for name in others)


def test_missing_inputs_are_not_evaluable_never_pass():
    rows = _score_rows(SCORE) + _causal_rows()
    without_boosted = [row for row in rows if ":boosted:" not in row["test_id"]]
    c2 = _assess(without_boosted)["C2_incremental_value"]
    assert c2.status == NOT_EVALUABLE and "analyses.incremental_value_models" in c2.reason
    without_variance = [row for row in rows if "baseline_variance" not in row["test_id"]]
    assert _assess(without_variance)["C1_beats_gene_baselines"].status == NOT_EVALUABLE
    one_k = _assess(_score_rows(SCORE) + _causal_rows(ks=(1,), harms=(0.1,), distances=(0.3,)))["C4_causal_heads"]
    assert one_k.status == NOT_EVALUABLE and "interventions.ks" in one_k.reason
    empty = assess_context(_context([]), THRESHOLDS)
    assert {a.status for a in empty.values()} == {NOT_EVALUABLE}


def test_an_agreeing_metric_or_a_reference_that_cannot_be_judged_keeps_the_criterion_open():
    rows = _score_rows(SCORE) + _causal_rows()
    no_recall = [row for row in rows if not row["test_id"].endswith(":boosted:target_split:flexible:" + SCORE + ":recall_at_50")]
    c2 = _assess(no_recall)["C2_incremental_value"]
    assert c2.status == NOT_EVALUABLE and "boosted / target_split recall_at_50" in c2.reason
    another_reference = rows + [_row(f"A10:trrust:{SCORE}", statistic_name="null_z", statistic=9.0)]
    c3 = _assess(another_reference)["C3_beyond_covariates_and_degree"]
    assert c3.status == NOT_EVALUABLE and "trrust: no A09 OLS row" in c3.reason


@pytest.mark.parametrize("harms, note, words", [
    ((0.0, 0.0), "", "does not degrade it"),  # as harmful as random heads that do nothing: no causal role
    ((0.1, 0.2), "the clean in_silico PF AUROC is 0.480, not above 0.5: a drop is no loss of signal", "at chance"),
])
def test_a_readout_that_is_not_degraded_fails_c4(harms, note, words):
    rows = [{**row, "note": note} if ":in_silico" in row["test_id"] else row
            for row in _score_rows(SCORE) + _causal_rows(harms=harms)]
    rows = [{**row, "effect": 0.0} if ":in_silico" in row["test_id"] and not note else row for row in rows]
    c4 = _assess(rows)["C4_causal_heads"]
    assert c4.status == FAIL and words in c4.reason


def test_a_top_k_row_without_random_comparators_is_not_evaluable():
    rows = _replace(_score_rows(SCORE) + _causal_rows(), "A17:zero_heads:top_k_vs_random:k2:in_silico",
                    effect=float("nan"))
    c4 = _assess(rows)["C4_causal_heads"]
    assert c4.status == NOT_EVALUABLE and "no random head set" in c4.reason


def test_an_attention_readout_an_ablation_cannot_change_is_left_out_not_failed():
    rows = [{**row, "note": CANNOT_CHANGE} if ":attention" in row["test_id"] else row
            for row in _score_rows(SCORE) + _causal_rows()]
    assert _assess(rows, causal_readouts=("in_silico", "attention"))["C4_causal_heads"].status == PASS
    only_attention = _assess(rows, causal_readouts=("attention",))["C4_causal_heads"]
    assert only_attention.status == NOT_EVALUABLE and "can change" in only_attention.reason


def test_criteria_passing_on_different_edge_scores_fail_the_verdict():
    rows = _score_rows(SCORE) + _score_rows(OTHER) + _causal_rows()
    rows = _replace(rows, f"A04:baseline_mean_vs_{SCORE}", q_value=0.5)  # SCORE fails C1 ...
    rows = _replace(rows, f"A10:planted:{OTHER}", statistic=1.0)  # ... OTHER fails C3
    result = _assess(rows)
    assert result["C1_beats_gene_baselines"].scores == {OTHER}
    assert result["C3_beyond_covariates_and_degree"].scores == {SCORE}
    assert result[VERDICT].status == FAIL and "different edge scores" in result[VERDICT].reason


def test_correlation_is_not_the_models_edges():
    rows = [{**row, "test_id": row["test_id"].replace(SCORE, "correlation")} for row in _score_rows(SCORE)]
    result = _assess(rows + _causal_rows())
    assert result["C1_beats_gene_baselines"].status == NOT_EVALUABLE


def test_failed_preconditions_make_every_criterion_not_evaluable():
    result = assess_context(_context(_score_rows(SCORE) + _causal_rows()), THRESHOLDS, blocked="too few perturbations")
    assert {a.status for a in result.values()} == {NOT_EVALUABLE}
    assert "preconditions failed: too few perturbations" in result["C1_beats_gene_baselines"].reason


def test_preconditions_frame_counts_perturbations_positives_and_references():
    rows = _score_rows(SCORE) + [
        _row("A01:attention_L2_head_max_vs_correlation", n=12, n_positives=80),
        _row("A12:string700:not_evaluable", statistic_name="not_evaluable"),
        _row("A12:trrust:attention_L2_head_max", statistic_name="auroc", n_positives=9),
        _row("A12:trrust:attention_head_max:depth_rho", statistic_name="spearman_rho", n_positives=3)]
    frame = verdict_preconditions(_context(rows), "m", "c", "complete")
    assert frame.to_dict("records") == [{
        "model": "m", "cell_type": "c", "registry_status": "complete", "evaluable_perturbations": 12,
        "de_positives": 80, "evaluable_references": 2, "fewest_reference_positives": 9}]


def test_verdict_rows_and_first_page():
    passing = verdict_rows("m", "c", _assess(_score_rows(SCORE) + _causal_rows()))
    failing = verdict_rows("n", "c", _assess(_replace(_score_rows(SCORE) + _causal_rows(),
                                                      f"A10:planted:{SCORE}", statistic=1.0)))
    table = pd.concat([passing, failing])
    assert len(passing) == len(CRITERIA) + 1
    assert json.loads(passing.set_index("criterion").loc["C1_beats_gene_baselines", "q_values"]) == [0.001] * 3
    page = first_page(table).set_index("model")
    assert page.loc["m", "verdict"] == PASS and page.loc["n", "verdict"] == FAIL
    assert page.loc["n", "C3"] == FAIL and page.loc["n", "why"].startswith("C3: no edge score passes")


def test_a_twins_descriptive_rows_are_judged_where_no_q_value_is_needed():
    twin = [{**row, "confirmatory": False, "q_value": None} for row in _score_rows(SCORE) + _causal_rows()]
    result = _assess(twin)
    assert result["C1_beats_gene_baselines"].status == NOT_EVALUABLE
    assert "outside the confirmatory family" in result["C1_beats_gene_baselines"].reason
    assert result["C2_incremental_value"].status == PASS  # its intervals need no q-value
    beaten_by_a_baseline = _replace(twin, f"A04:baseline_mean_vs_{SCORE}", effect=0.1)
    assert _assess(beaten_by_a_baseline)["C1_beats_gene_baselines"].status == FAIL
