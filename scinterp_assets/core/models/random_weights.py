"""Random-weights twins (FRAMEWORK A25, the negative control the study lacked): the same architecture and
tokeniser as a loaded checkpoint with seeded random weights, drawn as each family's own code initialises an
untrained model. Every attention-based number of a checkpoint then has an untrained reference beside it:
what the architecture and the tokenisation give without training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded_initialisation(seed: int) -> Iterator[None]:
    """Run module construction on torch's CPU generator seeded with `seed`, restoring the generator's state
    afterwards (the caller's random stream is not consumed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
