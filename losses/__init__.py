"""Training losses. ``LOSSES`` maps the names used in the matrix YAML to their metadata and class."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from benchmark.core.registry import construct, lookup
from losses.base import AdversarialLoss, CompositeLoss, LossInfo
from losses.charbonnier import CharbonnierLoss
from losses.l1 import L1Loss
from losses.lsgan import LSGANLoss
from losses.ms_ssim import MSSSIMLoss
from losses.mse import MSELoss
from losses.mstlf import MSTLFAttentionLoss, MSTLFLoss
from losses.ssim import SSIMLoss
from losses.upl import UPLLoss
from losses.vanilla_gan import VanillaGANLoss
from losses.vgg import VGGLoss
from losses.wgan_gp import WGANGPLoss

_MSTLF_PAPER = "Di Feola et al., Multi-scale texture loss for CT denoising with GANs, arXiv 2403.16640"

# The one place where losses are registered.
LOSSES: dict[str, LossInfo] = {
    "mse": LossInfo(MSELoss, "mean squared error", "Chen et al., RED-CNN, IEEE TMI 2017", dims=(2, 3), tags=("pixel",)),
    "l1": LossInfo(L1Loss, "mean absolute error", "Zhao et al., IEEE TCI 2017", dims=(2, 3), tags=("pixel",)),
    "charbonnier": LossInfo(
        CharbonnierLoss, "sqrt((x-y)^2 + eps^2), eps=1e-3", "Lai et al., LapSRN, CVPR 2017", dims=(2, 3), tags=("pixel",)
    ),
    "ssim": LossInfo(
        SSIMLoss, "1 - SSIM, Gaussian 11x11 sigma 1.5 (piq), net space or an HU window",
        "Wang et al., IEEE TIP 2004; Zhao et al., IEEE TCI 2017", value_domain=(0.0, 2.0), tags=("structural",),
    ),
    "ms_ssim": LossInfo(
        MSSSIMLoss, "1 - MS-SSIM, Gaussian 11x11 sigma 1.5 (piq), 1-5 scales",
        "Wang, Simoncelli & Bovik, Asilomar 2003; Zhao et al., IEEE TCI 2017", value_domain=(0.0, 1.0),
        tags=("structural",),
    ),
    "vgg": LossInfo(
        VGGLoss, "VGG16/19 feature distance at named layers (ImageNet weights file), L1/L2",
        "Johnson et al., ECCV 2016; Yang et al., WGAN-VGG, IEEE TMI 2018", needs_weights=True, tags=("perceptual",),
    ),
    "upl": LossInfo(
        UPLLoss, "untrained perceptual loss: random frozen conv net (seeded), feature L2/L1",
        "Pfaehler et al., arXiv 2411.05884", dims=(2, 3), tags=("perceptual",),
    ),
    "mstlf": LossInfo(
        MSTLFLoss, "multi-scale soft-GLCM texture loss, static aggregation (max/average/frobenius)",
        _MSTLF_PAPER, tags=("texture",),
    ),
    "mstlf_attention": LossInfo(
        MSTLFAttentionLoss, "multi-scale soft-GLCM texture loss, self-attention aggregation (trainable)",
        _MSTLF_PAPER, has_parameters=True, tags=("texture",),
    ),
    "wgan_gp": LossInfo(
        WGANGPLoss, "WGAN-GP generator term -E[D(G(x))]; critic with gradient penalty (lambda 10), 5 critic steps",
        "Gulrajani et al., NeurIPS 2017", value_domain=(-math.inf, math.inf), adversarial=True, tags=("adversarial",),
    ),
    "lsgan": LossInfo(
        LSGANLoss, "least-squares GAN term 0.5*E[(D(G(x))-1)^2], 70x70 PatchGAN", "Mao et al., ICCV 2017",
        adversarial=True, tags=("adversarial",),
    ),
    "vanilla": LossInfo(
        VanillaGANLoss, "non-saturating BCE GAN term, 70x70 PatchGAN (pix2pix: {l1: 100, vanilla: 1})",
        "Goodfellow et al., NeurIPS 2014; Isola et al., pix2pix, CVPR 2017", adversarial=True, tags=("adversarial",),
    ),
}


def build_term(name: str, kwargs: dict[str, Any] | None = None, *, field: str = "losses") -> nn.Module:
    """Instantiate one registered loss; bad kwargs raise a :class:`UserError` naming the field."""
    info = lookup(LOSSES, name, "loss", field=field)
    return construct(info.cls, kwargs, f"loss {name!r}", field=field)


def build_loss(terms: list[tuple[str, float, dict[str, Any]]], *, field: str = "losses") -> CompositeLoss:
    """Build the weighted sum of ``(name, weight, kwargs)`` terms."""
    return CompositeLoss([(n, w, build_term(n, kw, field=f"{field}.{n}")) for n, w, kw in terms])


__all__ = ["LOSSES", "AdversarialLoss", "CompositeLoss", "LossInfo", "build_loss", "build_term"]
