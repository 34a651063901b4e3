"""Shared fixtures: the folder of real reference files outside the repository (tests skip without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).parents[3] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def reference_networks() -> Path:
    folder = (SHARED_DATA / "reference_networks").resolve()
    if not folder.is_dir():
        pytest.skip(f"real reference files not found at {folder}")
    return folder
