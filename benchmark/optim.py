"""Optimizers and learning-rate schedulers: the registries behind ``training.optimizer.name`` and
``training.scheduler.name`` (and the adversarial terms' discriminator optimizers).

Both are plain dicts of frozen records, filled in this one place and looked up with
:func:`benchmark.core.registry.lookup` like every other registry. A scheduler record holds its torch
class and its default kwargs as a function of the number of epochs (e.g. cosine annealing over all of
them); the matrix's ``kwargs`` override the defaults. Schedulers are stepped once per epoch
(``plateau`` with the validation loss).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmark.core.errors import UserError
from benchmark.core.registry import lookup


@dataclass(frozen=True)
class OptimizerInfo:
    cls: Callable[..., torch.optim.Optimizer]
    summary: str
    paper: str = ""


@dataclass(frozen=True)
class SchedulerInfo:
    cls: type | None  # None: a constant learning rate
    summary: str
    defaults: Callable[[int], Mapping[str, Any]] = field(default=lambda epochs: {})


class LinearDecayLR(torch.optim.lr_scheduler.LambdaLR):
    """CycleGAN's schedule (Zhu et al., ICCV 2017, and its public code's ``linear`` policy): the initial
    learning rate for the first ``total − decay`` steps, then a linear decay towards 0 over the last
    ``decay`` steps: ``factor(t) = 1 − max(0, t + 1 − (total − decay)) / (decay + 1)``. ``total`` and
    ``decay`` count scheduler steps (epochs, or optimizer steps with ``interval: step``); the defaults
    are the whole horizon and its second half (CycleGAN: 100 + 100 epochs). Hand-written: torch has
    no constant-then-linear schedule in one class, and a LambdaLR of a closure keeps the state_dict
    small and resumable."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, total: int, decay: int, last_epoch: int = -1) -> None:
        if not 0 <= decay <= total:
            raise ValueError(f"decay must lie in [0, total={total}], got {decay}")
        self.total, self.decay = int(total), int(decay)
        start = self.total - self.decay

        def factor(t: int) -> float:
            return 1.0 - max(0, t + 1 - start) / (self.decay + 1)

        super().__init__(optimizer, factor, last_epoch=last_epoch)


# The one place where optimizers are registered.
OPTIMIZERS: dict[str, OptimizerInfo] = {
    "adam": OptimizerInfo(torch.optim.Adam, "Adam", "Kingma & Ba, ICLR 2015"),
    "adamw": OptimizerInfo(torch.optim.AdamW, "Adam with decoupled weight decay", "Loshchilov & Hutter, ICLR 2019"),
    "sgd": OptimizerInfo(torch.optim.SGD, "stochastic gradient descent (momentum via kwargs)"),
    "rmsprop": OptimizerInfo(torch.optim.RMSprop, "RMSprop", "Tieleman & Hinton, 2012 (lecture 6.5)"),
}

# The one place where learning-rate schedulers are registered.
SCHEDULERS: dict[str, SchedulerInfo] = {
    "none": SchedulerInfo(None, "constant learning rate"),
    "step": SchedulerInfo(torch.optim.lr_scheduler.StepLR, "multiply by gamma every step_size epochs",
                          lambda epochs: {"step_size": 10, "gamma": 0.5}),
    "multistep": SchedulerInfo(torch.optim.lr_scheduler.MultiStepLR, "multiply by gamma at the milestones",
                               lambda epochs: {"milestones": [epochs // 2], "gamma": 0.1}),
    "cosine": SchedulerInfo(torch.optim.lr_scheduler.CosineAnnealingLR, "cosine annealing over the epochs",
                            lambda epochs: {"T_max": epochs}),
    "exponential": SchedulerInfo(torch.optim.lr_scheduler.ExponentialLR, "multiply by gamma every epoch",
                                 lambda epochs: {"gamma": 0.95}),
    "linear_decay": SchedulerInfo(LinearDecayLR, "constant, then linear decay to 0 over the last `decay` steps "
                                  "(CycleGAN)", lambda epochs: {"total": epochs, "decay": epochs // 2}),
    "plateau": SchedulerInfo(torch.optim.lr_scheduler.ReduceLROnPlateau, "multiply by factor when val_loss stalls",
                             lambda epochs: {"factor": 0.5, "patience": 5}),
}


def build_optimizer(params: list[nn.Parameter], name: str, lr: float, kwargs: Mapping[str, Any], *,
                    field: str) -> torch.optim.Optimizer:  # fmt: skip
    """A registered optimizer over ``params``; an unknown name or bad kwargs is a :class:`UserError`
    naming ``field``."""
    info = lookup(OPTIMIZERS, name, "optimizer", field=f"{field}.name")
    try:
        return info.cls(params, lr=lr, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"optimizer {name!r}: {exc}", field=field) from None


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, kwargs: Mapping[str, Any], horizon: int, *,
                    warmup: int = 0, field: str) -> Any:  # fmt: skip
    """A registered scheduler on ``optimizer`` (None for ``none`` without warmup); bad kwargs are a
    :class:`UserError`.

    ``horizon`` is the number of times the scheduler will be stepped (epochs, or optimizer steps for a
    per-step schedule); the defaults (e.g. cosine's ``T_max``) are sized from it. ``warmup`` > 0 first
    raises the learning rate linearly from ``lr / warmup`` to ``lr`` over ``warmup`` steps
    (``LinearLR``), then hands over to the scheduler, sized for the remaining ``horizon − warmup`` steps
    (``SequentialLR``; Goyal et al. 2017's gradual warm-up)."""
    info = lookup(SCHEDULERS, name, "scheduler", field=f"{field}.name")
    if warmup and info.cls is torch.optim.lr_scheduler.ReduceLROnPlateau:
        raise UserError("a warm-up cannot precede 'plateau' (it steps on the validation loss)", field=f"{field}.warmup")
    if warmup >= horizon > 0:
        raise UserError(f"warm-up of {warmup} steps is not shorter than the schedule's {horizon}", field=f"{field}.warmup")
    if info.cls is None and not warmup:
        return None
    try:
        main = None if info.cls is None else info.cls(optimizer, **{**info.defaults(max(1, horizon - warmup)), **kwargs})
    except (TypeError, ValueError) as exc:
        raise UserError(f"scheduler {name!r}: {exc}", field=f"{field}.kwargs") from None
    if not warmup:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    if main is None:
        return ramp
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
