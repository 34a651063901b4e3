"""Random-weights twins (FRAMEWORK A25, the untrained reference the study lacked): the same architecture and
tokeniser as a loaded checkpoint with seeded random weights, drawn as each family's own code initialises an
untrained model. Every number of a checkpoint then has an untrained reference beside it: what the
architecture and the tokenisation give without training. It is a reference, not a no-signal null: random
attention still carries the tokenisation's rank and expression structure.

The same seed gives every checkpoint of one architecture the same twin. With the default seed 0 the embedded
tiny Geneformer's twin is that checkpoint's own initial weights (its trainer draws them with seed 0 too), so
for it the comparison is paired on the initialisation; scGPT's trainer draws its weights differently."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded_initialisation(seed: int) -> Iterator[None]:
    """Run module construction on torch's CPU generator seeded with `seed`, restoring the generator's state
    afterwards (the caller's random stream is not consumed; accelerator generators are not touched)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        yield
