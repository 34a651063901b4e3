"""The study's workload end to end: every asset of the study-shaped world, with each step's wall time and
peak memory (`make bench-study`).

    python -m benchmarks.study_shape [--config scinterp.study-shape.yaml] [--release v1-10m]
                                     [--dictionaries ../shared/models/geneformer] [--seed 0]

Writes a seeded random-weight Geneformer checkpoint of a released shape (benchmarks/attention_methods.py
RELEASED_GENEFORMER) around the released dictionaries (`<dictionaries>/V1` for V1 shapes, `/V2` for V2) into
the configuration's checkpoint_dir (a complete folder of that release and seed is reused; any other model
there stops the run, since it would be evaluated too), then materialises every asset as `make demo` does
(reference, cell-type, checkpoint, model-evaluation and summary jobs, in process, recorded in the
configuration's own Dagster home, so `SCINTERP_CONFIG=scinterp.study-shape.yaml make ui` shows the runs).

Wall time per step comes from the runs' STEP_START / STEP_SUCCESS events (wall-clock seconds, as the
sampler's). Memory per step: a sampler thread reads this process's peak resident set (VmHWM) every
SAMPLE_SECONDS and resets it (Linux /proc/self/clear_refs), so each window's true peak is known, short spikes
included, and records the current RSS at each window's end. A step's peak is the largest window peak
overlapping it (a window straddling two steps counts for both); its growth is that peak minus the RSS sampled
last before it started. Steps run one at a time in this process, so the peak includes what the process holds
from before (imports, the instance, allocator caches); the growth is what the step added. Resident memory
counts file-backed pages too (memory-mapped accumulators, model weights), which the kernel can reclaim. The
table and `<home>/bench-study.json` list every step in order; the table ends with the dominating steps.
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

import numpy as np

from benchmarks.memory import current_rss_bytes, peak_rss_bytes, reset_peak_rss

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "scinterp.study-shape.yaml"
DEFAULT_DICTIONARIES = REPO_ROOT.parent / "shared" / "models" / "geneformer"
SAMPLE_SECONDS = 0.2
MB = 1e6
TOP_STEPS = 5


@dataclass(frozen=True)
class StepRecord:
    """One step of one run: its job and partition, wall time (event timestamps) and resident memory: the
    process's RSS when the step started, its peak during the step, and the growth (peak - start)."""

    job: str
    partition: str | None
    step: str
    started: float
    seconds: float
    start_rss_mb: float | None
    peak_mb: float | None
    growth_mb: float | None
    status: str  # ok | failed | unfinished (still running, or the run was interrupted: seconds so far)


class Windows:
    """Sampled windows (start, end, peak RSS bytes in the window, RSS bytes at its end), as arrays."""

    def __init__(self, windows: Sequence[Sequence[float]]):
        table = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
        self.start, self.end, self.peak, self.rss = table.T
        self.last_end = float(self.end[-1]) if len(table) else None

    def peak_between(self, start: float, end: float) -> float | None:
        """The largest window peak (bytes) overlapping [start, end], or None when no window did."""
        overlapping = (self.end >= start) & (self.start <= end)
        return float(self.peak[overlapping].max()) if overlapping.any() else None

    def rss_at(self, moment: float) -> float | None:
        """RSS (bytes) sampled last at or before `moment`, or None before the first sample."""
        before = np.flatnonzero(self.end <= moment)
        rss = float(self.rss[before[-1]]) if before.size else float("nan")
        return None if np.isnan(rss) else rss


class PeakSampler:
    """A thread sampling, every `interval` seconds, this process's peak RSS since the last sample (VmHWM, then
    reset) and its current RSS: windows (start, end, peak bytes, RSS bytes at the end), also appended to `log`
    (JSON lines) as they come, so an interrupted run can still be reported (--report)."""

    def __init__(self, interval: float = SAMPLE_SECONDS, log: Path | None = None):
        self.interval = interval
        self.windows: list[tuple[float, float, int, float]] = []
        self.log = log
        self.resettable = reset_peak_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
        self._sample(time.time(), time.time())  # a first sample now, so every step has an RSS at its start
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.time()
        while not self._stop.wait(self.interval):
            end = time.time()
            self._sample(start, end)
            start = end

    def _sample(self, start: float, end: float) -> None:
        current = current_rss_bytes()
        window = (start, end, peak_rss_bytes(), float("nan") if current is None else current)
        reset_peak_rss()
        self.windows.append(window)
        if self.log is not None:
            with self.log.open("a") as handle:
                handle.write(json.dumps(window) + "\n")


def read_windows(log: Path) -> Windows:
    """The windows an earlier run logged."""
    return Windows([json.loads(line) for line in log.read_text().splitlines() if line.strip()])


def step_records(instance, windows: Windows, run_ids: Sequence[str]) -> list[StepRecord]:
    """Each step of the runs, in execution order, from their STEP_START and STEP_SUCCESS/FAILURE events; a
    step with a start and no end is "unfinished", timed to the last sampled window."""
    import dagster as dg

    ends = {dg.DagsterEventType.STEP_SUCCESS: "ok", dg.DagsterEventType.STEP_FAILURE: "failed"}
    last_window = windows.last_end if windows.last_end is not None else time.time()
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
                records.append(_record(run.job_name, partition, step, started.pop(step), entry.timestamp,
                                       ends[entry.dagster_event_type], windows))
        records += [_record(run.job_name, partition, step, start, max(start, last_window), "unfinished", windows)
                    for step, start in started.items()]
    return sorted(records, key=lambda record: record.started)


