"""Loss metadata, the weighted-sum container used by the runner, and the adversarial-term protocol.

Every registered loss is an ``nn.Module`` whose ``forward(pred, target)`` returns a scalar. Inputs are
``(N, 1, H, W)`` (or ``(N, 1, D, H, W)`` for 3-D losses) in the network normalisation of
:mod:`benchmark.core.conventions` (``(HU + 1024) / 4096``, about [0, 1]).

Checkpoints hold :meth:`CompositeLoss.checkpoint_state`: trainable parameters and buffers only, so
frozen backbones (VGG, uPL's random nets) are rebuilt from their weights file / seed, never copied
into every epoch's checkpoint.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LossInfo:
    """Fixed metadata of a registered loss; the runner and the analysis read this, never name lists."""

    cls: type[nn.Module]
    summary: str
    paper: str = ""
    differentiable: bool = True
    higher_is_better: bool = False
    value_domain: tuple[float, float] = (0.0, math.inf)
    needs_weights: bool = False  # pretrained weights files (see benchmark.core.weights)
    has_parameters: bool = False  # trainable parameters that join the generator's optimizer
    adversarial: bool = False  # owns a discriminator trained by its own optimizer (AdversarialLoss)
    dims: tuple[int, ...] = (2,)  # spatial dimensions supported
    tags: tuple[str, ...] = field(default_factory=tuple)

    def dims_for(self, kwargs: Mapping[str, Any] | None = None) -> tuple[int, ...]:
        """The spatial dimensions a term built with ``kwargs`` accepts: the value of its constructor's
        ``dims`` argument where it has one (uPL builds either a 2-D or a 3-D network), else :attr:`dims`."""
        params = inspect.signature(self.cls).parameters
        if "dims" in params:
            value = dict(kwargs or {}).get("dims", params["dims"].default)
            if isinstance(value, int) and value in self.dims:
                return (value,)
        return self.dims


class AdversarialLoss(nn.Module):
    """Protocol for adversarial terms (WGAN-GP, LSGAN, vanilla GAN).

    ``forward(pred, target)`` is the generator's term. The runner trains ``discriminator`` with its
    own optimizer built from ``optimizer_config`` for ``critic_steps`` steps per generator step, each
    on :meth:`critic_loss` of the real target and a detached fake. All randomness (e.g. WGAN-GP
    interpolation weights) comes from the ``generator`` the runner passes, seeded per cell.
    """

    critic_steps: int = 1
    discriminator: nn.Module
    optimizer_config: dict[str, Any]

    def critic_loss(
        self, real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class CompositeLoss(nn.Module):
    """A weighted sum ``Σ w_i · L_i(pred, target)`` of registered losses.

    :meth:`compute` returns the total and each term's unweighted value (logged per epoch in
    ``history.csv`` as ``loss_<name>``); ``forward`` returns the total only. With no terms (a GAN
    framework's baseline: nothing added to its own objective) the total is 0.
    """

    def __init__(self, terms: list[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        self.names = [n for n, _, _ in terms]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate loss terms {self.names}")
        self.weights = {n: float(w) for n, w, _ in terms}
        self.terms = nn.ModuleDict({n: m for n, _, m in terms})

    @property
    def adversarial_terms(self) -> dict[str, AdversarialLoss]:
        return {n: m for n, m in self.terms.items() if isinstance(m, AdversarialLoss)}

    def compute(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None if self.names else pred.new_zeros(())
        for name in self.names:
            v = self.terms[name](pred, target)
            values[name] = v.detach()
            total = self.weights[name] * v if total is None else total + self.weights[name] * v
        assert total is not None
        return total, values

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.compute(pred, target)[0]

    def generator_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of non-adversarial terms (e.g. MSTLF's attention): they join the
        denoiser's optimizer."""
        return [
            p for n, m in self.terms.items() if not isinstance(m, AdversarialLoss) for p in m.parameters() if p.requires_grad
        ]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and all buffers (frozen backbone weights are left out)."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable or k in dict(self.named_buffers())}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        frozen = {n for n, p in self.named_parameters() if not p.requires_grad}
        bad = [k for k in missing if k not in frozen]
        if bad or unexpected:
            raise RuntimeError(f"loss state does not match: missing {bad}, unexpected {list(unexpected)}")
