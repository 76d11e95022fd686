"""LSGAN adversarial term (Mao et al., "Least squares generative adversarial networks", ICCV 2017;
the ``lsgan`` mode of pix2pix/CycleGAN, Isola et al., CVPR 2017).

Inputs ``(N, 1, H, W)`` in network normalisation; H, W ≥ 24 for the default ``patchgan``. On D's raw
score map (one score per 70×70 patch; E averages over map elements and the batch, as pix2pix's
``MSELoss`` does), with labels a = 0 (fake), b = c = 1:

* generator term: ``½·E[(D(pred) − 1)²]`` ≥ 0 (pix2pix omits the ½: its weight 1 is our weight 2);
* discriminator loss: ``½·E[(D(real) − 1)²] + ½·E[D(fake)²]``.

Defaults as in pix2pix: 70×70 PatchGAN, 1 D step per generator step, Adam lr 2e-4, betas (0.5, 0.999)."""

from __future__ import annotations

import torch

from losses.adversarial import GANTerm


class LSGANLoss(GANTerm):
    """Least-squares GAN term; see the module docstring."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.generator_output(pred) - 1.0) ** 2).mean()

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        d_real = self.discriminator(real)
        d_fake = self.discriminator(fake.detach())
        loss = 0.5 * ((d_real - 1.0) ** 2).mean() + 0.5 * (d_fake**2).mean()
        return loss, {"critic": float(loss.detach()), "d_real": float(d_real.detach().mean()),
                      "d_fake": float(d_fake.detach().mean())}
