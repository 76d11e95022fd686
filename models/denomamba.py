"""DenoMamba (Öztürk, Duran & Çukur, "DenoMamba: a fused state-space model for low-dose CT denoising",
IEEE JBHI 2025, arXiv 2409.13094): the hourglass of :mod:`models.hourglass` with FuseSSM blocks.

FuseSSM block on ``X (N, C, H, W)`` — a spatial SSM module, a channel SSM module followed by a gated
convolution network, and a convolution fusion module (CFM) that consolidates both with the block input
(the identity path; the paper's "low-level input features")::

    S = SpatialSSM(LN(X))              Mamba over the H·W pixels in raster order, C features per token
    Q = GCN(LN(ChannelSSM(LN(X))))     Mamba over the C channels of every pixel (the "transposed" SSM);
                                       GCN: the gated-Dconv FFN of Restormer (expansion 2.66, GELU gate)
    out = CFM([S, Q, X])               3C → C: conv3×3 → conv3×3, plus a 1×1 conv shortcut of the concat

LN is a channel LayerNorm with bias (the authors' code's ``WithBias`` default); the CFM is the authors'
"channel compression" (two 3×3 convolutions plus a 1×1 shortcut). The channel SSM must not depend on the
image size, so its tokens are the C channels of one pixel, each a scalar (a Mamba with ``d_model = 1``, the
same weights at every pixel) — the SSM analogue of Restormer's channel ("transposed") attention; it runs
through :meth:`models.mamba.Mamba.forward_batched` with the pixels innermost, so nothing is transposed.
Mamba layers are :class:`models.mamba.Mamba` (d_state 16, d_conv 4, expand 2), whose selective scan runs
in pure PyTorch on a CPU (:mod:`models.selective_scan`) and in ``mamba_ssm``'s kernel on CUDA.

Defaults: dim 48, blocks [4, 6, 6, 8], 2 refinement blocks (Restormer's width and depth), d_state 16,
d_conv 4, expand 2 — 100,644,564 trainable parameters with 1 input/output channel, 70.1 M of them in the
fusion modules (39·C² per block: two 3×3 convolutions and a 1×1, C up to 384). These are the released
code's sizes too (icon-lab/DenoMamba): its ``DenoMamba`` class defaults to dim 16 and blocks
[1, 2, 2, 3], but its training and test options (``options.py``), through which the released model is
built, default to dim 48, blocks [4, 6, 6, 8] and 2 refinement blocks.

Differences from the released code, and which we follow:

* each released ``MambaLayer`` adds its own LayerNorm after the block's LayerNorm — omitted (the paper
  has one normalisation per SSM path; the second only re-normalises a normalised input);
* its second SSM runs spatially: the ``transpose`` flag is ignored on the fused CUDA path it takes, so
  both SSMs scan the pixels — we follow the paper's channel SSM, since a second spatial SSM is not the
  model the paper describes or evaluates;
* each released FuseSSM holds a 1×1 ``project_out`` (3C → C) that its forward never uses — omitted;
* it has 118.1 M parameters against our 100.6 M: the unused ``project_out``, the extra LayerNorms and a
  channel SSM with ``d_model = C`` (ours has ``d_model = 1``, the same weights at every pixel) account for
  the difference.

The gated convolution network acts on the channel SSM's output before the fusion (the paper's "channel
SSM module equipped with a secondary gated convolution network", and the released code), not after it.

Input/output ``(N, in_channels, H, W)`` in network normalisation, any H, W (padded to a multiple of 8 and cropped back), ``output = input + conv(features)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.hourglass import GDFN, ChannelLayerNorm, Hourglass
from models.mamba import Mamba


class SpatialSSM(nn.Module):
    """Mamba over the ``H·W`` pixels (raster order), ``C`` features per token. ``(N, C, H, W)`` → same."""

    def __init__(self, channels: int, *, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        self.mamba = Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.mamba(x.flatten(2).transpose(1, 2))  # (N, H·W, C)
        return y.transpose(1, 2).reshape(n, c, h, w)


class ChannelSSM(nn.Module):
    """Mamba over the ``C`` channels of every pixel, one scalar per token (``d_model = 1``), the same weights
    at every pixel. ``(N, C, H, W)`` → same."""

    def __init__(self, *, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        self.mamba = Mamba(1, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return self.mamba.forward_batched(x.reshape(n, c, 1, h * w)).reshape(n, c, h, w)


class ConvFusion(nn.Module):
    """Convolution fusion module: ``conv3×3(conv3×3(x)) + conv1×1(x)``, ``in_channels`` → ``channels``."""

    def __init__(self, in_channels: int, channels: int, *, bias: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=bias),
                                  nn.Conv2d(channels, channels, 3, padding=1, bias=bias))
        self.skip = nn.Conv2d(in_channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class FuseSSM(nn.Module):
    """The FuseSSM block of the module docstring. ``(N, C, H, W)`` → same shape."""

    def __init__(self, channels: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 ffn_expansion_factor: float = 2.66, bias: bool = False, layernorm_bias: bool = True) -> None:
        super().__init__()
        self.norm_spatial = ChannelLayerNorm(channels, bias=layernorm_bias)
        self.spatial = SpatialSSM(channels, d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm_channel = ChannelLayerNorm(channels, bias=layernorm_bias)
        self.channel = ChannelSSM(d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm_gcn = ChannelLayerNorm(channels, bias=layernorm_bias)
        self.gcn = GDFN(channels, ffn_expansion_factor, bias=bias)
        self.fusion = ConvFusion(3 * channels, channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spatial(self.norm_spatial(x))
        q = self.gcn(self.norm_gcn(self.channel(self.norm_channel(x))))
        return self.fusion(torch.cat([s, q, x], dim=1))


class DenoMamba(Hourglass):
    """DenoMamba; see the module docstring."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 2,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layernorm_bias: bool = True,
        zero_init_output: bool = False,
    ) -> None:
        def block(channels: int, level: int) -> nn.Module:
            return FuseSSM(channels, d_state=d_state, d_conv=d_conv, expand=expand,
                           ffn_expansion_factor=ffn_expansion_factor, bias=bias, layernorm_bias=layernorm_bias)

        super().__init__(block, in_channels=in_channels, out_channels=out_channels, dim=dim, num_blocks=num_blocks,
                         num_refinement_blocks=num_refinement_blocks, bias=bias, zero_init_output=zero_init_output)

    @staticmethod
    def min_input_size(**_: object) -> int:
        """Inputs are padded to a multiple of 8 and cropped back: any side."""
        return 1


__all__ = ["ChannelSSM", "ConvFusion", "DenoMamba", "FuseSSM", "SpatialSSM"]
