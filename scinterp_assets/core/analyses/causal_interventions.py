"""Family C: causal interventions on a model (FRAMEWORK.md A17 head ablation, A18 orthogonal interventions,
A19 fidelity), read out on what the model computes rather than on re-extracted attention.

Conditions (`intervention_plan`, heads ranked by per-head reference AUROC, core/analyses/head_selection.py):
  A17  zero the top-k / bottom-k / entropy-matched / random-k heads, and all heads of the regulatory layer
       versus random layers
  A18  uniform attention (values kept) in the top-k / random-k heads, and the MLP block of the regulatory
       layer versus random layers
Each condition is evaluated (`evaluate_condition`, core/models/readouts.py) on held-out control cells by
  attention            the study's readout: the drop in mean PF AUROC of attention edges re-extracted at the
                      last layer under the intervention; it cannot change, by construction, for heads or MLP
                      blocks zeroed at or after that layer (`attention_can_change` False: such a row is not
                      tested, and targeted sets are ranked only among random sets that can change it)
  fidelity            maximum hidden-state and output cosine distance from the clean run (A19; a condition
                      that moves neither beyond `fidelity_threshold` "did not move the model")
  masked prediction   the mean increase over cells of the masked-gene loss (same seeded masks everywhere)
  in-silico response  the drop in mean PF AUROC of the model's predicted response to silencing each
                      perturbed gene, scored against the measured DE labels
Both harms are positive when the intervention hurts. A targeted condition is tested against the random
conditions of its size by the rank p-value (`head_selection.rank_p_value`), valid under the null that the
AUROC ranking says nothing about which heads matter. The rows are exploratory (confirmatory False): their
false-positive rate on null worlds is not measured yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from scinterp_assets.core.analyses.head_selection import (
    CLEAN,
    Condition,
    head_conditions,
    layer_conditions,
    rank_p_value,
)
from scinterp_assets.core.analyses.perturbation_prediction import (
    PerturbationFilter,
    evaluable_perturbations,
    per_perturbation_auroc,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet
from scinterp_assets.core.edges import NO_LAYER
from scinterp_assets.core.models.readouts import (
    Batching,
    ReadoutCell,
    ReadoutModel,
    fidelity,
    in_silico_response,
    masked_positions,
    masked_prediction,
    reextracted_attention,
)
from scinterp_assets.core.progress import Progress, no_progress

HARMS = {  # readout -> (column of the conditions table, what it measures)
    "masked_loss": ("masked_loss_increase", "mean increase over cells of the masked-gene loss"),
    "in_silico": ("in_silico_pf_auroc_drop", "drop of the mean PF AUROC of the in-silico response"),
    "attention": ("attention_pf_auroc_drop", "drop of the mean PF AUROC of attention edges re-extracted at the "
                                             "last layer (the study's readout)"),
}
CONDITION_COLUMNS = (
    "analysis_id", "condition", "k", "draw", "target", "intervention", "heads", "layers",
    "max_hidden_distance", "output_distance", "moved", "masked_loss", "masked_accuracy",
    "masked_loss_increase", "in_silico_pf_auroc", "in_silico_pf_auroc_drop", "n_perturbations",
    "attention_pf_auroc", "attention_pf_auroc_drop", "attention_n_perturbations", "attention_can_change",
)  # fmt: skip
CANNOT_CHANGE = ("cannot change by construction: every intervention zeroes heads or an MLP block at or after the "
                 "attention readout layer")
NO_SIGNAL_TO_LOSE = "a drop is no loss of signal"  # note of a readout whose clean PF AUROC is not above 0.5
DID_NOT_MOVE = "did not move the model (fidelity at or below the threshold): proves nothing"


@dataclass(frozen=True)
class InterventionSettings:
    ks: tuple[int, ...] = (5, 10, 20, 50)
    n_random_draws: int = 19  # the smallest rank p-value is 1 / (1 + draws)
    exhaustive_up_to: int = 64  # enumerate every other head set of a size when there are at most this many
    in_silico_cells: int | None = 20  # cells each perturbed gene is silenced in (None: every cell expressing it)
    masked_fraction: float = 0.15
    fidelity_threshold: float = 0.02
    seed: int = 0


@dataclass(frozen=True)
class InterventionInputs:
    """What every condition is evaluated on: held-out control cells, the universe genes with the model's
    token -> gene slot table, the perturbed genes inside the universe, and the DE labels with their rule."""

    cells: Sequence[ReadoutCell]
    genes: tuple[str, ...]
    slot_of_token: np.ndarray
    perturbed: tuple[str, ...]
    de_labels: pd.DataFrame
    rule: PerturbationFilter


def readout_perturbations(de_labels: pd.DataFrame, genes: Sequence[str], rule: PerturbationFilter) -> tuple[str, ...]:
    """The perturbed genes the in-silico readout silences: those PF AUROC can evaluate over `genes` (enough
    DE positives and negatives among them); silencing any other would cost forward passes for nothing."""
    return tuple(perturbation for perturbation, *_ in evaluable_perturbations(de_labels, pd.Index(list(genes)), rule))


def intervention_plan(head_auroc: np.ndarray, head_entropy: np.ndarray,
                      settings: InterventionSettings) -> list[tuple[str, Condition]]:  # fmt: skip
    """(analysis id, condition) of every condition to evaluate, the clean run first."""
    seeds = np.random.SeedSequence(settings.seed).spawn(4)
    draw_seed = [int(seed.generate_state(1)[0]) for seed in seeds]
    common = {"n_random_draws": settings.n_random_draws}
    exhaustive = {"exhaustive_up_to": settings.exhaustive_up_to}
    plan = [("clean", CLEAN)]
    plan += [("A17", c) for c in head_conditions(head_auroc, head_entropy, settings.ks, kind="zero_heads",
                                                 seed=draw_seed[0], **common, **exhaustive)]  # fmt: skip
    plan += [("A17", c) for c in layer_conditions(head_auroc, target="heads", seed=draw_seed[1], **common)]
    plan += [("A18", c) for c in head_conditions(head_auroc, head_entropy, settings.ks, kind="uniform_attention",
                                                 seed=draw_seed[2], **common, **exhaustive)
             if c.name in ("top_k", "random_k")]  # fmt: skip
    plan += [("A18", c) for c in layer_conditions(head_auroc, target="mlp", seed=draw_seed[3], **common)]
    return plan


def _mean_pf_auroc(inputs: InterventionInputs, response: np.ndarray, silenced: set[str]) -> tuple[float, int]:
    """Mean PF AUROC over the evaluable perturbations that were silenced in at least one cell (a gene no
    held-out cell expresses has no response: it is left out, not scored 0.5) of a (G, G) response matrix."""
    labels = inputs.de_labels[inputs.de_labels["perturbation"].isin(silenced)]
    table = per_perturbation_auroc(labels, list(inputs.genes),
                                   [ScoreSet("in_silico", NO_LAYER, "response", response)], inputs.rule)  # fmt: skip
    return (float(table["auroc"].mean()) if len(table) else float("nan")), len(table)


def evaluate_condition(model: ReadoutModel, inputs: InterventionInputs, analysis_id: str, condition: Condition,
                       settings: InterventionSettings, batching: Batching) -> tuple[dict, np.ndarray]:  # fmt: skip
    """One row of the conditions table (CONDITION_COLUMNS without the harms) and the per-cell masked loss."""
    index = {gene: slot for slot, gene in enumerate(inputs.genes)}
    perturbed = [index[gene] for gene in inputs.perturbed]
    positions = masked_positions(inputs.cells, settings.masked_fraction, settings.seed)
    masked = masked_prediction(model, inputs.cells, positions, condition.interventions, batching)
    response = in_silico_response(model, inputs.cells, inputs.slot_of_token, perturbed, len(inputs.genes),
                                  condition.interventions, batching, settings.in_silico_cells, settings.seed)  # fmt: skip
    matrix = np.full((len(inputs.genes), len(inputs.genes)), np.nan)
    matrix[perturbed] = response.mean()
    silenced = {inputs.genes[slot] for slot, met in zip(perturbed, response.counts.any(axis=1)) if met}
    pf_auroc, n_perturbations = _mean_pf_auroc(inputs, matrix, silenced)
    readout_layer = model.n_layers - 1
    attention = reextracted_attention(model, inputs.cells, inputs.slot_of_token, len(inputs.genes), readout_layer,
                                      condition.interventions, batching)
    observed = {inputs.genes[slot] for slot in perturbed if np.isfinite(attention[slot]).any()}
    attention_pf_auroc, attention_n_perturbations = _mean_pf_auroc(inputs, attention, observed)
    moved = fidelity(model, inputs.cells, condition.interventions, batching)
    accuracy = float(np.nanmean(masked.accuracy)) if not np.isnan(masked.accuracy).all() else float("nan")
    row = {
        "analysis_id": analysis_id, "condition": condition.name, "k": condition.k, "draw": condition.draw,
        "target": condition.target,
        "intervention": "+".join(sorted({i.kind for i in condition.interventions})) or "none",
        "heads": ";".join(f"L{layer}H{head}" for layer, head in condition.heads),
        "layers": ";".join(map(str, condition.layers)),
        "max_hidden_distance": moved.max_hidden_distance, "output_distance": moved.output_distance,
        "moved": moved.moved(settings.fidelity_threshold), "masked_loss": float(np.nanmean(masked.loss)),
        "masked_accuracy": accuracy, "in_silico_pf_auroc": pf_auroc, "n_perturbations": n_perturbations,
        "attention_pf_auroc": attention_pf_auroc, "attention_n_perturbations": attention_n_perturbations,
        "attention_can_change": any(i.changes_attention_at(readout_layer) for i in condition.interventions),
    }  # fmt: skip
    return row, masked.loss


def run_interventions(model: ReadoutModel, inputs: InterventionInputs, plan: Sequence[tuple[str, Condition]],
                      settings: InterventionSettings, batching: Batching,
                      progress: Progress = no_progress) -> pd.DataFrame:  # fmt: skip
    """The conditions table (CONDITION_COLUMNS): every condition of `plan` (`intervention_plan`, or a part of
    it that starts with the clean run) evaluated, harms against clean (the masked-loss increase is paired
    cell by cell)."""
    if not plan or plan[0][1] != CLEAN:
        raise ValueError("the plan must start with the clean run, which every harm is measured against")
    rows, clean_loss = [], None
    for done, (analysis_id, condition) in enumerate(plan):
        row, cell_loss = evaluate_condition(model, inputs, analysis_id, condition, settings, batching)
        clean_loss = cell_loss if clean_loss is None else clean_loss  # the plan starts with the clean run
        row["masked_loss_increase"] = float(np.nanmean(cell_loss - clean_loss))
        rows.append(row)
        progress(done + 1, len(plan), f"{analysis_id} {condition.label}")
    table = pd.DataFrame(rows, columns=list(CONDITION_COLUMNS))
    for readout in ("in_silico", "attention"):
        table[f"{readout}_pf_auroc_drop"] = table[f"{readout}_pf_auroc"].iloc[0] - table[f"{readout}_pf_auroc"]
    return table


def intervention_tests(conditions: pd.DataFrame, settings: InterventionSettings, caveats: Sequence[str] = ()) -> list[dict]:
    """Registry rows (family C) from the conditions table: per analysis, k and readout the top-k harm against
    the random-k harms (rank p-value), the regulatory layer against random layers (rank p-value), bottom-k
    and entropy-matched harms beside them and the top-k harm across k (descriptive: no p-value), and one A19
    fidelity row per condition. `caveats` are appended to every row's note (e.g. the ranking reference)."""
    rows: list[dict] = []
    intervened = conditions[conditions["analysis_id"] != "clean"]
    for (analysis_id, intervention, target), group in intervened.groupby(["analysis_id", "intervention", "target"], sort=True):
        for readout, (column, meaning) in HARMS.items():
            notes = [meaning]
            if readout != "masked_loss":
                clean_pf_auroc = float(conditions.iloc[0][f"{readout}_pf_auroc"])
                if not clean_pf_auroc > 0.5:
                    notes.append(f"the clean {readout} PF AUROC is {clean_pf_auroc:.3f}, not above 0.5: "
                                 f"{NO_SIGNAL_TO_LOSE}")  # fmt: skip
            head_sets = group[group["condition"].isin(["top_k", "random_k", "bottom_k", "entropy_matched_k"])]
            for k, at_k in head_sets.groupby("k"):
                random = _comparators(at_k[at_k["condition"] == "random_k"], column, readout)
                for name in ("top_k", "bottom_k", "entropy_matched_k"):
                    chosen = at_k[at_k["condition"] == name]
                    if not chosen.empty:
                        rows.append(_comparison_row(
                            analysis_id, f"{analysis_id}:{intervention}:{name}_vs_random:k{k}:{readout}", chosen.iloc[0],
                            random, column, [*notes, f"against {len(random)} other head sets of size {k}"],
                            tested=name == "top_k", readout=readout))  # fmt: skip
            layers = group[group["condition"].isin(["regulatory_layer", "random_layer"])]
            if not layers.empty:
                random = _comparators(layers[layers["condition"] == "random_layer"], column, readout)
                rows.append(_comparison_row(
                    analysis_id, f"{analysis_id}:{intervention}:{target}:regulatory_layer_vs_random:{readout}",
                    layers[layers["condition"] == "regulatory_layer"].iloc[0], random, column,
                    [*notes, f"against {len(random)} random layers: the smallest attainable p is 1/{len(random) + 1}"],
                    tested=True, readout=readout))  # fmt: skip
            top = group[group["condition"] == "top_k"].sort_values("k")
            if len(top) >= 3:  # nested top-k sets harm more as k grows whatever the heads carry: no p-value
                if readout == "attention" and not top["attention_can_change"].all():
                    notes = [*notes, f"{CANNOT_CHANGE} for k = {', '.join(map(str, top.loc[~top['attention_can_change'], 'k']))}"]
                rows.append({"analysis_id": analysis_id, "family": "C", "confirmatory": False,
                             "test_id": f"{analysis_id}:{intervention}:top_k_dose_response:{readout}",
                             "statistic_name": "spearman_rho_k_vs_harm",
                             "statistic": float(stats.spearmanr(top["k"], top[column]).statistic),
                             "effect_name": f"{column}_largest_minus_smallest_k",
                             "effect": float(top[column].iloc[-1] - top[column].iloc[0]), "n": len(top),
                             "note": "; ".join(["descriptive", *notes, f"top-k heads, k = {', '.join(map(str, top['k']))}"])})  # fmt: skip
    clean = conditions.iloc[0]
    for readout, meaning, counted in (
            ("in_silico", "the model's predicted response to silencing each perturbed gene", "n_perturbations"),
            ("attention", "attention edges re-extracted at the last layer", "attention_n_perturbations")):
        rows.append({"analysis_id": "A17", "family": "C", "confirmatory": False,
                     "test_id": f"A17:clean:{readout}_pf_auroc", "statistic_name": "mean_pf_auroc",
                     "statistic": float(clean[f"{readout}_pf_auroc"]), "n": int(clean[counted]),
                     "note": f"descriptive: PF AUROC of {meaning} against the measured DE labels, no intervention",
                     "negatives": "non-DE universe targets"})
    for _, condition in intervened.iterrows():
        label = _condition_label(condition)
        rows.append({"analysis_id": "A19", "family": "C", "confirmatory": False,
                     "test_id": f"A19:{condition['analysis_id']}:{condition['intervention']}:{label}",
                     "statistic_name": "max_hidden_cosine_distance", "statistic": float(condition["max_hidden_distance"]),
                     "effect_name": "output_cosine_distance", "effect": float(condition["output_distance"]),
                     "note": "descriptive" + ("" if condition["moved"] else f"; {DID_NOT_MOVE}")})  # fmt: skip
    for row in rows:
        row["note"] = "; ".join([row["note"], *caveats])
        layer_test = row["analysis_id"] != "A19" and "regulatory_layer" in row["test_id"]
        row.setdefault("negatives", "random layers" if layer_test else _NEGATIVES[row["analysis_id"]])
    return rows


