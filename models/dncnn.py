"""DnCNN (Zhang et al., "Beyond a Gaussian denoiser: residual learning of deep CNN for image
denoising", IEEE TIP 26(7), 2017), for slices (:class:`DnCNN`) and volumes (:class:`DnCNN3D`), one
implementation parametrised by the number of spatial dimensions.

``depth`` convolutions of side ``kernel_size`` with ``channels`` filters: Conv+ReLU, (depth − 2) ×
Conv+BN+ReLU, Conv. Residual learning: the network predicts the noise and returns ``x − noise``.
Default depth 17, 64 channels, 3×3 (2-D) or 3×3×3 (3-D) kernels. Input/output ``(N, 1, H, W)`` or
``(N, 1, D, H, W)`` in network normalisation; zero padding keeps the size, so any size is accepted.

``zero_init_output=True`` zero-initialises the last convolution, so the untrained network returns its
input (noise estimate 0) and training starts from the low-dose image (Goyal et al. 2017's zero-γ
trick). Off by default, as in the paper.

``init``: ``"default"`` (PyTorch's initialisation, which shrinks the activations ~0.41× per ReLU
layer) or ``"he"`` (He et al. 2015, the DnCNN paper's); see :mod:`models.init`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from models.init import InitName, init_weights, zero_init


class _DnCNN(nn.Module):
    """The network of :class:`DnCNN` / :class:`DnCNN3D`; ``spatial_dims`` (2 or 3) is set by the subclass."""

    spatial_dims: ClassVar[int] = 2

    def __init__(
        self,
        *,
        in_channels: int = 1,
        depth: int = 17,
        channels: int = 64,
        kernel_size: int = 3,
        batch_norm: bool = True,
        zero_init_output: bool = False,
        init: InitName = "default",
    ) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")
        conv = nn.Conv2d if self.spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if self.spatial_dims == 2 else nn.BatchNorm3d
        pad = kernel_size // 2
        layers: list[nn.Module] = [conv(in_channels, channels, kernel_size, padding=pad), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(conv(channels, channels, kernel_size, padding=pad, bias=not batch_norm))
            if batch_norm:
                layers.append(norm(channels))
            layers.append(nn.ReLU(inplace=True))
        layers.append(conv(channels, in_channels, kernel_size, padding=pad))
        self.body = nn.Sequential(*layers)
        init_weights(self, init)
        if zero_init_output:
            zero_init(self.body[-1])

    @staticmethod
    def min_input_size(**_: object) -> int:
        """Size-preserving padded convolutions: any side."""
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            shape = "(N, C, H, W)" if self.spatial_dims == 2 else "(N, C, D, H, W)"
            raise ValueError(f"{type(self).__name__} expects {shape}, got {tuple(x.shape)}")
        return x - self.body(x)


class DnCNN(_DnCNN):
    """2-D DnCNN on slices ``(N, 1, H, W)``; see the module docstring. Parameters at the defaults
    (depth 17, 64 channels, 3×3, BatchNorm): 556,097."""


class DnCNN3D(_DnCNN):
    """3-D DnCNN on volumes or slabs ``(N, 1, D, H, W)``: the design of :class:`DnCNN` with 3×3×3
    convolutions and 3-D BatchNorm. Each layer widens the receptive field by ``kernel_size − 1`` slices, so ``depth``
    layers see ``depth · (kernel_size − 1) / 2`` slices on either side. Parameters at the defaults
    (depth 17, 64 channels, 3×3×3, BatchNorm): 1,664,321."""

    spatial_dims: ClassVar[int] = 3


__all__ = ["DnCNN", "DnCNN3D"]
