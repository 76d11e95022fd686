"""Shared machinery of the adversarial terms (:mod:`losses.wgan_gp`, :mod:`losses.lsgan`,
:mod:`losses.vanilla_gan`): building the discriminator from ``models.DISCRIMINATORS``, its optimizer
config, and evaluating it without touching its gradients during the generator step.

Protocol (:class:`losses.base.AdversarialLoss`): ``forward(pred, target)`` is the generator's term;
the runner trains ``discriminator`` with its own optimizer (``optimizer_config``) for
``critic_steps`` steps per generator step on :meth:`critic_loss` of the real target and a detached
fake. Discriminators are unconditional, D(image).

The discriminator's learning rate is the cell's generator rate (``training.optimizer.lr``, without its
schedule) unless the term sets ``lr``: WGAN-GP (Gulrajani et al. 2017: 1e-4 both), pix2pix (Isola et al.
2017: 2e-4 both) and WGAN-VGG (Yang et al. 2018: 1e-5 both) train both networks at one rate. A fixed critic
rate left behind a raised generator rate is what made the critic fall behind in the RED-CNN + WGAN-GP CPU
study (generator 1e-3, critic 1e-4: the critic scored shifted fakes above real images and the output drifted
by ~350 HU; at equal rates the drift was −9 HU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from losses.base import AdversarialLoss
from models import DISCRIMINATORS, build_model


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` do not require grad inside the block (restored after): the generator
    step then computes no discriminator gradients, which also leaves D's ``.grad`` untouched."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def scores(discriminator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-sample score: the mean of D's output map, (N, 1, h, w) → (N,)."""
    return discriminator(x).flatten(1).mean(dim=1)


class GANTerm(AdversarialLoss):
    """Base of the adversarial terms: builds D and the optimizer config from kwargs."""

    default_discriminator: ClassVar[str] = "patchgan"
    default_optimizer: ClassVar[Mapping[str, Any]] = {"name": "adam", "betas": (0.5, 0.999)}
    """The discriminator's optimizer without ``lr`` (the generator's unless given; module docstring)."""
    default_critic_steps: ClassVar[int] = 1

    def __init__(
        self,
        *,
        discriminator: str | None = None,
        discriminator_kwargs: dict[str, Any] | None = None,
        critic_steps: int | None = None,
        lr: float | None = None,
        betas: Sequence[float] | None = None,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__()
        name = discriminator or self.default_discriminator
        self.discriminator_name = name
        self.discriminator = build_model(
            name, discriminator_kwargs, registry=DISCRIMINATORS, field="losses.discriminator"
        )
        steps = self.default_critic_steps if critic_steps is None else int(critic_steps)
        if steps < 1:
            raise ValueError(f"critic_steps must be >= 1, got {critic_steps}")
        self.critic_steps = steps
        config = dict(self.default_optimizer)
        if lr is not None:
            if not lr > 0:
                raise ValueError(f"lr must be > 0, got {lr}")
            config["lr"] = float(lr)
        if betas is not None:
            if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
                raise ValueError(f"betas must be two numbers in [0, 1), got {list(betas)}")
            config["betas"] = (float(betas[0]), float(betas[1]))
        if weight_decay is not None:
            if weight_decay < 0:
                raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
            config["weight_decay"] = float(weight_decay)
        self.optimizer_config = config

    def generator_output(self, pred: torch.Tensor) -> torch.Tensor:
        """D's score map of the generator output, (N, 1, h, w), with D's parameters frozen."""
        with frozen(self.discriminator):
            return self.discriminator(pred)
