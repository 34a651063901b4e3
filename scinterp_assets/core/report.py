"""The evaluation report: Markdown with PNG plots, from the test registry and PF AUROC tables."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.perturbation_prediction import ATTENTION_METHODS
from scinterp_assets.core.analyses.reference_structure import NOT_EVALUABLE
from scinterp_assets.core.analyses.scaling import PAIR_SPECIFIC, ladder_axis
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.verdict import VERDICT, first_page


PANEL_COLUMNS = 4  # panels per row: 2-20 model x cell type panels stay legible at the saved width


def panel_grid(n_panels: int, panel_size: tuple[float, float]):
    """(figure, the first n_panels axes, row-major) of a grid PANEL_COLUMNS wide; the unused axes hidden."""
    n = max(n_panels, 1)
    columns = min(n, PANEL_COLUMNS)
    rows = -(-n // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows), squeeze=False)
    flat = axes.ravel()
    for axis in flat[n_panels:]:
        axis.set_visible(False)
    return figure, list(flat[:n_panels])


def plot_reference_auroc_by_layer(registry: pd.DataFrame, path: Path) -> Path:
    """Per-layer reference AUROC (A12) for each model x cell type, with correlation and random as lines."""
    rows = registry[registry["analysis_id"] == "A12"]
    contexts = sorted(rows.groupby(["model", "cell_type"]).groups)
    figure, axes = panel_grid(len(contexts), (4.2, 3.4))
    for axis, (model, cell_type) in zip(axes, contexts):
        context = rows[(rows["model"] == model) & (rows["cell_type"] == cell_type)]
        attention = context[context["test_id"].str.contains("|".join(f":{m}_L" for m in ATTENTION_METHODS))]
        method = attention["test_id"].str.extract(r":([a-z_]+)_L\d+_", expand=False)
        for (name, aggregation), group in attention.groupby([method, attention["aggregation"]]):
            group = group.sort_values("layer")
            axis.plot(group["layer"].astype(int), group["statistic"], marker="o", label=f"{name} {aggregation}")
        for method, style in (("correlation", "--"), ("random", ":")):
            value = context.loc[context["test_id"].str.endswith(f":{method}"), "statistic"]
            if len(value):
                axis.axhline(float(value.iloc[0]), linestyle=style, color="grey" if method == "random" else "black",
                             label=method)
        axis.set_title(f"{model}\n{cell_type}", fontsize=9)
        axis.set_xticks(sorted(attention["layer"].dropna().astype(int).unique()))
        axis.set_xlabel("layer")
        axis.set_ylabel("reference AUROC")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_pf_auroc_by_method(pf_auroc: pd.DataFrame, path: Path) -> Path:
    """Box plot of per-perturbation AUROC per method (baselines vs edges), one panel per context."""
    contexts = sorted(pf_auroc.groupby(["model", "cell_type"]).groups)
    figure, axes = panel_grid(len(contexts), (5.2, 3.8))
    for axis, (model, cell_type) in zip(axes, contexts):
        context = pf_auroc[(pf_auroc["model"] == model) & (pf_auroc["cell_type"] == cell_type)]
        labels, values = [], []
        for (method, layer, aggregation), group in context.groupby(["method", "layer", "aggregation"], sort=True):
            labels.append(method if layer == NO_LAYER else f"{method} L{layer} {aggregation.replace('head_', '')}")
            values.append(group["auroc"].to_numpy())
        axis.boxplot(values, showfliers=False)
        axis.set_xticks(np.arange(1, len(labels) + 1), labels, rotation=60, ha="right", fontsize=7)
        axis.axhline(0.5, color="grey", linestyle=":")
        axis.set_ylabel("PF AUROC per perturbation")
        axis.set_title(f"{model}\n{cell_type}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


DOSE_RESPONSE = r"^(A1[78]):([a-z_]+):top_k_vs_random:k(\d+):([a-z_]+)$"  # test ids of the top-k rows


def panel_plot(rows: pd.DataFrame | None, keys: list[str], path: Path,
               draw: Callable[[plt.Axes, pd.DataFrame], None]) -> Path | None:
    """One panel per value of `keys` (model, cell type, then what else splits the panels; the title names
    them), drawn by draw(axis, the panel's rows) and given a legend; saved to `path`. None, and an earlier
    report's file removed (it would otherwise be listed with this one), when there are no rows."""
    if rows is None or rows.empty:
        path.unlink(missing_ok=True)
        return None
    panels = rows.groupby(keys, sort=True)
    figure, axes = panel_grid(panels.ngroups, (4.2, 3.4))
    for axis, (key, panel) in zip(axes, panels):
        draw(axis, panel)
        axis.set_title(f"{key[0]}\n{key[1]}: {', '.join(map(str, key[2:]))}", fontsize=9)
        axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_intervention_dose_response(registry: pd.DataFrame, path: Path) -> Path | None:
    """Harm of ablating the top-k reference-ranked heads, and the mean harm of random head sets of the same
    size (dashed), against k (A17 / A18): one panel per model x cell type and readout (their harms have
    different units), a line per analysis and intervention; None (no plot) where the registry holds no such
    rows."""
    test = registry["test_id"].str.split("|").str[-1]
    parts = test.str.extract(DOSE_RESPONSE)
    rows = registry.assign(analysis=parts[0], intervention=parts[1], k=pd.to_numeric(parts[2]),
                           readout=parts[3])[parts[0].notna()]

    def draw(axis: plt.Axes, panel: pd.DataFrame) -> None:
        for (analysis, intervention), line in panel.groupby(["analysis", "intervention"]):
            line = line.sort_values("k")
            drawn = axis.plot(line["k"], line["statistic"], marker="o", label=f"{analysis} {intervention}")
            axis.plot(line["k"], line["statistic"] - line["effect"], marker="x", linestyle="--",
                      color=drawn[0].get_color())  # the random head sets' mean harm
        axis.axhline(0, color="grey", linestyle=":")
        axis.set_xticks(sorted(panel["k"].unique()))
        axis.set_xlabel("heads ablated, k (x, dashed: random heads)")
        axis.set_ylabel(f"harm: {panel['readout'].iloc[0]}")

    return panel_plot(rows, ["model", "cell_type", "readout"], path, draw)


CSSI_MAX = r"^A21:([^:]+):([a-z_]+):(kmeans|leiden)_k(\d+):max$"  # CSSI-max rows of estimated strata


def plot_cssi_gains(registry: pd.DataFrame, path: Path) -> Path | None:
    """A21: CSSI-max AUROC gain over pooled against K, a line per strata method and score, each with its null
    band (random strata of the same sizes, shaded): one panel per model x cell type and reference; None (no
    plot) where the registry holds no such rows."""
    parts = registry["test_id"].str.split("|").str[-1].str.extract(CSSI_MAX)
    rows = registry.assign(reference=parts[0], score=parts[1], method=parts[2], k=pd.to_numeric(parts[3]))[
        parts[0].notna() & registry["effect"].notna()]

    def draw(axis: plt.Axes, panel: pd.DataFrame) -> None:
        for (method, score), line in panel.groupby(["method", "score"]):
            line = line.sort_values("k")
            drawn = axis.plot(line["k"], line["effect"], marker="o", label=f"{score}, {method}")
            axis.fill_between(line["k"], line["ci_low"], line["ci_high"], color=drawn[0].get_color(), alpha=0.15)
        axis.axhline(0, color="grey", linestyle=":")
        axis.set_xticks(sorted(panel["k"].unique()))
        axis.set_xlabel("strata, K (shaded: null band of random strata)")
        axis.set_ylabel("CSSI-max AUROC gain over pooled")

    return panel_plot(rows, ["model", "cell_type", "reference"], path, draw)


def plot_scaling_curves(curves: pd.DataFrame | None, path: Path) -> Path | None:
    """A20: AUROC (solid) and top-K F1 (dashed) against the number of cells (or strata, for the fixed-N
    ladder), mean over seeds, a line pair per score: one panel per model x cell type and ladder, against the
    partition's first reference by name (scaling_curves holds every reference); None where there are no
    curves."""
    if curves is not None and not curves.empty:
        curves = curves[curves["reference"] == curves.groupby(["model", "cell_type"])["reference"].transform("min")]

    def draw(axis: plt.Axes, panel: pd.DataFrame) -> None:
        x = ladder_axis(panel["ladder"].iloc[0])
        for score, line in panel.groupby("score"):
            mean = line.groupby(x)[["auroc", "f1"]].mean().reset_index()
            drawn = axis.plot(mean[x], mean["auroc"], marker="o", label=f"{score} AUROC")
            axis.plot(mean[x], mean["f1"], marker="x", linestyle="--", color=drawn[0].get_color(),
                      label=f"{score} F1")
        axis.set_xlabel("strata (N fixed)" if x == "n_strata" else "cells")
        axis.set_ylabel("recovery (mean over seeds)")

    return panel_plot(curves, ["model", "cell_type", "ladder", "reference"], path, draw)


def _table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(_cell(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.3g}"
    return "" if value is pd.NA or value is None else str(value)


def context_summary(registry: pd.DataFrame, pf_auroc: pd.DataFrame) -> pd.DataFrame:
    """One row per model x cell type: mean PF AUROC of the best attention-derived variant (probability or
    value-weighted), correlation and the best
    gene-level baseline, and the reference AUROC of the best attention layer, correlation and random.

    "Best" is picked on the same data, so it is descriptive only (FRAMEWORK section 4: layer choice needs
    nested cross-validation before it may be reported as a result)."""
    means = pf_auroc.groupby(["model", "cell_type", "method", "layer", "aggregation"])["auroc"].mean().reset_index()
    reference = registry[registry["analysis_id"] == "A12"].assign(test=lambda f: f["test_id"].str.split(":").str[-1])
    rows = []
    for (model, cell_type), context in means.groupby(["model", "cell_type"]):
        in_context = reference[(reference["model"] == model) & (reference["cell_type"] == cell_type)]
        rows.append({
            "model": model,
            "cell_type": cell_type,
            "pf_best_attention": context.loc[context["method"].isin(ATTENTION_METHODS), "auroc"].max(),
            "pf_correlation": context.loc[context["method"] == "correlation", "auroc"].max(),
            "pf_best_baseline": context.loc[context["method"].str.startswith("baseline_"), "auroc"].max(),
            "ref_best_attention": in_context.loc[in_context["test"].str.startswith(ATTENTION_METHODS), "statistic"].max(),
            "ref_correlation": in_context.loc[in_context["test"] == "correlation", "statistic"].max(),
            "ref_random": in_context.loc[in_context["test"] == "random", "statistic"].max(),
        })
    return pd.DataFrame(rows)


# Analyses beyond A01/A04/A12 (which have sections of their own), in FRAMEWORK order, with their titles.
ANALYSIS_SECTIONS = {
    "A02": "Layer selection by nested cross-validation over perturbations",
    "A03": "Parameter sensitivity grid",
    "A05": "Incremental value of edge scores over gene-level features",
    "A06": "Incremental value under harder splits (by target, joint)",
    "A07": "How much of each edge score gene-level features explain",
    "A08": "Propensity-matched comparison",
    "A09": "Cross-fitted residualisation",
    "A10": "Degree-preserving null decomposition",
    "A11": "Direction-restricted sensitivity",
    "A13": "Partial correlation controlling for co-expression",
    "A14": "Top-k enrichment",
    "A15": "Per-TF analysis, TF-block bootstrap and leave-one-TF-out",
    "A16": "Attention vs co-expression mapping",
    "A17": "Head ablation and uniform attention (causal interventions)",
    "A18": "MLP knock-outs at the regulatory layers",
    "A19": "Fidelity: how far each intervention moved the model",
    "A20": "Scaling: edge recovery versus the number of cells",
    "A21": "Cell-State Stratified Interpretability (CSSI)",
    "A22": "HVG-protocol confound (forced perturbed genes vs plain HVGs)",
    "A25": "Trained checkpoint vs its random-weights twin (untrained reference)",
}
ANALYSIS_COLUMNS = ["model", "cell_type", "test", "statistic_name", "statistic", "effect", "ci_low", "ci_high",
                    "p_value", "q_value", "confirmatory", "note"]
# analyses whose section shows a subset of their rows (the registry holds them all): (which, rows)
SECTION_ROWS = {
    "A20": ('the study\'s "F1 drops while AUROC rises" test per ladder',
            lambda rows: rows["test"].str.endswith(":f1_drops_while_auroc_rises")),
    "A21": ("CSSI-max of raw scores and the confirmatory CSSI-max of pair-specific attention (the other "
            "aggregations are in the registry)", lambda rows: rows["aggregation"].isin(["max", PAIR_SPECIFIC])),
}


def _not_evaluable_section(registry: pd.DataFrame) -> list[str]:
    rows = registry[registry["statistic_name"] == NOT_EVALUABLE]
    if not len(rows):
        return []
    return ["## References not evaluable", "",
            "Left out of every reference analysis of that model and cell type; the other references proceed.", "",
            _table(rows[["model", "cell_type", "note"]]), ""]


def _coverage_lines(coverage: pd.DataFrame | None) -> list[str]:
    """What the registry behind this report holds (registry COVERAGE_COLUMNS), and whether its q-values are
    provisional."""
    if coverage is None:
        return []
    listed = {status: ", ".join(f"`{key}`" for key in coverage.loc[coverage["status"] == status, "partition"])
              for status in ("complete", "partial", "missing")}
    lines = [f"Model x cell type partitions in this report: {listed['complete'] or 'none'} complete"
             + (f"; partially evaluated: {listed['partial']}" if listed["partial"] else "")
             + (f"; not evaluated yet: {listed['missing']}" if listed["missing"] else "") + ".", ""]
    incomplete = int((coverage["status"] != "complete").sum())
    if incomplete:
        lines += [f"**The q-values are provisional**: {incomplete} registered model x cell type partition(s) are "
                  "missing from the registry or partly so; the framework-wide BH q-values will change once they "
                  "are materialised (adding a model or a cell type changes every q-value: they are computed over "
                  "all confirmatory tests together).", ""]
    return lines


def _verdict_lines(verdicts: pd.DataFrame | None, thresholds: dict | None) -> list[str]:
    """The first page: the verdict of every model x cell type with a one-line reason, and how to read it."""
    if verdicts is None or verdicts.empty:
        return ["## Verdict", "", "No QC verdict yet: materialise `qc_verdict` for the model x cell type partitions.", ""]
    lines = [
        "## Verdict: does the model's attention carry regulatory signal beyond co-expression?", "",
        "A model passes in a cell type only if all four quality-control criteria of FRAMEWORK.md section 8 hold "
        "on one edge score (a layer and aggregation of its attention): **C1** it beats every gene-level "
        "baseline at predicting which genes a perturbation changes; **C2** it adds to the gene-level features in "
        "every model and split; **C3** its agreement with the reference network survives removing the "
        "genes' expression features and a degree-preserving null; **C4** ablating the heads it comes from harms "
        "the model's own prediction of what a perturbation does, not less with more heads, and at least as much "
        "as random heads. "
        "*not evaluable*: an input the criterion needs was not run or its data contract failed; never a pass.",
        "",
        _table(first_page(verdicts)),
        "",
    ]
    if thresholds:
        lines += ["Thresholds: " + "; ".join(f"{name} = {value}" for name, value in thresholds.items()) + ".", ""]
    detail = verdicts[verdicts["criterion"] != VERDICT][["model", "cell_type", "criterion", "status", "edge_score",
                                                          "statistic", "bound", "threshold", "reason"]]
    return lines + ["### Every criterion with its evidence", "",
                    "statistic / bound: C1 smallest edge-minus-baseline PF AUROC difference / largest q; C2 smallest "
                    "delta / smallest lower bound; C3 smallest retained share / smallest null z; C4 smallest harm "
                    "beyond random heads / smallest hidden-state distance. `verdicts.csv` lists the registry test "
                    "ids and q-values each rests on.", "", _table(detail), ""]


def _forest_rows(registry: pd.DataFrame) -> pd.DataFrame:
    """The confirmatory incremental-value rows (A05/A06) with their intervals, for the forest plot."""
    rows = registry[registry["analysis_id"].isin(["A05", "A06"]) & registry["confirmatory"]]
    parts = rows["test_id"].str.split("|").str[-1].str.split(":")
    return rows.assign(arm=parts.str[1] + " / " + parts.str[2].str.replace("_split", ""), score=parts.str[3])


def plot_incremental_value(registry: pd.DataFrame, path: Path) -> Path | None:
    """A05/A06: delta (gene + edge minus gene only) with its interval for every confirmatory score and arm,
    one panel per model x cell type and arm; None where there are none."""
    def draw(axis: plt.Axes, panel: pd.DataFrame) -> None:
        panel = panel.sort_values("score")
        y = np.arange(len(panel))
        axis.errorbar(panel["effect"], y, xerr=[panel["effect"] - panel["ci_low"], panel["ci_high"] - panel["effect"]],
                      fmt="o", markersize=3, label="delta, interval")
        axis.set_yticks(y, panel["score"], fontsize=6)
        axis.axvline(0, color="grey", linestyle=":")
        axis.set_xlabel("delta per-perturbation AUROC over gene-only")

    return panel_plot(_forest_rows(registry), ["model", "cell_type", "arm"], path, draw)


def write_html(markdown_path: Path) -> Path:
    """report.html beside the Markdown: the same text, its PNG plots embedded as data URIs, so the one file
    opens offline from a file path and can be mailed."""
    from markdown_it import MarkdownIt

    def embed(match: re.Match) -> str:
        image = markdown_path.parent / match.group(2)
        if not image.is_file():
            return match.group(0)
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", embed, markdown_path.read_text())
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    html = markdown_path.with_suffix(".html")
    html.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>scinterp evaluation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; line-height: 1.4; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
img {{ max-width: 100%; }}
</style></head><body>
{body}
</body></html>
""")
    return html


def render_report(registry: pd.DataFrame, pf_auroc: pd.DataFrame, out_dir: Path, config_fingerprint: str,
                  tables: dict[str, pd.DataFrame] | None = None, coverage: pd.DataFrame | None = None,
                  scaling_curves: pd.DataFrame | None = None, verdicts: pd.DataFrame | None = None,
                  thresholds: dict | None = None) -> Path:
    """Write report.md, report.html (self-contained), their PNG plots, registry.csv and verdicts.csv into
    out_dir; return the Markdown path.

    First page: the QC verdict of every model x cell type (`verdicts`, core/verdict.VERDICT_COLUMNS, with the
    `thresholds` it used). Then the summary per context, the framework `tables` (title -> frame: the
    cross-context table, the family sensitivity), the per-layer reference curves, the baseline ladder, the
    incremental-value intervals, the ablation dose-response, the A20 scaling curves and A21 CSSI gains. Every
    analysis's registry rows follow in an appendix, and the whole registry is registry.csv. `coverage`: the
    registry's coverage table (registry COVERAGE_COLUMNS); the header lists the partitions and, while some
    are partial or missing, says the q-values are provisional. `scaling_curves`: A20's recovery per rung of
    the partitions the registry holds (model and cell_type columns)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reference_plot = plot_reference_auroc_by_layer(registry, out_dir / "reference_auroc_by_layer.png")
    pf_plot = plot_pf_auroc_by_method(pf_auroc, out_dir / "pf_auroc_by_method.png")
    plots = {"A05": plot_incremental_value(registry, out_dir / "incremental_value.png"),
             "A17": plot_intervention_dose_response(registry, out_dir / "intervention_dose_response.png"),
             "A20": plot_scaling_curves(scaling_curves, out_dir / "scaling_curves.png"),
             "A21": plot_cssi_gains(registry, out_dir / "cssi_gains.png")}
    summary = (
        pf_auroc.groupby(["model", "cell_type", "method", "layer", "aggregation"])["auroc"]
        .agg(["mean", "count"]).reset_index().rename(columns={"mean": "mean_pf_auroc", "count": "perturbations"})
    )
    registry.to_csv(out_dir / "registry.csv", index=False)
    if verdicts is not None:
        verdicts.to_csv(out_dir / "verdicts.csv", index=False)
    # test ids start with "model|cell_type|", which the tables show in their own columns
    registry = registry.assign(test=registry["test_id"].str.split("|").str[-1])
    confirmatory = registry[registry["confirmatory"]].sort_values("q_value")
    lines = [
        "# scinterp evaluation report",
        "",
        f"Configuration fingerprint `{config_fingerprint}`; {len(registry)} registry rows (registry.csv), "
        f"{int(registry['confirmatory'].sum())} confirmatory, "
        f"{int((confirmatory['q_value'] < 0.05).sum())} significant at framework-wide BH q < 0.05.",
        "",
        *_coverage_lines(coverage),
        *_verdict_lines(verdicts, thresholds),
        "## Summary per model and cell type (descriptive: best variants picked on the same data)",
        "",
        _table(context_summary(registry, pf_auroc)),
        "",
        *_not_evaluable_section(registry),
    ]
    for title, frame in (tables or {}).items():
        lines += [f"## {title}", "", _table(frame) if len(frame) else "(empty)", ""]
    lines += [
        "## Reference structure (A12): per-layer AUROC against the reference network",
        "",
        f"![reference AUROC by layer]({reference_plot.name})",
        "",
        "## Perturbation prediction (A01, A04): PF AUROC, edges vs gene-level baselines",
        "",
        f"![PF AUROC by method]({pf_plot.name})",
        "",
        _table(summary),
        "",
    ]
    figures = {"A05": "Incremental value (A05, A06): delta with its interval, every confirmatory score",
               "A17": "Ablation dose-response (A17, A18)", "A20": "Scaling (A20): recovery versus cells",
               "A21": "CSSI (A21): stratified gain over pooled, with null bands"}
    for analysis_id, title in figures.items():
        if plots[analysis_id]:
            lines += [f"## {title}", "", f"![{plots[analysis_id].stem.replace('_', ' ')}]({plots[analysis_id].name})", ""]
    lines += ["# Appendix: registry rows per analysis", "",
              "Every row of the registry is in registry.csv; the tables below are the rows of each analysis.", "",
              "## A12: reference AUROC per layer", "",
              _table(registry.loc[(registry["analysis_id"] == "A12") & (registry["statistic_name"] != NOT_EVALUABLE),
                                  ["model", "cell_type", "test", "statistic", "p_value", "q_value", "n_positives"]]),
              ""]
    for analysis_id, title in ANALYSIS_SECTIONS.items():
        rows = registry[registry["analysis_id"] == analysis_id]
        if len(rows):
            shown = []
            if analysis_id in SECTION_ROWS:
                which, keep = SECTION_ROWS[analysis_id]
                rows = rows[keep(rows)]
                shown += [f"Rows shown: {which}.", ""]
            lines += [f"## {analysis_id}: {title}", "", *shown, _table(rows[ANALYSIS_COLUMNS]), ""]
    lines += [
        "## Confirmatory tests (framework-wide BH)",
        "",
        _table(confirmatory[["model", "cell_type", "test", "effect", "p_value", "q_value", "n"]]),
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    write_html(path)
    return path
