"""The shared training loop: bound by steps, and a wall-clock cap that refuses instead of stopping early."""

import time

import numpy as np
import pytest
import torch

from scinterp_assets.core.models.training import TrainingBudget, TrainingTimeCapError, train_masked


def _train(budget: TrainingBudget, step_seconds: float = 0.0):
    """A one-weight regression on 8 'cells'; each loss evaluation sleeps `step_seconds` in training mode."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    inputs = torch.arange(8, dtype=torch.float32)[:, None]

    def batch_loss(model, indices):
        if model.training:
            time.sleep(step_seconds)
        batch = torch.from_numpy(np.asarray(indices))
        return torch.nn.functional.mse_loss(model(inputs[batch]), 2 * inputs[batch])

    return train_masked(model, 8, lambda indices: indices, batch_loss, lambda batch: True, budget,
                        np.random.default_rng(0), log=lambda _: None)


def test_runs_exactly_max_steps_without_a_cap():
    result = _train(TrainingBudget(max_steps=25, batch_size=4, learning_rate=0.1, warmup_steps=1))
    assert result.steps == 25 and result.final_loss < result.initial_loss
    assert set(result.reproducible_record()) == {"steps", "initial_loss", "final_loss"}


def test_a_cap_reached_before_the_last_step_is_refused_with_the_steps_and_the_fix():
    budget = TrainingBudget(max_steps=1000, batch_size=4, learning_rate=0.1, warmup_steps=1, max_seconds=0.05)
    with pytest.raises(TrainingTimeCapError,
                       match=r"max_seconds=0\.05 after [1-9]\d* of 1000 steps .*Fix: raise max_seconds or remove"):
        _train(budget, step_seconds=0.01)


def test_a_cap_that_is_not_reached_changes_nothing():
    plain = TrainingBudget(max_steps=10, batch_size=4, learning_rate=0.1, warmup_steps=1)
    capped = TrainingBudget(max_steps=10, batch_size=4, learning_rate=0.1, warmup_steps=1, max_seconds=600)
    assert _train(plain).reproducible_record() == _train(capped).reproducible_record()
