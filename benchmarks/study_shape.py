"""The study's workload end to end: every asset of the study-shaped world, with each step's wall time and
peak memory (`make bench-study`).

    python -m benchmarks.study_shape [--config scinterp.study-shape.yaml] [--release v1-10m]
                                     [--dictionaries ../shared/models/geneformer] [--seed 0]

Writes a seeded random-weight Geneformer checkpoint of a released shape (benchmarks/attention_methods.py
RELEASED_GENEFORMER) around the released dictionaries (`<dictionaries>/V1` for V1 shapes, `/V2` for V2) into
the configuration's checkpoint_dir, unless a folder of that name is there, then materialises every asset as
`make demo` does (reference, cell-type, checkpoint, model-evaluation and summary jobs, in process, recorded in
the configuration's own Dagster home, so `SCINTERP_CONFIG=scinterp.study-shape.yaml make ui` shows the runs).

Wall time per step comes from the runs' STEP_START / STEP_SUCCESS events. Peak memory per step: a sampler
thread reads this process's peak resident set (VmHWM) every SAMPLE_SECONDS and resets it (Linux
/proc/self/clear_refs), so each window's true peak is known, short spikes included; a step's peak is the
largest window peak overlapping it (a window straddling two steps counts for both). Steps run one at a time in
this process, so the peak is the step's, plus what the process holds between steps (imports, the Dagster
instance: the "between steps" line). The table and a JSON file (`<home>/bench-study.json`) list every step in
order, then the steps that dominate the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.memory import peak_rss_bytes, reset_peak_rss

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "scinterp.study-shape.yaml"
DEFAULT_DICTIONARIES = REPO_ROOT.parent / "shared" / "models" / "geneformer"
SAMPLE_SECONDS = 0.2
MB = 1e6
TOP_STEPS = 5


@dataclass(frozen=True)
class StepRecord:
    """One step of one run: its job and partition, wall time (event timestamps) and peak resident set."""

    job: str
    partition: str | None
    step: str
    started: float
    seconds: float
    peak_mb: float | None
    status: str  # ok | failed | unfinished (still running, or the run was interrupted: seconds so far)


class PeakSampler:
    """A thread recording (window start, window end, peak RSS bytes in the window) every `interval` seconds,
    also appended to `log` (JSON lines) when given, so an interrupted run can still be reported (--report)."""

    def __init__(self, interval: float = SAMPLE_SECONDS, log: Path | None = None):
        self.interval = interval
        self.windows: list[tuple[float, float, int]] = []  # (start, end, peak bytes)
        self.log = log
        self.resettable = reset_peak_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.time()
        while not self._stop.wait(self.interval):
            end = time.time()
            window = (start, end, peak_rss_bytes())
            reset_peak_rss()
            self.windows.append(window)
            if self.log is not None:
                with self.log.open("a") as handle:
                    handle.write(json.dumps(window) + "\n")
            start = end

    @classmethod
    def from_log(cls, log: Path) -> PeakSampler:
        """The windows an earlier run logged (not started)."""
        sampler = cls(log=None)
        sampler.windows = [tuple(json.loads(line)) for line in log.read_text().splitlines() if line.strip()]
        return sampler

    def peak_between(self, start: float, end: float) -> int | None:
        """The largest window peak overlapping [start, end], or None when no window ended yet."""
        peaks = [peak for window_start, window_end, peak in self.windows if window_end >= start and window_start <= end]
        return max(peaks) if peaks else None


def step_records(instance, sampler: PeakSampler, run_ids: Sequence[str]) -> list[StepRecord]:
    """Each step of the runs, in execution order, from their STEP_START and STEP_SUCCESS/FAILURE events."""
    import dagster as dg

    ends = {dg.DagsterEventType.STEP_SUCCESS: "ok", dg.DagsterEventType.STEP_FAILURE: "failed"}
    last_window = sampler.windows[-1][1] if sampler.windows else time.time()
    records = []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        partition = run.tags.get("dagster/partition")
        started = {}
        for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, *ends}):
            step = entry.dagster_event.step_key
            if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
                started[step] = entry.timestamp
            elif step in started:
                records.append(_record(run, partition, step, started.pop(step), entry.timestamp,
                                       ends[entry.dagster_event_type], sampler))
        records += [_record(run, partition, step, start, max(start, last_window), "unfinished", sampler)
                    for step, start in started.items()]
    return sorted(records, key=lambda record: record.started)


def _record(run, partition: str | None, step: str, start: float, end: float, status: str,
            sampler: PeakSampler) -> StepRecord:
    peak = sampler.peak_between(start, end)
    return StepRecord(run.job_name, partition, step, start, end - start, None if peak is None else peak / MB, status)


def format_report(records: Sequence[StepRecord], wall_seconds: float, between_mb: float | None) -> str:
    width = max([len(f"{r.job} [{r.partition}]") for r in records] + [10])
    lines = [f"{'run':<{width}}  {'step':<34} {'seconds':>9} {'peak RSS MB':>12}"]
    for record in records:
        run = f"{record.job} [{record.partition}]" if record.partition else record.job
        peak = "-" if record.peak_mb is None else f"{record.peak_mb:,.0f}"
        status = "" if record.status == "ok" else f"  {record.status.upper()}"
        lines.append(f"{run:<{width}}  {record.step:<34} {record.seconds:>9.1f} {peak:>12}{status}")
    in_steps = sum(record.seconds for record in records)
    lines.append(f"total wall time {wall_seconds:,.0f} s, of which in steps {in_steps:,.0f} s; "
                 f"largest step peak {max((r.peak_mb or 0) for r in records):,.0f} MB; "
                 f"between steps {'-' if between_mb is None else f'{between_mb:,.0f}'} MB")
    lines.append("dominating steps:")
    for record in sorted(records, key=lambda r: -r.seconds)[:TOP_STEPS]:
        lines.append(f"  {record.step} [{record.partition}]: {record.seconds:,.0f} s "
                     f"({record.seconds / max(in_steps, 1e-9):.0%} of the time in steps)")
    return "\n".join(lines)


def write_checkpoint(config, release: str, dictionaries: Path, seed: int) -> Path:
    """The release's random-weight folder in the checkpoint directory (reused when present)."""
    from benchmarks.attention_methods import write_released_geneformer
    from scinterp_assets.resources.model_store import COMPLETION_MARKER

    folder = config.checkpoint_dir / f"geneformer-{release}-random"
    if folder.exists():
        print(f"checkpoint {folder} exists: reused")
        return folder
    generation = "V1" if release.startswith("v1") else "V2"
    print(f"writing a random-weight Geneformer {release} around {dictionaries / generation} into {folder}")
    write_released_geneformer(folder, release, dictionaries / generation, seed)
    (folder / COMPLETION_MARKER).touch()
    return folder


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from benchmarks.attention_methods import RELEASED_GENEFORMER

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--release", choices=sorted(RELEASED_GENEFORMER), default="v1-10m")
    parser.add_argument("--dictionaries", type=Path, default=DEFAULT_DICTIONARIES,
                        help="folder with the released V1 and V2 dictionary folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true",
                        help="only report the steps of the latest bench-study run (also one that was interrupted)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[StepRecord]:
    arguments = parse_args(argv)
    os.environ["SCINTERP_CONFIG"] = str(arguments.config.resolve())
    import dagster as dg
    from transformers.utils import logging as transformers_logging

    from scinterp_assets.cli import dagster_home
    from scinterp_assets.config import load_config
    from scinterp_assets.demo import materialize_everything

    transformers_logging.disable_progress_bar()
    config = load_config(arguments.config)
    os.environ["DAGSTER_HOME"] = dagster_home()
    instance = dg.DagsterInstance.get()
    windows_log = config.home / "bench-study.memory.jsonl"
    runs_file = config.home / "bench-study.runs.json"
    if arguments.report:
        return report(instance, PeakSampler.from_log(windows_log), json.loads(runs_file.read_text()), config,
                      arguments)
    write_checkpoint(config, arguments.release, arguments.dictionaries, arguments.seed)
    before = {run.run_id for run in instance.get_runs()}
    windows_log.unlink(missing_ok=True)
    started = time.time()
    runs_file.write_text(json.dumps({"started": started, "before": sorted(before)}))
    failure = None
    with PeakSampler(log=windows_log) as sampler:
        try:
            materialize_everything(config, instance)
        except SystemExit as error:  # a failed job: report what ran
            failure = error
    records = report(instance, sampler, json.loads(runs_file.read_text()), config, arguments)
    if failure is not None:
        raise failure
    return records


def report(instance, sampler: PeakSampler, runs: dict, config, arguments: argparse.Namespace) -> list[StepRecord]:
    """Print and write (<home>/bench-study.json) the steps of the runs started after `runs["before"]`."""
    run_ids = [run.run_id for run in reversed(instance.get_runs()) if run.run_id not in set(runs["before"])]
    records = step_records(instance, sampler, run_ids)
    wall = (max(r.started + r.seconds for r in records) if records else runs["started"]) - runs["started"]
    gaps = [peak for start, end, peak in sampler.windows
            if not any(r.started <= start and end <= r.started + r.seconds for r in records)]
    between = min(gaps) / MB if gaps else None
    print(format_report(records, wall, between))
    if not sampler.resettable:
        print("note: the peak resident set could not be reset here, so each step's peak includes earlier highs")
    out = config.home / "bench-study.json"
    out.write_text(json.dumps({"config": str(arguments.config), "release": arguments.release, "wall_seconds": wall,
                               "between_steps_mb": between, "steps": [asdict(r) for r in records]}, indent=1))
    print(f"steps written to {out}")
    return records


if __name__ == "__main__":
    main()
