import pandas as pd
import pytest

import matplotlib.pyplot as plt

from scinterp_assets.core.report import context_summary, panel_grid, render_report
from scinterp_assets.core.stats.registry import apply_framework_bh, registry_rows


def _inputs():
    registry = apply_framework_bh(registry_rows([
        {"analysis_id": "A12", "test_id": "m|c|A12:planted:attention_L0_head_mean", "layer": 0,
         "aggregation": "head_mean", "statistic": 0.61, "p_value": 0.001},
        {"analysis_id": "A12", "test_id": "m|c|A12:planted:attention_L1_head_mean", "layer": 1,
         "aggregation": "head_mean", "statistic": 0.55, "p_value": 0.01},
        {"analysis_id": "A12", "test_id": "m|c|A12:planted:correlation", "aggregation": "none", "statistic": 0.9,
         "p_value": 1e-9},
        {"analysis_id": "A12", "test_id": "m|c|A12:planted:random", "aggregation": "none", "statistic": 0.49,
         "p_value": 0.7, "confirmatory": False},
    ], model="m", cell_type="c"))
    pf = pd.DataFrame({
        "perturbation": ["P1", "P2"] * 3,
        "method": ["attention"] * 2 + ["correlation"] * 2 + ["baseline_variance"] * 2,
        "layer": [0, 0, -1, -1, -1, -1],
        "aggregation": ["head_mean"] * 2 + ["none"] * 4,
        "auroc": [0.5, 0.7, 0.8, 0.9, 0.6, 0.7],
        "n_targets": 10, "n_positives": 3, "model": "m", "cell_type": "c",
    })
    return registry, pf


def test_context_summary_picks_best_variants():
    registry, pf = _inputs()
    (row,) = context_summary(registry, pf).to_dict("records")
    assert row["pf_best_attention"] == pytest.approx(0.6) and row["pf_correlation"] == pytest.approx(0.85)
    assert row["pf_best_baseline"] == pytest.approx(0.65)
    assert row["ref_best_attention"] == 0.61 and row["ref_correlation"] == 0.9 and row["ref_random"] == 0.49


def test_render_writes_markdown_and_plots(tmp_path):
    registry, pf = _inputs()
    path = render_report(registry, pf, tmp_path / "report", "abc123")
    text = path.read_text()
    assert "abc123" in text and "A12:planted:correlation" in text and "m|c|" not in text
    assert sorted(p.name for p in path.parent.glob("*.png")) == ["pf_auroc_by_method.png",
                                                                 "reference_auroc_by_layer.png"]
    assert "provisional" not in text


def test_report_states_its_partitions_and_that_q_values_are_provisional_while_some_are_missing(tmp_path):
    registry, pf = _inputs()
    coverage = pd.DataFrame({"partition": ["c|m", "c|m2", "d|m"], "status": ["complete", "partial", "missing"],
                             "missing_inputs": ["", "incremental_value", "every analysis"]})
    text = render_report(registry, pf, tmp_path / "report", "abc123", coverage=coverage).read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("Model x cell type partitions")]
    assert line == ("Model x cell type partitions in this report: `c|m` complete; partially evaluated: `c|m2`; "
                    "not evaluated yet: `d|m`.")
    (note,) = [line for line in text.splitlines() if "provisional" in line]
    assert "2 registered model x cell type partition(s) are missing from the registry or partly so" in note
    complete = coverage.iloc[:1]
    text = render_report(registry, pf, tmp_path / "complete", "abc123", coverage=complete).read_text()
    assert "provisional" not in text and "`c|m` complete." in text


def test_references_not_evaluable_have_a_section_with_their_reason_and_stay_out_of_the_a12_table(tmp_path):
    registry, pf = _inputs()
    note = "reference 'trrust' not evaluable: keeps 0 edges (minimum 10) in a universe of 290 genes"
    left_out = registry_rows([{"analysis_id": "A12", "test_id": "m|c|A12:trrust:not_evaluable",
                               "statistic_name": "not_evaluable", "n_positives": 0, "note": note}],
                             model="m", cell_type="c")
    text = render_report(apply_framework_bh(pd.concat([registry, left_out], ignore_index=True)), pf,
                         tmp_path / "report", "abc123").read_text()
    section = text.split("## References not evaluable")[1].split("\n## ")[0]
    assert f"| m | c | {note} |" in section
    a12_table = text.split("## A12: reference AUROC per layer")[1].split("\n## ")[0]
    assert "A12:planted:correlation" in a12_table and "not_evaluable" not in a12_table
    assert "## References not evaluable" not in render_report(registry, pf, tmp_path / "plain", "abc123").read_text()


@pytest.mark.parametrize(("panels", "shape"), [(1, (1, 1)), (2, (1, 2)), (6, (2, 4)), (20, (5, 4))])
def test_panels_are_laid_out_in_a_grid_at_most_four_wide(panels, shape):
    figure, axes = panel_grid(panels, (4.0, 3.0))
    try:
        grid = figure.axes[0].get_subplotspec().get_gridspec()
        assert (grid.nrows, grid.ncols) == shape and len(axes) == panels
        assert sum(axis.get_visible() for axis in figure.axes) == panels
        assert figure.get_size_inches()[0] <= 4 * 4.0  # a wide figure no longer grows with the panel count
    finally:
        plt.close(figure)


