"""LSGAN adversarial term (Mao et al., "Least squares generative adversarial networks", ICCV 2017;
the ``lsgan`` mode of pix2pix/CycleGAN, Isola et al., CVPR 2017).

Inputs ``(N, 1, H, W)`` in network normalisation; H, W ≥ 24 for the default ``patchgan``. On D's raw
score map (one score per 70×70 patch; E averages over map elements and the batch, as pix2pix's
``MSELoss`` does), with labels a = 0 (fake), b = c = 1:

* generator term: ``½·E[(D(pred) − 1)²]`` ≥ 0 (pix2pix omits the ½: its weight 1 is our weight 2);
* discriminator loss: ``½·E[(D(real) − 1)²] + ½·E[D(fake)²]``.

Defaults as in pix2pix: 70×70 PatchGAN, 1 D step per generator step, Adam betas (0.5, 0.999) at the
generator's lr (pix2pix: 2e-4 for both; :mod:`losses.adversarial`)."""

from __future__ import annotations

import torch

from losses.adversarial import GANTerm


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """``E[(D(·) − c)²]`` over D's score map with ``c = 1`` for ``real`` and 0 otherwise (Mao et al. 2017
    with labels a = 0, b = c = 1; the un-halved form CycleGAN's ``GANLoss('lsgan')`` uses). Scalar ≥ 0."""
    return ((scores - (1.0 if real else 0.0)) ** 2).mean()


class LSGANLoss(GANTerm):
    """Least-squares GAN term; see the module docstring."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * lsgan_loss(self.generator_output(pred), True)

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        d_real = self.discriminator(real)
        d_fake = self.discriminator(fake.detach())
        loss = 0.5 * lsgan_loss(d_real, True) + 0.5 * lsgan_loss(d_fake, False)
        return loss, {"critic": float(loss.detach()), "d_real": float(d_real.detach().mean()),
                      "d_fake": float(d_fake.detach().mean())}
