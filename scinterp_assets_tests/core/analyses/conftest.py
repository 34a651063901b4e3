"""Shared fixtures of the analysis tests."""

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def one_thread():
    """The models' OpenMP threads cost more than they save on a few thousand rows, and crawl on a busy shared
    CPU (spin-waiting); one thread keeps these tests at seconds."""
    with threadpool_limits(1):
        yield
