"""Denoising architectures and discriminators. ``ARCHITECTURES`` maps matrix-YAML names to metadata.

Models take explicit keyword arguments and never download anything in their constructor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from benchmark.registry import construct, lookup
from models.discriminators import PatchGAN, WGANCritic
from models.dncnn import DnCNN
from models.redcnn import REDCNN


@dataclass(frozen=True)
class ModelInfo:
    cls: type[nn.Module]
    summary: str
    paper: str = ""
    dims: tuple[int, ...] = (2,)
    min_size: int = 1  # smallest input side it accepts


# The one place where denoising architectures are registered.
ARCHITECTURES: dict[str, ModelInfo] = {
    "redcnn": ModelInfo(REDCNN, "RED-CNN, 10 layers, 96 filters 5x5, 3 residual shortcuts", "Chen et al., IEEE TMI 2017", min_size=21),
    "dncnn": ModelInfo(DnCNN, "DnCNN, 17 layers, 64 filters 3x3, residual learning", "Zhang et al., IEEE TIP 2017"),
}

# The one place where discriminators (critics) are registered.
DISCRIMINATORS: dict[str, ModelInfo] = {
    "wgan_critic": ModelInfo(
        WGANCritic, "plain CNN critic: 5 convs (k3/k5, strides 1/3), LeakyReLU 0.2, score map", "Gulrajani et al., "
        "NeurIPS 2017 (WGAN-GP)", min_size=27,
    ),
    "patchgan": ModelInfo(
        PatchGAN, "70x70 PatchGAN: C64-C128-C256-C512, 4x4 kernels, LeakyReLU 0.2, batch/instance/no norm",
        "Isola et al., pix2pix, CVPR 2017", min_size=24,
    ),
}


def build_model(name: str, kwargs: dict[str, Any] | None = None, *, registry: dict[str, ModelInfo] | None = None,
                field: str = "architectures") -> nn.Module:
    """Instantiate a registered model; bad kwargs raise a :class:`UserError` naming the field."""
    reg = ARCHITECTURES if registry is None else registry
    kind = "architecture" if reg is ARCHITECTURES else "discriminator"
    info = lookup(reg, name, kind, field=field)
    return construct(info.cls, kwargs, f"{kind} {name!r}", field=field)


__all__ = ["ARCHITECTURES", "DISCRIMINATORS", "ModelInfo", "build_model"]
