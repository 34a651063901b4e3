"""How a long computation reports how far it is, for callers that show it (the Dagster run log, the console
of `make demo`): `progress(done, total, what)` after each unit of work, `what` naming the unit just done."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str], None]


def no_progress(done: int, total: int, what: str) -> None:
    """The default: report nothing."""
