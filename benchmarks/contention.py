"""CPU contention accounting shared by the benchmarks: how much of the machine other processes took while a
measurement ran (a timing that shared the CPUs is flagged, never silently reported)."""

from __future__ import annotations

import os
import time

CONTENTION_WARNING = 0.10  # share of the CPUs other processes took during a measurement, above which we warn


def machine_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (/proc/stat), or None where unavailable."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def timed(function, *args, **kwargs) -> tuple[object, dict]:
    """Run function; return its result and {seconds, others_cpu_share}: the share of all CPUs other processes
    took meanwhile (None under a second: /proc/stat counts 10 ms ticks, too coarse there)."""
    machine, own, started = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - started
    machine_after, own_after = machine_cpu_seconds(), own_cpu_seconds()
    others = None
    if machine is not None and machine_after is not None and seconds >= 1.0:
        others = max(0.0, (machine_after - machine) - (own_after - own)) / (seconds * (os.cpu_count() or 1))
    return result, {"seconds": seconds, "others_cpu_share": others}


def contention_warning(records: dict[str, dict]) -> str | None:
    """A warning line naming the measurements ({name: record with others_cpu_share}) that shared the CPUs."""
    contended = [name for name, record in records.items()
                 if record["others_cpu_share"] is not None and record["others_cpu_share"] > CONTENTION_WARNING]
    if not contended:
        return None
    return (f"WARNING: other processes took over {CONTENTION_WARNING:.0%} of the CPUs while "
            f"{' and '.join(contended)} ran: seconds inflated; rerun on an idle machine before trusting them")
