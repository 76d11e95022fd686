"""Denoising architectures and discriminators. ``ARCHITECTURES`` maps matrix-YAML names to metadata.

Models take explicit keyword arguments and never download anything in their constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from benchmark.core.registry import construct, lookup
from models.denomamba import DenoMamba
from models.discriminators import PatchGAN, WGANCritic
from models.dncnn import DnCNN, DnCNN3D
from models.redcnn import REDCNN
from models.resnet import ResNet, ResNet3D
from models.resnet_gen import ResNetGenerator
from models.restormer import Restormer
from models.unet import UNet, UNet3D
from models.unit import UNIT


@dataclass(frozen=True)
class ModelInfo:
    """A registered network: its class and fixed metadata. The smallest input side it accepts is
    derived from the constructor's arguments (the class's ``min_input_size``: receptive field of
    unpadded layers, number of down-sampling levels), not stored."""

    cls: type[nn.Module]
    summary: str
    paper: str = ""
    dims: tuple[int, ...] = (2,)
    parameters: int = 0  # trainable parameters at the default arguments (tests/test_models.py checks it)

    def arguments(self, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every constructor argument with ``kwargs`` applied over the defaults."""
        bound = inspect.signature(self.cls).bind(**dict(kwargs or {}))
        bound.apply_defaults()
        return dict(bound.arguments)

    def min_size_for(self, kwargs: Mapping[str, Any] | None = None) -> int:
        """The smallest input side the network built with ``kwargs`` accepts."""
        return int(self.cls.min_input_size(**self.arguments(kwargs)))  # type: ignore[attr-defined]

    @property
    def min_size(self) -> int:
        """:meth:`min_size_for` at the default arguments."""
        return self.min_size_for()


# The one place where denoising architectures are registered.
ARCHITECTURES: dict[str, ModelInfo] = {
    "redcnn": ModelInfo(REDCNN, "RED-CNN, 10 layers, 96 filters 5x5, 3 residual shortcuts", "Chen et al., IEEE TMI 2017",
                        parameters=1_848_865),
    "dncnn": ModelInfo(DnCNN, "DnCNN, 17 layers, 64 filters 3x3, residual learning", "Zhang et al., IEEE TIP 2017",
                       parameters=556_097),
    "restormer": ModelInfo(Restormer, "Restormer, 4-level transformer hourglass, channel (transposed) attention + "
                           "gated-Dconv FFN, dim 48, blocks [4,6,6,8], 4 refinement", "Zamir et al., CVPR 2022",
                           parameters=26_109_076),
    "denomamba": ModelInfo(DenoMamba, "DenoMamba, Restormer hourglass with FuseSSM blocks: spatial + channel Mamba, "
                           "gated conv, conv fusion; dim 48, blocks [4,6,6,8], 2 refinement", "Öztürk, Duran & Çukur, "
                           "IEEE JBHI 2025 (arXiv 2409.13094)", parameters=100_644_564),
    "dncnn3d": ModelInfo(DnCNN3D, "3-D DnCNN, 17 layers, 64 filters 3x3x3, residual learning", "Zhang et al., IEEE TIP "
                         "2017 (3-D convolutions)", dims=(3,), parameters=1_664_321),
    "unet": ModelInfo(UNet, "U-Net, 4 levels, 64-1024 filters 3x3, BatchNorm, skip concatenation, residual output",
                      "Ronneberger et al., MICCAI 2015; Jin et al. (FBPConvNet), IEEE TIP 2017", parameters=31_036_481),
    "resnet": ModelInfo(ResNet, "residual CNN, head + 16 residual blocks (64 filters 3x3, no BN) + tail, global residual",
                        "Missert et al. 2018; Lim et al. (EDSR), CVPRW 2017", parameters=1_182_913),
    "resnet_gen": ModelInfo(ResNetGenerator, "CycleGAN ResNet generator, c7s1-64 d128 d256 9xR256 u128 u64 c7s1-1, "
                            "InstanceNorm, residual output", "Johnson et al., ECCV 2016; Zhu et al., ICCV 2017",
                            parameters=11_370_881),
    "unet3d": ModelInfo(UNet3D, "3-D U-Net, 4 levels, 64-1024 filters 3x3x3, BatchNorm, skip concatenation, residual "
                        "output", "Ronneberger et al., MICCAI 2015; Cicek et al., MICCAI 2016", dims=(3,),
                        parameters=90_298_561),
    "resnet3d": ModelInfo(ResNet3D, "3-D residual CNN, head + 16 residual blocks (64 filters 3x3x3) + tail, global "
                          "residual", "Missert et al. 2018; Lim et al. (EDSR), CVPRW 2017", dims=(3,),
                          parameters=3_544_513),
    "unit": ModelInfo(UNIT, "UNIT two-domain translator (LD 'a' <-> ND 'b') for the `unit` training scheme: 2 encoders "
                      "c7s1-64 d128 d256 + 4xR256 and 2 decoders 4xR256 u128 u64 c7s1-1, the last encoder block and the "
                      "first decoder block shared, InstanceNorm, Gaussian latent; forward = LD->ND, no residual output",
                      "Liu, Breuel & Kautz, NeurIPS 2017 (arXiv 1703.00848)", parameters=18_019_074),
}

# The one place where discriminators (critics) are registered.
DISCRIMINATORS: dict[str, ModelInfo] = {
    "wgan_critic": ModelInfo(
        WGANCritic, "plain CNN critic: 5 convs (k3/k5, strides 1/3), LeakyReLU 0.2, score map", "Gulrajani et al., "
        "NeurIPS 2017 (WGAN-GP)", parameters=764_033,
    ),
    "patchgan": ModelInfo(
        PatchGAN, "70x70 PatchGAN: C64-C128-C256-C512, 4x4 kernels, LeakyReLU 0.2, batch/instance/no norm",
        "Isola et al., pix2pix, CVPR 2017", parameters=2_763_585,
    ),
}


def build_model(name: str, kwargs: dict[str, Any] | None = None, *, registry: dict[str, ModelInfo] | None = None,
                field: str = "architectures") -> nn.Module:
    """Instantiate a registered model; bad kwargs raise a :class:`UserError` naming the field."""
    reg = ARCHITECTURES if registry is None else registry
    kind = "architecture" if reg is ARCHITECTURES else "discriminator"
    info = lookup(reg, name, kind, field=field)
    return construct(info.cls, kwargs, f"{kind} {name!r}", field=field)


def spatial_dims(model: nn.Module) -> int:
    """2 for a network on slices ``(N, 1, H, W)``, 3 for one on volumes ``(N, 1, D, H, W)``: the module's
    ``spatial_dims`` attribute where it has one, else the ``dims`` of its class's registry entry when
    that is a single number, else 2. Inference (:mod:`benchmark.evaluate`) and the training data of a
    cell (:mod:`benchmark.train`) follow it."""
    dims = getattr(model, "spatial_dims", None)
    if dims is None:
        found = {d for info in ARCHITECTURES.values() if type(model) is info.cls for d in info.dims}
        dims = found.pop() if len(found) == 1 else 2
    return int(dims)


__all__ = ["ARCHITECTURES", "DISCRIMINATORS", "ModelInfo", "build_model", "spatial_dims"]
