"""WGAN-GP adversarial term (Gulrajani et al., "Improved training of Wasserstein GANs", NeurIPS 2017),
as used for LDCT denoising with a RED-CNN generator.

Inputs ``pred`` (denoised), ``target`` (normal dose): ``(N, 1, H, W)`` in network normalisation
(about [0, 1]); H, W ≥ the discriminator's minimum (27 for ``wgan_critic``). With the critic's
per-sample score ``D(x)`` (mean of its score map):

* generator term (``forward``): ``−E[D(pred)]`` (unbounded, any sign);
* critic loss: ``E[D(fake)] − E[D(real)] + λ·E[(‖∇_x̂ D(x̂)‖₂ − 1)²]``, λ = 10,
  ``x̂ = ε·real + (1 − ε)·fake``, ε ~ U(0, 1) per sample, drawn on the CPU from the runner's seeded
  generator and then moved to the device (same ε on CPU and GPU).

Defaults of the benchmark's RED-CNN + WGAN-GP configuration: the plain CNN critic ``wgan_critic``,
5 critic steps per generator step, Adam at the generator's lr (:mod:`losses.adversarial`), betas
(0.9, 0.999), weight decay 2e-5; in the matrix YAML the composite ``{mse: 0.95, wgan_gp: 0.05}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from losses.adversarial import GANTerm, scores

WGAN_OPTIMIZER = {"name": "adam", "betas": (0.9, 0.999), "weight_decay": 2e-5}


def gradient_penalty(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``E[(‖∇_x̂ D(x̂)‖₂ − 1)²]`` on random interpolates (module docstring); differentiable w.r.t. D."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, dtype=real.dtype)
    eps = eps.to(real.device)
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(scores(discriminator, mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


class WGANGPLoss(GANTerm):
    """WGAN-GP generator term ``−E[D(pred)]`` and critic loss with gradient penalty (module docstring)."""

    default_discriminator = "wgan_critic"
    default_optimizer = WGAN_OPTIMIZER
    default_critic_steps = 5

    def __init__(
        self,
        *,
        gp_weight: float = 10.0,
        discriminator: str | None = None,
        discriminator_kwargs: dict[str, Any] | None = None,
        critic_steps: int | None = None,
        lr: float | None = None,
        betas: Sequence[float] | None = None,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__(discriminator=discriminator, discriminator_kwargs=discriminator_kwargs,
                         critic_steps=critic_steps, lr=lr, betas=betas, weight_decay=weight_decay)
        if gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {gp_weight}")
        self.gp_weight = float(gp_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -self.generator_output(pred).mean()

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        fake = fake.detach()
        d_real = scores(self.discriminator, real).mean()
        d_fake = scores(self.discriminator, fake).mean()
        gp = gradient_penalty(self.discriminator, real, fake, generator)
        loss = d_fake - d_real + self.gp_weight * gp
        logs = {"critic": float(loss.detach()), "gp": float(gp.detach()), "wasserstein": float((d_real - d_fake).detach())}
        return loss, logs
