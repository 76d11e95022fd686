"""Plain residual denoiser (the ResNet of Missert et al., 2018, built like the EDSR body of Lim et al.,
"Enhanced deep residual networks for single image super-resolution", CVPRW 2017), in 2-D
(:class:`ResNet`) and 3-D (:class:`ResNet3D`), one implementation parametrised by the number of spatial
dimensions.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from models.init import zero_init


class _Block(nn.Module):
    """``x + conv(ReLU(conv(x)))``, BatchNorm after each convolution when asked (their bias dropped)."""

    def __init__(self, dims: int, channels: int, kernel_size: int, batch_norm: bool) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        pad = kernel_size // 2
        layers: list[nn.Module] = [conv(channels, channels, kernel_size, padding=pad, bias=not batch_norm)]
        if batch_norm:
            layers.append(norm(channels))
        layers.append(nn.ReLU(inplace=True))
        layers.append(conv(channels, channels, kernel_size, padding=pad, bias=not batch_norm))
        if batch_norm:
            layers.append(norm(channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ResNet(nn.Module):
    """The network of :class:`ResNet` / :class:`ResNet3D`; ``spatial_dims`` (2 or 3) is set by the subclass."""

    spatial_dims: ClassVar[int] = 2

    def __init__(
        self,
        *,
        in_channels: int = 1,
        blocks: int = 16,
        channels: int = 64,
        kernel_size: int = 3,
        batch_norm: bool = False,
        zero_init_output: bool = False,
    ) -> None:
        super().__init__()
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (size-preserving padding), got {kernel_size}")
        d = self.spatial_dims
        conv = nn.Conv2d if d == 2 else nn.Conv3d
        pad = kernel_size // 2
        self.head = conv(in_channels, channels, kernel_size, padding=pad)
        self.body = nn.Sequential(*[_Block(d, channels, kernel_size, batch_norm) for _ in range(blocks)])
        self.tail = conv(channels, in_channels, kernel_size, padding=pad)
        if zero_init_output:
            zero_init(self.tail)

    @staticmethod
    def min_input_size(**_: object) -> int:
        """Size-preserving (zero-)padded stride-1 convolutions: any side."""
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.spatial_dims
        if x.dim() != d + 2:
            shape = "(N, C, H, W)" if d == 2 else "(N, C, D, H, W)"
            raise ValueError(f"{type(self).__name__} expects {shape}, got {tuple(x.shape)}")
        return x + self.tail(self.body(self.head(x)))


class ResNet(_ResNet):
    """2-D residual denoiser: ``y = x + tail(blocks(head(x)))``.

    Input/output ``(N, 1, H, W)`` in network normalisation ((HU + 1024) / 4096, ≈ [0, 1]), any H, W
    (every convolution is stride 1 with ``kernel_size // 2`` zero padding); the output is not clamped.

    Layers: a head convolution ``in_channels → channels`` (no activation, as EDSR); ``blocks`` residual
    blocks ``h + conv(ReLU(conv(h)))`` with ``channels`` filters and no BatchNorm by default (Lim et al.,
    CVPRW 2017, drop it: it normalises away the intensity range a regression network must reproduce;
    ``batch_norm=True`` puts it after each convolution of a block and drops their biases); a tail
    convolution ``channels → in_channels``; and the global residual: the tail is added to the input
    (the network learns the noise correction, Missert et al. 2018). ``zero_init_output`` zero-initialises
    the tail, so the untrained network is the identity (as :class:`models.dncnn.DnCNN`).

    Parameters at the defaults (16 blocks, 64 channels, 3×3, no BatchNorm):
    ``(9·64 + 64) + 16·2·(9·64·64 + 64) + (9·64 + 1)`` = 1,182,913.
    """


class ResNet3D(_ResNet):
    """3-D residual denoiser, the design of :class:`ResNet` with 3×3×3 convolutions.

    Input/output ``(N, 1, D, H, W)`` in network normalisation, any D, H, W; ``y = x + tail(blocks(head(x)))``;
    same arguments and defaults as :class:`ResNet`.

    Parameters at the defaults: ``(27·64 + 64) + 16·2·(27·64·64 + 64) + (27·64 + 1)`` = 3,544,513.
    """

    spatial_dims: ClassVar[int] = 3


__all__ = ["ResNet", "ResNet3D"]
