"""The ``pix2pix`` scheme (Isola, Zhu, Zhou & Efros, "Image-to-image translation with conditional
adversarial networks", CVPR 2017): a generator G (the cell's architecture; U-Net or ResNet in the
paper) and a *conditional* 70×70 PatchGAN D that sees the pair (LDCT, image) stacked as 2 channels.

Per step, on a paired batch ``(x, y)`` (LD, ND), in the order of the paper's code:

1. D step: ``L_D = ½·[c(D(x, y), real) + c(D(x, G(x)), fake)]`` on a detached G(x);
2. G step, D frozen: ``L_G = λ_GAN·c(D(x, G(x)), real) + λ_L1·‖G(x) − y‖₁ + Σ_k w_k·L_k(G(x), y)``,

with ``c`` the vanilla (cross-entropy) criterion (``gan: lsgan`` as an option), λ_GAN = 1, λ_L1 = 100, and the
cell's loss entry ``Σ_k w_k L_k`` as the *extra* terms (MSTLF on G(LD) vs ND in the MSTLF study;
empty = the pix2pix baseline). Both networks use the matrix's ``training.optimizer`` (paper: Adam
2e-4, β1 0.5) and schedule. Logged terms: ``G_gan``, ``l1``, each extra term, ``D``.

``lambda_gan: 0`` is the supervised pre-training of the same generator (SRGAN/ESRGAN practice, issue #21):
``λ_L1·‖G(x) − y‖₁`` plus the extra terms, with no discriminator update and no adversarial term (``G_gan``
and ``D`` are not logged). Its final weights are the shared start (``init_from``) of the adversarial cells.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark.config import TrainingConfig
from benchmark.core.registry import lookup
from benchmark.schemes.base import GAN_CRITERIA, Scheme, l1, parameters
from benchmark.step_settings import StepSettings
from losses.base import CompositeLoss
from models import DISCRIMINATORS, build_model


class Pix2Pix(Scheme):
    """pix2pix; see the module docstring."""

    name = "pix2pix"

    def __init__(self, *, model: nn.Module, loss: CompositeLoss, training: TrainingConfig, rng: torch.Generator,
                 steps: int = 1, lambda_l1: float = 100.0, lambda_gan: float = 1.0, gan: str = "vanilla",
                 conditional: bool = True,
                 discriminator: str = "patchgan", discriminator_kwargs: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(model=model, loss=loss, training=training, rng=rng, steps=steps)
        if lambda_l1 < 0:
            raise ValueError(f"lambda_l1 must be >= 0, got {lambda_l1}")
        if lambda_gan < 0:
            raise ValueError(f"lambda_gan must be >= 0, got {lambda_gan}")
        self.lambda_l1, self.lambda_gan = float(lambda_l1), float(lambda_gan)
        self.criterion = lookup(GAN_CRITERIA, gan, "GAN criterion", field="scheme_kwargs.gan")
        self.conditional = bool(conditional)
        kw = {"in_channels": 2 if conditional else 1, **(discriminator_kwargs or {})}
        self.networks["D"] = build_model(discriminator, kw, registry=DISCRIMINATORS, field="scheme_kwargs.discriminator")
        self.add_optimizer("G", parameters(model, loss), training.optimizer, field="training.optimizer")
        self.add_optimizer("D", parameters(self.networks["D"]), training.optimizer, field="training.optimizer")

    def _d(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.networks["D"](torch.cat([x, image], dim=1) if self.conditional else image)

    def discriminator_step(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, settings: StepSettings
                           ) -> torch.Tensor:  # fmt: skip
        """One update of D on the real pair (x, y) and the detached fake pair (x, G(x)); returns L_D."""
        c = self.criterion

        def objective() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            loss = 0.5 * (c(self._d(x, y), True) + c(self._d(x, fake.detach()), False))
            return loss, {"D": loss}

        return self.update("D", objective, settings)[0]

    def generator_step(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, settings: StepSettings
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """One update of G (and trainable loss parameters) on ``fake = G(x)``, D frozen."""

        def objective() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            rec = l1(fake, y)
            extra, extra_terms = self.extra_terms(fake, y)
            if not self.lambda_gan:
                return self.lambda_l1 * rec + extra, {"l1": rec, **extra_terms}
            g_gan = self.criterion(self._d(x, fake), True)
            return self.lambda_gan * g_gan + self.lambda_l1 * rec + extra, {"G_gan": g_gan, "l1": rec, **extra_terms}

        return self.update("G", objective, settings, frozen=[self.networks["D"]], clip=True)

    def step(self, x: torch.Tensor, y: torch.Tensor, settings: StepSettings
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
        fake = self.model(x)
        loss_d = self.discriminator_step(x, y, fake, settings) if self.lambda_gan else None
        total, terms = self.generator_step(x, y, fake, settings)
        logs = {k: v.detach() for k, v in terms.items()}
        if loss_d is not None:
            logs["D"] = loss_d
        return total, logs, {}