def _record(job: str, partition: str | None, step: str, start: float, end: float, status: str,
            windows: Windows) -> StepRecord:
    peak, start_rss = windows.peak_between(start, end), windows.rss_at(start)
    growth = None if peak is None or start_rss is None else (peak - start_rss) / MB
    return StepRecord(job, partition, step, start, end - start, None if start_rss is None else start_rss / MB,
                      None if peak is None else peak / MB, growth, status)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _run_label(record: StepRecord) -> str:
    return f"{record.job} [{record.partition}]" if record.partition else record.job


def format_report(records: Sequence[StepRecord], wall_seconds: float) -> str:
    if not records:
        return "no step ran"
    width = max(len(_run_label(record)) for record in records)
    lines = [f"{'run':<{width}}  {'step':<30} {'seconds':>9} {'RSS at start':>12} {'peak RSS':>9} {'growth':>7}  (MB)"]
    for record in records:
        status = "" if record.status == "ok" else f"  {record.status.upper()}"
        lines.append(f"{_run_label(record):<{width}}  {record.step:<30} {record.seconds:>9.1f} "
                     f"{_mb(record.start_rss_mb):>12} {_mb(record.peak_mb):>9} {_mb(record.growth_mb):>7}{status}")
    in_steps = sum(record.seconds for record in records)
    largest = max(records, key=lambda record: record.peak_mb or 0)
    lines.append(f"total wall time {wall_seconds:,.0f} s, of which in steps {in_steps:,.0f} s; largest peak RSS "
                 f"{_mb(largest.peak_mb)} MB ({largest.step}); RSS before the first step "
                 f"{_mb(records[0].start_rss_mb)} MB")
    lines.append("dominating steps:")
    for record in sorted(records, key=lambda r: -r.seconds)[:TOP_STEPS]:
        lines.append(f"  {record.step} ({_run_label(record)}): {record.seconds:,.0f} s "
                     f"({record.seconds / max(in_steps, 1e-9):.0%} of the time in steps)")
    return "\n".join(lines)


def write_checkpoint(config, release: str, dictionaries: Path, seed: int) -> Path:
    """The release's random-weight folder in the checkpoint directory, reused when a complete one is there.
    Every model in the checkpoint directory would be evaluated, so any other folder there stops the run."""
    import shutil

    from benchmarks.attention_methods import write_released_geneformer
    from scinterp_assets.resources.model_store import COMPLETION_MARKER, ModelStore

    name = f"geneformer-{release}-random-seed{seed}"
    folder = config.checkpoint_dir / name
    others = sorted(set(ModelStore(config.checkpoint_dir).checkpoints()) - {name})
    if others:
        raise SystemExit(f"bench-study: {config.checkpoint_dir} also holds {others}, which would be evaluated too; "
                         "remove them or set checkpoint_dir to another folder in the configuration")
    if (folder / COMPLETION_MARKER).is_file():
        print(f"checkpoint {folder} is complete: reused")
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted write
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
    run_file = config.home / "bench-study.run.json"
    if arguments.report:
        if not run_file.is_file() or not windows_log.is_file():
            raise SystemExit(f"bench-study --report: no run recorded under {config.home} ({run_file.name}, "
                             f"{windows_log.name}); run `make bench-study` first")
        return report(instance, read_windows(windows_log), json.loads(run_file.read_text()), config.home)
    write_checkpoint(config, arguments.release, arguments.dictionaries, arguments.seed)
    windows_log.unlink(missing_ok=True)
    failure = None
    with PeakSampler(log=windows_log) as sampler:
        run = {"config": str(arguments.config.resolve()), "release": arguments.release, "seed": arguments.seed,
               "started": time.time(), "earlier_runs": sorted(run.run_id for run in instance.get_runs()),
               "peak_resettable": sampler.resettable}
        run_file.write_text(json.dumps(run))
        try:
            materialize_everything(config, instance)
        except SystemExit as error:  # a failed job: report what ran, then fail
            failure = error
    records = report(instance, Windows(sampler.windows), run, config.home)
    if failure is not None:
        raise failure
    return records


def report(instance, windows: Windows, run: dict, home: Path) -> list[StepRecord]:
    """Print and write (<home>/bench-study.json) the steps of the runs the recorded bench-study run started."""
    earlier = set(run["earlier_runs"])
    run_ids = [record.run_id for record in reversed(instance.get_runs()) if record.run_id not in earlier]
    records = step_records(instance, windows, run_ids)
    wall = max((r.started + r.seconds for r in records), default=run["started"]) - run["started"]
    print(format_report(records, wall))
    if not run["peak_resettable"]:
        print("note: the peak resident set could not be reset here, so each step's peak includes earlier highs")
    out = home / "bench-study.json"
    out.write_text(json.dumps({**run, "wall_seconds": wall, "steps": [asdict(r) for r in records]}, indent=1))
    print(f"steps written to {out}")
    return records


if __name__ == "__main__":
    main()