def test_intervention_rows_get_a_dose_response_plot_and_a25_a_section(tmp_path):
    registry, pf = _inputs()
    harm = [{"analysis_id": "A17", "test_id": f"m|c|A17:zero_heads:top_k_vs_random:k{k}:masked",
             "statistic": 0.1 * k, "effect": 0.05 * k, "p_value": 0.1} for k in (1, 2, 5)]
    untrained = [{"analysis_id": "A25", "test_id": "m|c|A25:attention_L0_head_mean_trained_vs_random_weights",
                  "statistic": 0.6, "effect": 0.1, "ci_low": 0.0, "ci_high": 0.2, "note": "descriptive"}]
    with_rows = apply_framework_bh(pd.concat([registry, registry_rows(harm + untrained, model="m", cell_type="c")],
                                             ignore_index=True))
    path = render_report(with_rows, pf, tmp_path / "report", "abc123")
    text = path.read_text()
    assert "![intervention dose response](intervention_dose_response.png)" in text
    assert "## A25: Trained checkpoint vs its random-weights twin" in text
    assert "A25:attention_L0_head_mean_trained_vs_random_weights" in text
    # a later report without intervention rows drops the plot rather than listing a stale one
    path = render_report(registry, pf, tmp_path / "report", "abc123")
    assert not (path.parent / "intervention_dose_response.png").exists() and "dose response" not in path.read_text()


def test_scaling_and_cssi_sections_plot_the_curves_and_the_gains_with_their_null_bands(tmp_path):
    registry, pf = _inputs()
    cssi = [{"analysis_id": "A21", "test_id": f"m|c|A21:planted:attention:{method}_k{k}:{aggregation}",
             "aggregation": aggregation, "statistic": 0.7, "effect": 0.01 * k, "ci_low": -0.02, "ci_high": 0.02,
             "p_value": 0.5} for method in ("kmeans", "leiden") for k in (2, 5) for aggregation in ("max", "range")]
    cssi.append({"analysis_id": "A21", "test_id": "m|c|A21:planted:attention:leiden_k5:max_pair_specific",
                 "aggregation": "max_pair_specific", "effect": 0.01, "p_value": 0.04, "confirmatory": True})
    trend = [{"analysis_id": "A20", "test_id": f"m|c|A20:planted:correlation:accrual:{name}", "p_value": 0.06}
             for name in ("f1_change", "f1_drops_while_auroc_rises")]
    curves = pd.DataFrame({"ladder": "accrual", "seed": [0, 0, 1, 1], "n_cells": [100, 200, 100, 200],
                           "n_strata": [1, 2, 1, 2], "score": "correlation", "reference": "planted",
                           "auroc": [0.7, 0.8, 0.72, 0.78], "f1": [0.4, 0.3, 0.42, 0.31], "model": "m",
                           "cell_type": "c"})
    with_rows = apply_framework_bh(pd.concat([registry, registry_rows(cssi + trend, model="m", cell_type="c")],
                                             ignore_index=True))
    text = render_report(with_rows, pf, tmp_path / "report", "abc123", scaling_curves=curves).read_text()
    assert "![cssi gains](cssi_gains.png)" in text and "![scaling curves](scaling_curves.png)" in text
    a21 = text.split("## A21:")[1].split("\n## ")[0]
    assert "kmeans_k5:max" in a21 and ":range" not in a21
    assert "leiden_k5:max_pair_specific" in a21
    a20 = text.split("## A20:")[1].split("\n## ")[0]
    assert "f1_drops_while_auroc_rises" in a20
    assert "accrual:f1_change" not in a20
    assert (tmp_path / "report" / "cssi_gains.png").stat().st_size > 0
    # without curves or CSSI rows the plots go, rather than a stale one being listed
    text = render_report(registry, pf, tmp_path / "report", "abc123").read_text()
    assert not (tmp_path / "report" / "scaling_curves.png").exists() and "cssi gains" not in text


def test_the_first_page_is_the_verdict_and_the_html_stands_alone(tmp_path):
    from scinterp_assets.core.verdict import Assessment, CRITERIA, FAIL, PASS, VERDICT, verdict_rows

    registry, pf = _inputs()
    passing = {name: Assessment(PASS, "meets it") for name in CRITERIA} | {VERDICT: Assessment(PASS, "all pass")}
    failing = {**passing, "C3_beyond_covariates_and_degree": Assessment(FAIL, "null z = 1.2 (<= 3)"),
               VERDICT: Assessment(FAIL, "fails C3_beyond_covariates_and_degree")}
    verdicts = pd.concat([verdict_rows("m", "c", passing), verdict_rows("n", "c", failing)], ignore_index=True)
    path = render_report(registry, pf, tmp_path / "report", "abc123", verdicts=verdicts, thresholds={"min_null_z": 3.0})
    text = path.read_text()
    first_page = text.split("## Verdict")[1].split("\n## ")[0]
    assert text.index("## Verdict") < text.index("## Summary per model")
    assert "| n | c | fail | pass | pass | fail | pass | C3: null z = 1.2 (<= 3) |" in first_page
    assert "| m | c | pass | pass | pass | pass | pass | all pass |" in first_page
    assert "min_null_z = 3.0" in first_page
    html = (tmp_path / "report" / "report.html").read_text()
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert html.count('src="data:image/png;base64,') == len(pngs) >= 2 and ".png\"" not in html
    assert "<table>" in html and "C3: null z = 1.2" in html
    assert pd.read_csv(tmp_path / "report" / "verdicts.csv")["status"].tolist() == verdicts["status"].tolist()
    assert len(pd.read_csv(tmp_path / "report" / "registry.csv")) == len(registry)
