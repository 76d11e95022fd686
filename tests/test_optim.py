"""Optimizer and scheduler registries: names checked at parse time, per-step schedules with warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.config import SchedulerConfig, TrainingConfig, parse_matrix
from benchmark.core.errors import UserError
from benchmark.optim import OPTIMIZERS, SCHEDULERS, build_optimizer
from benchmark.schemes.base import build_scheduler
from benchmark.train import steps_per_epoch

MATRIX = {"losses": ["mse"], "architectures": ["dncnn"], "doses": ["25_360"]}


@pytest.mark.parametrize(("key", "bad", "close"), [("optimizer", "adma", "adam"), ("scheduler", "cosin", "cosine")])
def test_unknown_names_fail_at_parse_time_with_the_closest(key, bad, close):
    with pytest.raises(UserError) as err:
        parse_matrix({**MATRIX, "training": {key: {"name": bad}}})
    registry = OPTIMIZERS if key == "optimizer" else SCHEDULERS
    assert f"training.{key}.name" in str(err.value) and f"Did you mean {close!r}" in str(err.value)
    assert all(name in str(err.value) for name in registry)


def test_warmup_needs_a_per_step_schedule():
    with pytest.raises(UserError, match="interval: step"):
        parse_matrix({**MATRIX, "training": {"scheduler": {"name": "cosine", "warmup": 4}}})


def _lrs(cfg: SchedulerConfig, epochs: int, steps: int, lr: float = 1e-3) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], "sgd", lr, {}, field="t")
    sched = build_scheduler(opt, cfg, epochs, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_per_step_cosine_with_warmup_follows_the_formula():
    """Linear warm-up from lr/w to lr over w steps, then cosine from lr to 0 over the remaining steps."""
    lr, w, epochs, steps = 1e-3, 4, 3, 8
    got = _lrs(SchedulerConfig(name="cosine", interval="step", warmup=w), epochs, steps, lr)
    total = epochs * steps
    want = [lr * (1 / w + (1 - 1 / w) * s / w) for s in range(w)]
    want += [lr * 0.5 * (1 + math.cos(math.pi * s / (total - w))) for s in range(total - w)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_epoch_interval_is_unchanged():
    got = _lrs(SchedulerConfig(name="cosine"), 4, 1)  # one step per epoch: stepped per epoch
    assert got == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)], rel=1e-9)


def test_warmup_longer_than_training_is_an_error():
    with pytest.raises(UserError, match="warmup"):
        _lrs(SchedulerConfig(name="cosine", interval="step", warmup=30), 3, 8)


def test_steps_per_epoch():
    assert steps_per_epoch(TrainingConfig(batch_size=16, patches_per_epoch=100), 7) == 7
    assert steps_per_epoch(TrainingConfig(batch_size=16), 33) == 3


def test_train_epoch_steps_a_per_step_schedule_after_every_optimizer_step():
    """An epoch of k steps leaves a per-step schedule k steps further; an epoch schedule is untouched."""
    from benchmark.step_settings import StepSettings
    from benchmark.train import build_state, seed_everything, step_scheduler, train_epoch
    from losses import build_loss
    from models import build_model

    class Batches:  # the part of TrainData that train_epoch uses
        steps = 5

        def batch(self, step, generator):
            x = torch.rand(2, 1, 8, 8, generator=generator)
            return x, x

    for interval, after_epoch in (("step", 5), ("epoch", 0)):
        training = TrainingConfig(epochs=2, scheduler={"name": "cosine", "interval": interval})
        state = build_state(build_model("dncnn", {"depth": 3, "channels": 4}), build_loss([("mse", 1.0, {})]),
                            training, seed_everything(0), steps=Batches.steps)  # fmt: skip
        train_epoch(state, Batches(), torch.device("cpu"), StepSettings())  # type: ignore[arg-type]
        assert state.scheme.scheduler.last_epoch == after_epoch
        step_scheduler(state, 0.0)
        assert state.scheme.scheduler.last_epoch == (5 if interval == "step" else 1)
