"""Vanilla (cross-entropy) GAN term (Goodfellow et al., NeurIPS 2014), in the non-saturating form and
the ``vanilla`` mode of pix2pix (Isola et al., "Image-to-image translation with conditional
adversarial networks", CVPR 2017).

Inputs ``(N, 1, H, W)`` in network normalisation; H, W ≥ 24 for the default ``patchgan``. On D's raw
score map (logits, one per 70×70 patch; E averages over map elements and the batch), with
``BCE(z, t) = −t·log σ(z) − (1 − t)·log(1 − σ(z))`` computed stably from logits:

* generator term: ``E[BCE(D(pred), 1)] = E[−log σ(D(pred))]`` ≥ 0;
* discriminator loss: ``½·(E[BCE(D(real), 1)] + E[BCE(D(fake), 0)])`` (pix2pix halves it).

As a supervised loss term the discriminator is unconditional, D(image): ``{l1: 100, vanilla: 1}`` is an
unconditional approximation of pix2pix. The real pix2pix, with the conditional D(LDCT, image), is the
``pix2pix`` training scheme (:mod:`benchmark.schemes.pix2pix`), which uses :func:`vanilla_gan_loss`. Defaults: 70×70 PatchGAN with batch norm, 1 D step, Adam betas (0.5, 0.999)
at the generator's lr (pix2pix: 2e-4 for both; :mod:`losses.adversarial`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from losses.adversarial import GANTerm


def vanilla_gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """``E[BCE(D(·), t)]`` over D's logit map with ``t = 1`` for ``real`` and 0 otherwise, computed stably
    from logits (the generator's non-saturating term is ``real=True`` on fakes). Scalar ≥ 0."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


class VanillaGANLoss(GANTerm):
    """Non-saturating cross-entropy GAN term; see the module docstring."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return vanilla_gan_loss(self.generator_output(pred), True)

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        d_real = self.discriminator(real)
        d_fake = self.discriminator(fake.detach())
        loss = 0.5 * (vanilla_gan_loss(d_real, True) + vanilla_gan_loss(d_fake, False))
        logs = {"critic": float(loss.detach()), "d_real": float(torch.sigmoid(d_real.detach()).mean()),
                "d_fake": float(torch.sigmoid(d_fake.detach()).mean())}
        return loss, logs
