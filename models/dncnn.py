"""DnCNN (Zhang et al., "Beyond a Gaussian denoiser: residual learning of deep CNN for image
denoising", IEEE TIP 26(7), 2017).

``depth`` 3×3 convolutions with ``channels`` filters: Conv+ReLU, (depth − 2) × Conv+BN+ReLU, Conv.
Residual learning: the network predicts the noise and returns ``x − noise``. Default depth 17,
64 channels. Input/output ``(N, 1, H, W)`` in network normalisation; padding keeps the size.

``zero_init_output=True`` zero-initialises the last convolution, so the untrained network returns its
input (noise estimate 0) and training starts from the low-dose image (Goyal et al. 2017's zero-γ
trick). Off by default, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn


class DnCNN(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int = 1,
        depth: int = 17,
        channels: int = 64,
        kernel_size: int = 3,
        batch_norm: bool = True,
        zero_init_output: bool = False,
    ) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")
        pad = kernel_size // 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, kernel_size, padding=pad), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(channels, in_channels, kernel_size, padding=pad))
        self.body = nn.Sequential(*layers)
        if zero_init_output:
            last = self.body[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    @staticmethod
    def min_input_size(**_: object) -> int:
        """Size-preserving padded convolutions: any side."""
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)
