"""The quality-control verdict of FRAMEWORK.md section 8, read from the test registry alone.

A model's edges in a context (model x cell type) pass as "regulatory signal beyond co-expression" only if
all four criteria hold:

C1  An edge score beats every gene-level baseline (variance, mean, detection rate = 1 - dropout) on PF
    AUROC: each A04 row "<baseline>_vs_<edge score>" has a negative difference (baseline - edge) at
    framework-wide BH q < alpha.
C2  Incremental value: for every required model (logistic, boosted) and split (perturbation, target,
    joint) the confirmatory A05/A06 row of the edge score has delta > 0 and a lower interval bound > 0, and
    the descriptive AUPRC and top-k recall deltas of the same arm ("flexible" rows) are positive too.
C3  Beyond gene-level covariates and degree: for every reference with a degree-preserving null (one whose
    rows are missing, or whose null barely moves, makes the score not evaluable), the cross-fitted OLS
    residual keeps >= min_retained_share of the above-chance reference AUROC (A09
    "<resource>:<score>:ols", effect; the raw A12 AUROC above 0.5), the null gives z > min_null_z (A10),
    and, where the calibrated beyond-features test exists (A09 "...:beyond_features"), it rejects at BH
    q < alpha with a positive delta. That last requirement is this platform's addition: the
    retained share has no calibrated test of its own.
C4  Causal heads (A17, zero the top-k reference-ranked heads): each required readout (by default the
    model's in-silico perturbation response, scored against the measured DE calls: the regulatory readout)
    is degraded (harm > 0 at the largest k; a clean readout at chance has nothing to lose and fails), at
    every k at least as much as the mean of random head sets of the same size, and not less as k grows
    (needs two or more k); every top-k ablation moved the model (A19 hidden-state cosine distance >
    fidelity threshold). FRAMEWORK says "every intervention": the random, bottom-k and layer controls are
    held to it nowhere here, since a random head may rightly do nothing; the ablations the criterion rests
    on are. causal_readouts may add masked-gene reconstruction (what the heads do for the model's training
    objective, which a regulatory head need not serve) and the study's re-extracted attention (counted only
    where an ablation can change it: it reads attention, not what the model does with it, and cannot see
    heads at or after its own layer).

Edge scores are the model's own: attention-derived score sets ("attention_*", "value_weighted_*"), every
layer and aggregation. C1-C3 each list the scores that pass; the verdict passes only when one score passes
all three (a layer chosen per criterion would be a choice made on the data) and C4 passes.

Rows are found by their test ids, not their `confirmatory` flag, so a random-weights twin (whose rows are
descriptive, outside the BH family) is judged wherever no q-value is needed; where one is, it is not
evaluable unless its point estimate already fails.

Statuses: "pass"; "fail" (the evidence is there and does not meet the standard); "not evaluable" (a
registry row a criterion needs is missing, e.g. the boosted arm was not run, or too few k for a trend, or
the context's data-contract preconditions failed). A criterion never passes on missing inputs; the
verdict fails when any criterion fails, and is not evaluable when none fails but one is not evaluable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scinterp_assets.core.analyses.causal_interventions import CANNOT_CHANGE, NO_SIGNAL_TO_LOSE
from scinterp_assets.core.analyses.incremental_value import MODELS, SPLIT_ANALYSIS, SPLITS
from scinterp_assets.core.analyses.perturbation_prediction import ATTENTION_METHODS
from scinterp_assets.core.analyses.reference_nulls_analysis import NULL_CANNOT_TEST
from scinterp_assets.core.analyses.reference_structure import NOT_EVALUABLE as REFERENCE_NOT_EVALUABLE
from scinterp_assets.core.analyses.score_sets import BASELINE_PREFIX

PASS, FAIL, NOT_EVALUABLE = "pass", "fail", "not evaluable"
CRITERIA: dict[str, str] = {
    "C1_beats_gene_baselines": "edges beat every gene-level baseline on PF AUROC (A04)",
    "C2_incremental_value": "edges add to gene-level features in every model and split (A05, A06)",
    "C3_beyond_covariates_and_degree": "reference signal survives residualisation and the degree-preserving null (A09, A10)",
    "C4_causal_heads": "ablating the top reference heads harms the outputs, dose-dependently, beyond random heads (A17, A19)",
}
VERDICT = "verdict"  # the criterion name of each context's overall row
VERDICT_COLUMNS: tuple[str, ...] = ("model", "cell_type", "criterion", "status", "reason", "edge_score",
                                    "statistic", "bound", "threshold", "test_ids", "q_values")
REQUIRED_BASELINES = ("baseline_variance", "baseline_mean", "baseline_detection_rate")
_TOP_K = re.compile(r"^A17:zero_heads:top_k_vs_random:k(\d+):([a-z_]+)$")
_TOP_K_FIDELITY = re.compile(r"^A19:A17:zero_heads:top_k:k(\d+):heads$")


@dataclass(frozen=True)
class VerdictThresholds:
    """Every number the verdict compares against (configuration section `verdict`, recorded with it)."""

    alpha: float = 0.05
    baselines: tuple[str, ...] = REQUIRED_BASELINES
    incremental_models: tuple[str, ...] = MODELS
    incremental_splits: tuple[str, ...] = SPLITS
    agreeing_metrics: tuple[str, ...] = ("auprc", "recall_at_10", "recall_at_50", "recall_at_100")
    min_retained_share: float = 0.8
    min_null_z: float = 3.0
    fidelity_threshold: float = 0.02
    causal_readouts: tuple[str, ...] = ("in_silico",)

    def record(self) -> dict:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in vars(self).items()}


@dataclass(frozen=True)
class Assessment:
    """One criterion in one context. `scores`: the edge scores that pass it (C1-C3; empty for C4)."""

    status: str
    reason: str
    edge_score: str | None = None
    statistic: float = np.nan
    bound: float = np.nan
    threshold: float = np.nan
    test_ids: tuple[str, ...] = ()
    q_values: tuple[float, ...] = ()
    scores: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class _Candidate:
    """One edge score's assessment under a criterion: passes, or why not (with `evaluable` False when a
    required row is missing), and how close it came (`rank`: lower is closer)."""

    score: str
    passes: bool
    evaluable: bool
    reason: str
    rank: float
    statistic: float = np.nan
    bound: float = np.nan
    rows: tuple = ()


def _local(test_ids: pd.Series) -> pd.Series:
    """Test ids without their "model|cell_type|" prefix."""
    return test_ids.astype(str).str.split("|").str[-1]


def _edge_scores(names: Iterable[str]) -> list[str]:
    return sorted({name for name in names if name.startswith(tuple(f"{method}_" for method in ATTENTION_METHODS))})


def _q(row: pd.Series) -> float:
    return float(row["q_value"]) if pd.notna(row["q_value"]) else np.nan


def _choose(candidates: Sequence[_Candidate], threshold: float, nothing: str) -> Assessment:
    """The criterion's assessment from its per-score candidates: pass when any score passes (evidence: the
    best passing one); not evaluable when none passes and some score could not be judged (it might have
    passed); fail when every score was judged and failed (evidence: the closest one)."""
    if not candidates:
        return Assessment(NOT_EVALUABLE, nothing, threshold=threshold)
    passing = [c for c in candidates if c.passes]
    open_ = [c for c in candidates if not c.evaluable]
    pool = passing or open_ or list(candidates)
    best = min(pool, key=lambda c: (c.rank, c.score))
    status = PASS if passing else NOT_EVALUABLE if open_ else FAIL
    reason = (f"{len(passing)} of {len(candidates)} edge scores pass; shown: {best.score}" if passing
              else f"{len(open_)} of {len(candidates)} edge scores cannot be judged; {best.score}: {best.reason}"
              if open_ else f"no edge score passes; closest, {best.score}: {best.reason}")
    return Assessment(status, reason, best.score, best.statistic, best.bound, threshold,
                      tuple(str(r["test_id"]) for r in best.rows), tuple(_q(r) for r in best.rows),
                      frozenset(c.score for c in passing))


def beats_gene_baselines(context: pd.DataFrame, thresholds: VerdictThresholds) -> Assessment:
    """C1 (module docstring). statistic: the smallest edge-minus-baseline mean PF AUROC difference over the
    baselines; bound: the largest q."""
    rows = context[(context["analysis_id"] == "A04")]
    local = _local(rows["test_id"]).str.removeprefix("A04:").str.split("_vs_", n=1)
    rows = rows.assign(baseline=local.str[0], edge=local.str[1])  # the study's Wilcoxon rows end ":study_wilcoxon"
    rows = rows[rows["baseline"].str.startswith(BASELINE_PREFIX) & ~rows["edge"].str.contains(":", na=True)]
    candidates = []
    for score in _edge_scores(rows["edge"]):
        mine = rows[rows["edge"] == score].set_index("baseline")
        missing = [b for b in thresholds.baselines if b not in mine.index]
        if missing:
            candidates.append(_Candidate(score, False, False, f"no A04 row against {', '.join(missing)}", np.inf))
            continue
        compared = [mine.loc[b] for b in thresholds.baselines]
        margins = [-float(r["effect"]) for r in compared]  # edge - baseline
        qs = [_q(r) for r in compared]
        beaten = [m > 0 and q < thresholds.alpha for m, q in zip(margins, qs)]
        worst = min(range(len(compared)), key=lambda i: (beaten[i], margins[i]))  # a baseline not beaten first
        verdict = "does better" if margins[worst] <= 0 else f"is not beaten at q < {thresholds.alpha:g}"
        reason = f"{compared[worst].name} {verdict} (edge - baseline {margins[worst]:+.3f}, q = {qs[worst]:.2g})"
        # a row outside the confirmatory family (a random-weights twin's) has no q: only a baseline the edge
        # score does not even exceed settles it
        judged = min(margins) <= 0 or not np.isnan(qs).any()
        if not judged:
            reason = "no q-value: these rows are outside the confirmatory family (e.g. a random-weights twin's)"
        candidates.append(_Candidate(score, all(beaten), judged, reason, -min(margins), min(margins), max(qs),
                                     tuple(compared)))
    return _choose(candidates, thresholds.alpha, "no A04 comparison of an edge score with the gene-level baselines")


def incremental_value(context: pd.DataFrame, thresholds: VerdictThresholds) -> Assessment:
    """C2 (module docstring). statistic: the smallest delta; bound: the smallest lower interval bound."""
    rows = context[context["analysis_id"].isin(["A05", "A06"])].assign(local=lambda f: _local(f["test_id"]))
    by_id = rows.set_index("local")
    arms_form = rows["local"].str.split(":")  # the confirmatory form is "<A>:<model>:<split>:<score>"
    candidates = []
    for score in _edge_scores(arms_form[arms_form.str.len() == 4].str[3]):
        arms, missing, failures = [], [], []
        for model in thresholds.incremental_models:
            for split in thresholds.incremental_splits:
                prefix = f"{SPLIT_ANALYSIS[split]}:{model}:{split}"
                if f"{prefix}:{score}" not in by_id.index:
                    missing.append(f"{model} / {split}")
                    continue
                arm = by_id.loc[f"{prefix}:{score}"]
                arms.append(arm)
                if not (arm["effect"] > 0 and arm["ci_low"] > 0):
                    failures.append(f"{model} / {split}: delta {arm['effect']:+.3f}, lower bound {arm['ci_low']:+.3f}")
                for metric in thresholds.agreeing_metrics:
                    agreeing = f"{prefix}:flexible:{score}:{metric}"
                    if agreeing not in by_id.index:
                        missing.append(f"{model} / {split} {metric}")
                    elif not by_id.loc[agreeing, "effect"] > 0:
                        failures.append(f"{model} / {split}: {metric} delta {by_id.loc[agreeing, 'effect']:+.3f} disagrees")
        deltas = [float(arm["effect"]) for arm in arms]
        lows = [float(arm["ci_low"]) for arm in arms]
        if failures or not arms:
            candidates.append(_Candidate(score, False, bool(failures), "; ".join(failures) or "no arm was run",
                                         -min(lows, default=-np.inf),
                                         min(deltas, default=np.nan), min(lows, default=np.nan), tuple(arms)))
        elif missing:
            candidates.append(_Candidate(
                score, False, False, f"not in the registry: {', '.join(missing)} (settings analyses.incremental_value_models "
                f"and analyses.incremental_value_splits; verdict.agreeing_metrics)", -min(lows), min(deltas), min(lows),
                tuple(arms)))
        else:
            candidates.append(_Candidate(score, True, True, "", -min(lows), min(deltas), min(lows), tuple(arms)))
    return _choose(candidates, 0.0, "no confirmatory A05/A06 row of an edge score")


def beyond_covariates_and_degree(context: pd.DataFrame, thresholds: VerdictThresholds) -> Assessment:
    """C3 (module docstring), over every reference with an A10 row. statistic: the smallest retained share;
    bound: the smallest null z."""
    rows = context[context["analysis_id"].isin(["A09", "A10", "A12"])].assign(local=lambda f: _local(f["test_id"]))
    by_id = rows.set_index("local")
    nulls = rows[rows["analysis_id"] == "A10"]["local"].str.split(":")
    candidates = []
    for score in _edge_scores(nulls.str[2]):
        used, failures, unevaluable, shares, zs = [], [], [], [], []
        for resource in sorted(nulls[nulls.str[2] == score].str[1]):
            null = by_id.loc[f"A10:{resource}:{score}"]
            residual_id, raw_id = f"A09:{resource}:{score}:ols", f"A12:{resource}:{score}"
            if residual_id not in by_id.index or raw_id not in by_id.index:
                unevaluable.append(f"{resource}: no {'A09 OLS' if residual_id not in by_id.index else 'A12'} row")
                continue
            if NULL_CANNOT_TEST in str(null["note"]):
                unevaluable.append(f"{resource}: the degree-preserving null barely moves")
                continue
            residual, raw = by_id.loc[residual_id], by_id.loc[raw_id]
            used += [raw, residual, null]
            share, z = float(residual["effect"]), float(null["statistic"])
            shares.append(share if raw["statistic"] > 0.5 else -np.inf)
            zs.append(z)
            if not raw["statistic"] > 0.5:
                failures.append(f"{resource}: reference AUROC {raw['statistic']:.3f} is not above chance")
            elif not share >= thresholds.min_retained_share:
                failures.append(f"{resource}: residual keeps {share:.0%} of the above-chance AUROC "
                                f"(< {thresholds.min_retained_share:.0%})")
            if not z > thresholds.min_null_z:
                failures.append(f"{resource}: degree-preserving null z = {z:.2f} (<= {thresholds.min_null_z:g})")
            beyond_id = f"A09:{resource}:{score}:beyond_features"
            if beyond_id in by_id.index:
                beyond = by_id.loc[beyond_id]
                used.append(beyond)
                if not beyond["effect"] > 0 or _q(beyond) >= thresholds.alpha:
                    failures.append(f"{resource}: beyond-features delta {beyond['effect']:+.3f}, q = {_q(beyond):.2g}")
                elif np.isnan(_q(beyond)):
                    unevaluable.append(f"{resource}: the beyond-features row has no q-value (outside the "
                                       "confirmatory family)")
        statistic, bound = min(shares, default=np.nan), min(zs, default=np.nan)
        if failures:
            candidates.append(_Candidate(score, False, True, "; ".join(failures), -bound, statistic, bound, tuple(used)))
        elif unevaluable or not shares:
            candidates.append(_Candidate(score, False, False, "; ".join(unevaluable) + " (drop the reference from the "
                                         "cell type's references, or fix its null: reference_null)", np.inf))
        else:
            candidates.append(_Candidate(score, True, True, "", -bound, statistic, bound, tuple(used)))
    return _choose(candidates, thresholds.min_retained_share,
                   "no degree-preserving null row (A10) of an edge score: no reference with null draws")


def causal_heads(context: pd.DataFrame, thresholds: VerdictThresholds) -> Assessment:
    """C4 (module docstring). statistic: the smallest top-k harm minus mean random harm over k and output
    readouts; bound: the smallest A19 hidden-state distance of a top-k ablation."""
    rows = context[context["analysis_id"].isin(["A17", "A19"])].assign(local=lambda f: _local(f["test_id"]))
    top = rows["local"].str.extract(_TOP_K)
    harms = rows.assign(k=pd.to_numeric(top[0]).astype("Int64"), readout=top[1])[top[0].notna()]
    fidelity = rows[rows["local"].str.match(_TOP_K_FIDELITY)]
    if harms.empty:
        return Assessment(NOT_EVALUABLE, "no A17 top-k head ablation rows (interventions.enabled, or no ranking "
                                         "reference)", threshold=thresholds.fidelity_threshold)
    unchangeable = harms["note"].astype(str).str.contains(CANNOT_CHANGE, regex=False)
    failures, unevaluable, read = [], [], []
    for readout in thresholds.causal_readouts:
        by_k = harms[(harms["readout"] == readout) & ~unchangeable].sort_values("k")
        if by_k.empty:
            if not (harms["readout"] == readout).any():
                unevaluable.append(f"{readout}: no top-k row")
            continue  # else the study's attention readout, which these ablations cannot change: it tests nothing
        read.append(readout)
        if by_k["note"].astype(str).str.contains(NO_SIGNAL_TO_LOSE, regex=False).any():
            failures.append(f"{readout}: the clean model's readout is at chance, so there is no signal to degrade")
        for _, row in by_k[by_k["effect"].isna()].iterrows():
            unevaluable.append(f"{readout}, k = {row['k']}: no random head set to compare with")
        for _, row in by_k[by_k["effect"] < 0].iterrows():
            failures.append(f"{readout}, k = {row['k']}: harm {row['statistic']:+.4f} below random heads' "
                            f"{row['statistic'] - row['effect']:+.4f}")
        if not by_k["statistic"].iloc[-1] > 0:
            failures.append(f"{readout}: ablating the top {int(by_k['k'].iloc[-1])} heads does not degrade it "
                            f"(harm {by_k['statistic'].iloc[-1]:+.4f})")
        if len(by_k) < 2:
            unevaluable.append(f"{readout}: one k ({int(by_k['k'].iloc[0])}); a trend in k needs two or more "
                               f"(interventions.ks)")
        elif (np.diff(by_k["statistic"].to_numpy()) < 0).any():
            failures.append(f"{readout}: harm decreases with k ({', '.join(f'{v:+.4f}' for v in by_k['statistic'])})")
    harms = harms[harms["readout"].isin(thresholds.causal_readouts) & ~unchangeable]
    distances = fidelity["statistic"].astype(float)
    for _, row in fidelity[~(distances > thresholds.fidelity_threshold)].iterrows():
        failures.append(f"{row['local'].removeprefix('A19:A17:')}: hidden-state distance {row['statistic']:.4f} "
                        f"<= {thresholds.fidelity_threshold:g} (the ablation did not move the model)")
    if fidelity.empty:
        unevaluable.append("no A19 fidelity row of a top-k ablation")
    if not read:
        unevaluable.append(f"no readout of {', '.join(thresholds.causal_readouts)} that these ablations can change")
    used = pd.concat([harms, fidelity])
    status = FAIL if failures else NOT_EVALUABLE if unevaluable else PASS
    reason = "; ".join(failures or unevaluable) or (
        f"{', '.join(read)}: top-k harm >= random heads at k = {', '.join(map(str, sorted(harms['k'].unique())))}, "
        f"not decreasing in k; every ablation moved the model")
    return Assessment(status, reason, None, float(harms["effect"].min()) if len(harms) else np.nan,
                      float(distances.min()) if len(distances) else np.nan,
                      thresholds.fidelity_threshold, tuple(used["test_id"]), tuple(_q(r) for _, r in used.iterrows()))


ASSESSORS = {"C1_beats_gene_baselines": beats_gene_baselines, "C2_incremental_value": incremental_value,
             "C3_beyond_covariates_and_degree": beyond_covariates_and_degree, "C4_causal_heads": causal_heads}


def overall(assessments: Mapping[str, Assessment]) -> Assessment:
    """The verdict row: pass when every criterion passes and one edge score passes C1-C3; fail when any
    criterion fails (or they pass on different scores only); else not evaluable."""
    failed = [name for name, a in assessments.items() if a.status == FAIL]
    open_ = [name for name, a in assessments.items() if a.status == NOT_EVALUABLE]
    if failed:
        return Assessment(FAIL, "fails " + ", ".join(failed))
    if open_:
        return Assessment(NOT_EVALUABLE, "not evaluable: " + ", ".join(open_))
    common = frozenset.intersection(*(assessments[name].scores for name in list(CRITERIA)[:3]))
    if not common:
        return Assessment(FAIL, "C1-C3 pass on different edge scores only: no one score carries the signal")
    return Assessment(PASS, f"every criterion passes; {len(common)} edge score(s) pass C1-C3, e.g. {min(common)}",
                      edge_score=min(common), scores=common)


def verdict_preconditions(context: pd.DataFrame, model: str, cell_type: str, registry_status: str) -> pd.DataFrame:
    """The one-row frame the `verdict_preconditions` data contract checks before a verdict is issued:
    whether the registry holds every analysis of the context (`registry_status`, from registry_coverage),
    the evaluable perturbations and their DE positives (A01), the evaluable references and the fewest
    reference positives among them (A12)."""
    pf = context[context["analysis_id"] == "A01"]
    reference = context[(context["analysis_id"] == "A12") & (context["statistic_name"] != REFERENCE_NOT_EVALUABLE)]
    parts = _local(reference["test_id"]).str.split(":")
    reference = reference[parts.str.len() == 3].assign(resource=parts.str[1])  # "A12:<resource>:<score>"
    positives = reference.groupby("resource")["n_positives"].max().fillna(0)

    def largest(values: pd.Series) -> int:  # 0 where nothing was counted
        return int(values.max()) if values.notna().any() else 0

    return pd.DataFrame([{
        "model": model, "cell_type": cell_type, "registry_status": registry_status,
        "evaluable_perturbations": largest(pf["n"]), "de_positives": largest(pf["n_positives"]),
        "evaluable_references": len(positives),
        "fewest_reference_positives": int(positives.min()) if len(positives) else 0,
    }])


def assess_context(context: pd.DataFrame, thresholds: VerdictThresholds, blocked: str | None = None) -> dict[str, Assessment]:
    """Every criterion and the verdict for one model x cell type's registry rows. `blocked`: why the
    context's data-contract preconditions failed (then every criterion is not evaluable)."""
    if blocked:
        assessments = {name: Assessment(NOT_EVALUABLE, f"preconditions failed: {blocked}") for name in CRITERIA}
    else:
        assessments = {name: assess(context, thresholds) for name, assess in ASSESSORS.items()}
    return {**assessments, VERDICT: overall(assessments)}


