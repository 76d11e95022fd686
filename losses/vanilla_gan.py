"""Vanilla (cross-entropy) GAN term (Goodfellow et al., NeurIPS 2014), in the non-saturating form and
the ``vanilla`` mode of pix2pix (Isola et al., "Image-to-image translation with conditional
adversarial networks", CVPR 2017).

Inputs ``(N, 1, H, W)`` in network normalisation; H, W ≥ 24 for the default ``patchgan``. On D's raw
score map (logits, one per 70×70 patch; E averages over map elements and the batch), with
``BCE(z, t) = −t·log σ(z) − (1 − t)·log(1 − σ(z))`` computed stably from logits:

* generator term: ``E[BCE(D(pred), 1)] = E[−log σ(D(pred))]`` ≥ 0;
* discriminator loss: ``½·(E[BCE(D(real), 1)] + E[BCE(D(fake), 0)])`` (pix2pix halves it).

pix2pix's objective ``L_cGAN + λ·L1`` with λ_L1 = 100 is the matrix composite ``{l1: 100, vanilla: 1}``
(unconditional D here; pass ``discriminator_kwargs: {in_channels: 2}`` only with a runner that feeds
(input, output) pairs). Defaults: 70×70 PatchGAN with batch norm, 1 D step, Adam lr 2e-4, betas (0.5, 0.999).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from losses.adversarial import GANTerm


class VanillaGANLoss(GANTerm):
    """Non-saturating cross-entropy GAN term; see the module docstring."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self.generator_output(pred)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        d_real = self.discriminator(real)
        d_fake = self.discriminator(fake.detach())
        loss = 0.5 * (
            F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        )
        logs = {"critic": float(loss.detach()), "d_real": float(torch.sigmoid(d_real.detach()).mean()),
                "d_fake": float(torch.sigmoid(d_fake.detach()).mean())}
        return loss, logs
