"""What a person watching a run reads: progress messages in the Dagster run log, and the console of
`make demo` (one line per finished step with its time, and the progress lines of long steps)."""

import logging
import sys
import time

import dagster as dg

from scinterp_assets.core.progress import Progress


def progress_logger(context: dg.AssetExecutionContext, what: str) -> Progress:
    """A core `Progress` that logs "<what>: <done>/<total> (<unit>), <elapsed> s" into the run log."""
    started = time.perf_counter()

    def progress(done: int, total: int, unit: str) -> None:
        context.log.info(f"{what}: {done}/{total} ({unit}), {time.perf_counter() - started:.0f} s")

    return progress


class _StepLines(logging.Handler):
    """Keeps, of Dagster's log records, a line per finished or failed step and the assets' own messages."""

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        if not meta or not meta.get("step_key"):
            return
        event = meta.get("dagster_event")
        if event is None:
            line = meta["orig_message"]
        elif event.event_type_value == "STEP_SUCCESS":
            line = f"done in {event.event_specific_data.duration_ms / 1000:.1f} s"
        elif event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error.cause is not None and error.cls_name.startswith("Dagster"):  # its wrapper, not the
                error = error.cause                                                    # asset's own error
            line = f"FAILED: {error.cls_name}: {error.message.strip()}"
        else:
            return
        print(f"    {meta['step_key']}: {line}", file=sys.stdout, flush=True)


@dg.logger(description="One console line per finished step and per progress message of a long step.")
def step_console(_init_context) -> logging.Logger:
    logger = logging.Logger("scinterp_steps", level=logging.DEBUG)  # Dagster logs its step events at DEBUG
    logger.addHandler(_StepLines())
    return logger