def verdict_rows(model: str, cell_type: str, assessments: Mapping[str, Assessment]) -> pd.DataFrame:
    """VERDICT_COLUMNS frame, one row per criterion and the verdict; test_ids and q_values as JSON lists."""
    records = [{"model": model, "cell_type": cell_type, "criterion": name, "status": a.status, "reason": a.reason,
                "edge_score": a.edge_score, "statistic": a.statistic, "bound": a.bound, "threshold": a.threshold,
                "test_ids": json.dumps(list(a.test_ids)),
                "q_values": json.dumps([None if np.isnan(q) else q for q in a.q_values])}
               for name, a in assessments.items()]
    return pd.DataFrame.from_records(records, columns=list(VERDICT_COLUMNS))


def first_page(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per model x cell type: the verdict, each criterion's status, and the verdict's reason plus the
    first failing (or open) criterion's reason: the report's first table."""
    rows = []
    for (model, cell_type), context in verdicts.groupby(["model", "cell_type"], sort=True):
        by_name = context.set_index("criterion")
        verdict = by_name.loc[VERDICT]
        why = [f"{name.split('_')[0]}: {by_name.loc[name, 'reason']}" for name in CRITERIA
               if by_name.loc[name, "status"] != PASS][:1]
        rows.append({"model": model, "cell_type": cell_type, "verdict": verdict["status"],
                     **{name.split("_")[0]: by_name.loc[name, "status"] for name in CRITERIA},
                     "why": "; ".join(why) or verdict["reason"]})
    return pd.DataFrame(rows)
