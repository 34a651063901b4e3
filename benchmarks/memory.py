"""This process's resident memory from /proc/self/status: the current and peak resident set, and a reset of
the peak (Linux), so one measurement's peak excludes what came before it."""

from __future__ import annotations

import resource
import sys


def _status_kib(field: str) -> int | None:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in KiB, or None where there is no /proc."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set of this process: VmHWM where /proc has it (resettable), else ru_maxrss."""
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def current_rss_bytes() -> int | None:
    """This process's resident set now (VmRSS), or None where there is no /proc."""
    current = _status_kib("VmRSS")
    return None if current is None else current * 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux: write 5 to /proc/self/clear_refs); True if the
    peak now equals the current RSS, False where refused (the peak then still holds load-time highs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    peak, current = _status_kib("VmHWM"), _status_kib("VmRSS")
    return peak is not None and current is not None and peak - current < 4096
