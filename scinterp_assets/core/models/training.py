"""The brief, seeded training loop shared by the tiny checkpoints of every model family.

A family supplies how to draw a masked batch and how to score it; this module owns the fixed evaluation
cells, the optimiser with linear warm-up, the step and time budget, and the checkpoint folder's atomic write.
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


@dataclass(frozen=True)
class TrainingBudget:
    max_steps: int
    max_seconds: float  # safety cap; a run that hits it depends on machine speed and says so
    batch_size: int
    learning_rate: float  # peak, reached after `warmup_steps` of linear warm-up
    warmup_steps: int
    grad_clip: float | None = None  # max gradient norm, None: no clipping


@dataclass(frozen=True)
class TrainingResult:
    steps: int
    seconds: float
    initial_loss: float
    final_loss: float
    stopped_by_max_seconds: bool


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
    """Train `model` on masked batches of cells until the step or time budget is spent.

    masked_batch(cell indices) draws one masked batch (consuming `rng`); batch_loss(model, batch) is the
    differentiable loss; batches without any masked target are skipped. Losses before and after are the mean
    over the same fixed evaluation batches, in eval mode; the initial one is logged before training starts.
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
    log(f"initial loss {initial_loss:.4g}; training for at most {budget.max_steps} steps / {budget.max_seconds:g} s")
    optimizer = torch.optim.AdamW(model.parameters(), lr=budget.learning_rate)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1, (step + 1) / budget.warmup_steps))
    model.train()
    started, steps, batch_size = time.perf_counter(), 0, min(budget.batch_size, n_cells)
    while steps < budget.max_steps and time.perf_counter() - started < budget.max_seconds:
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
    return TrainingResult(steps, seconds, initial_loss, evaluate(), steps < budget.max_steps)


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
