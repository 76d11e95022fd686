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
from models.discriminators import PatchGAN, WGANCritic
from models.dncnn import DnCNN
from models.redcnn import REDCNN


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


__all__ = ["ARCHITECTURES", "DISCRIMINATORS", "ModelInfo", "build_model"]
