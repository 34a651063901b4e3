"""The brief, seeded training loop shared by the tiny checkpoints of every model family.

A family supplies how to draw a masked batch and how to score it; this module owns the fixed evaluation
cells, the optimiser with linear warm-up, the step budget, and the checkpoint folder's atomic write.

Training is bound by steps only, so a spec gives the same bytes on a fast and on a loaded machine: with the
same seed and the same `num_threads` (the split of a reduction across threads changes float sums, so one
and two threads give different weights) two runs on one CPU kind write bitwise-identical weights. An
optional wall-clock cap (`max_seconds`) guards against a run that would take far longer than planned; it
never shortens a run silently, it raises TrainingTimeCapError.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

EVAL_CELLS, EVAL_BATCH = 256, 64  # fixed masked cells on which the start and end losses are compared


class TrainingTimeCapError(RuntimeError):
    """Training reached its wall-clock cap before its step budget (a shorter run would not be reproducible)."""


@dataclass(frozen=True)
class TrainingBudget:
    max_steps: int
    batch_size: int
    learning_rate: float  # peak, reached after `warmup_steps` of linear warm-up
    warmup_steps: int
    grad_clip: float | None = None  # max gradient norm, None: no clipping
    max_seconds: float | None = None  # wall-clock cap that raises when hit before max_steps; None: no cap


@dataclass(frozen=True)
class TrainingResult:
    """What the spec and the data determine (identical on every machine), and the wall-clock time apart."""

    steps: int
    initial_loss: float
    final_loss: float
    seconds: float  # wall clock: for the log, never for the checkpoint folder

    def reproducible_record(self) -> dict[str, float | int]:
        """The fields a checkpoint may record without depending on machine speed (no seconds)."""
        return {"steps": self.steps, "initial_loss": self.initial_loss, "final_loss": self.final_loss}


def train_masked(
    model: torch.nn.Module,
    n_cells: int,
    masked_batch: Callable[[np.ndarray], Any],
    batch_loss: Callable[[torch.nn.Module, Any], torch.Tensor],
    has_targets: Callable[[Any], bool],
    budget: TrainingBudget,
    rng: np.random.Generator,
    log: Callable[[str], None],
) -> TrainingResult:
    """Train `model` on masked batches of cells for exactly `budget.max_steps` optimiser steps.

    masked_batch(cell indices) draws one masked batch (consuming `rng`); batch_loss(model, batch) is the
    differentiable loss; batches without any masked target are skipped. Losses before and after are the mean
    over the same fixed evaluation batches, in eval mode; the initial one is logged before training starts.
    Raises TrainingTimeCapError when `budget.max_seconds` pass before the last step.
    """
    evaluation = rng.permutation(n_cells)[:EVAL_CELLS]
    starts = range(0, len(evaluation), EVAL_BATCH)
    eval_batches = [masked_batch(evaluation[start : start + EVAL_BATCH]) for start in starts]

    def evaluate() -> float:
        model.eval()
        with torch.inference_mode():
            losses = [batch_loss(model, batch).item() for batch in eval_batches]
        model.train()
        return float(np.mean(losses))

    initial_loss = evaluate()
    cap = "no time cap" if budget.max_seconds is None else f"failing if it takes over {budget.max_seconds:g} s"
    log(f"initial loss {initial_loss:.4g}; training for {budget.max_steps} steps ({cap})")
    optimizer = torch.optim.AdamW(model.parameters(), lr=budget.learning_rate)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1, (step + 1) / budget.warmup_steps))
    model.train()
    started, steps, batch_size = time.perf_counter(), 0, min(budget.batch_size, n_cells)
    while steps < budget.max_steps:
        _refuse_past_time_cap(budget, steps, time.perf_counter() - started)
        batch = masked_batch(rng.choice(n_cells, size=batch_size, replace=False))
        if not has_targets(batch):
            continue
        loss = batch_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        if budget.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), budget.grad_clip)
        optimizer.step()
        warmup.step()
        steps += 1
    seconds = time.perf_counter() - started
    return TrainingResult(steps, initial_loss, evaluate(), seconds)


def _refuse_past_time_cap(budget: TrainingBudget, steps: int, seconds: float) -> None:
    if budget.max_seconds is not None and seconds > budget.max_seconds:
        raise TrainingTimeCapError(
            f"training reached its wall-clock cap max_seconds={budget.max_seconds:g} after {steps} of "
            f"{budget.max_steps} steps ({seconds:.1f} s); stopping there would give a checkpoint that depends on "
            "this machine's speed, so nothing was written. Fix: raise max_seconds or remove the cap (None), or "
            "lower max_steps (which changes the checkpoint on every machine)"
        )


def write_folder_atomically(build: Callable[[Path], None], out_dir: Path) -> None:
    """Build the folder next to out_dir, then swap it in, so no reader ever sees a half-written checkpoint."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        build(staging)
        if out_dir.exists():
            retired = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, retired / out_dir.name)
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