_NEGATIVES = {"A17": "random head sets of the same size", "A18": "random head sets of the same size",
              "A19": "the clean run"}


def _comparators(random: pd.DataFrame, column: str, readout: str) -> np.ndarray:
    """The random conditions' harms a targeted condition is ranked among. For the attention readout only
    those that can change it: a random set at or after the readout layer has no harm by construction, and
    keeping it would make any targeted set that can change look harmful."""
    if readout == "attention":
        random = random[random["attention_can_change"]]
    return random[column].to_numpy(dtype=float)


def _condition_label(condition: pd.Series) -> str:
    draw = f"#{condition['draw']}" if str(condition["condition"]).startswith("random") else ""
    size = f"k{condition['k']}" if condition["target"] == "heads" and "layer" not in condition["condition"] else f"L{condition['layers']}"
    return f"{condition['condition']}{draw}:{size}:{condition['target']}"


def _comparison_row(analysis_id: str, test_id: str, chosen: pd.Series, random: np.ndarray, column: str,
                    notes: list[str], *, tested: bool, readout: str) -> dict:  # fmt: skip
    """A targeted condition's harm beside the random conditions' harms: the rank p-value when `tested`
    (top-k, regulatory layer), none for the descriptive comparisons (bottom-k, entropy-matched)."""
    harm, defined = float(chosen[column]), random[~np.isnan(random)]
    if readout == "attention" and not chosen["attention_can_change"]:
        tested = False  # a harm that is 0 by construction tests nothing
        notes = [*notes, CANNOT_CHANGE]
    elif tested and not defined.size:
        tested = False
        notes = [*notes, "no random condition to compare with (for the attention readout: none that can change it)"]
    notes = list(notes) if tested else ["descriptive", *notes]
    if not chosen["moved"]:
        notes.append(DID_NOT_MOVE)
    is_layer = chosen["condition"] in ("regulatory_layer", "random_layer")
    return {
        "analysis_id": analysis_id, "family": "C", "confirmatory": False, "test_id": test_id,
        "statistic_name": "harm", "statistic": harm, "effect_name": "harm_minus_mean_random_harm",
        "effect": harm - float(defined.mean()) if defined.size else float("nan"),
        "p_value": rank_p_value(harm, defined) if tested else float("nan"), "n": int(defined.size),
        "layer": int(chosen["layers"]) if is_layer else None, "note": "; ".join(notes),
    }  # fmt: skip
