"""The 4-level U-shaped hourglass of Restormer (Zamir et al., "Restormer: efficient transformer for
high-resolution image restoration", CVPR 2022, Fig. 2) with a pluggable block, shared by
:class:`models.restormer.Restormer` (transformer blocks) and :class:`models.denomamba.DenoMamba` (FuseSSM
blocks, Öztürk et al., IEEE JBHI 2025, which uses the same hourglass).

Layout (``dim`` = C, ``num_blocks`` = [n1, n2, n3, n4], ``block(channels, level)`` builds one block)::

    patch embed   3×3 conv, in_channels → C                                  H × W
    encoder 1     n1 blocks at C                                             H × W
    down 1→2      3×3 conv C → C/2, pixel-unshuffle 2 → 2C                   H/2
    encoder 2     n2 blocks at 2C;  down 2→3 → 4C;  encoder 3: n3 blocks at 4C   H/4
    down 3→4      → 8C;  latent: n4 blocks at 8C                             H/8
    up 4→3        3×3 conv 8C → 16C, pixel-shuffle 2 → 4C; concat encoder 3 (8C); 1×1 conv → 4C; n3 blocks
    up 3→2        → 2C; concat encoder 2 (4C); 1×1 conv → 2C; n2 blocks
    up 2→1        → C; concat encoder 1 (2C), no reduction; n1 blocks at 2C
    refinement    num_refinement_blocks blocks at 2C
    output        3×3 conv 2C → out_channels;   result = input + output   (global residual)

Input/output ``(N, in_channels, H, W)`` in network normalisation, any H, W ≥ 1: the input is padded on the
bottom/right to a multiple of 8 (reflection, or replication for sides under 8) and the output cropped back,
so the output has the input's shape. ``zero_init_output=True`` zero-initialises the output convolution,
so the untrained network is the identity (Goyal et al. 2017's zero-γ trick); off by default, as in the papers.

Also here, because both architectures use them: the channel LayerNorm of Restormer (with or without bias)
and the gated-Dconv feed-forward network (GDFN, Restormer Sec. 3.2; DenoMamba's gated convolution network).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.init import zero_init

BlockFactory = Callable[[int, int], nn.Module]
"""``block(channels, level)`` → a module mapping ``(N, channels, H, W)`` to the same shape; ``level`` is the
hourglass level 0–3 (0 for the full-resolution decoder and refinement blocks at 2·dim)."""

MULTIPLE = 8  # three 2× down-samplings


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channels of ``(N, C, H, W)`` at every pixel (Restormer's ``LayerNorm``).

    ``bias=True``: ``(x − μ) / sqrt(σ² + ε) · γ + β``. ``bias=False`` (Restormer's "bias-free" variant):
    ``x / sqrt(σ² + ε) · γ`` — scaled by the channel standard deviation but not centred. ``ε = 1e-5``.
    """

    def __init__(self, channels: int, *, bias: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        if self.bias is not None:
            x = x - mean
        y = x * torch.rsqrt(var + self.eps) * self.weight[:, None, None]
        return y if self.bias is None else y + self.bias[:, None, None]


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network (Restormer eq. 5): ``W_o (GELU(W_1 x) ⊙ W_2 x)`` where ``W_1, W_2``
    are a 1×1 conv to ``hidden = int(channels · expansion)`` followed by a 3×3 depthwise conv.
    ``(N, channels, H, W)`` → same shape."""

    def __init__(self, channels: int, expansion: float = 2.66, *, bias: bool = False) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        if hidden < 1:
            raise ValueError(f"ffn_expansion_factor {expansion} leaves no hidden channel for {channels} channels")
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


def _downsample(channels: int) -> nn.Module:
    """``(N, c, H, W)`` → ``(N, 2c, H/2, W/2)``: 3×3 conv to c/2 channels, pixel-unshuffle."""
    return nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def _upsample(channels: int) -> nn.Module:
    """``(N, c, H, W)`` → ``(N, c/2, 2H, 2W)``: 3×3 conv to 2c channels, pixel-shuffle."""
    return nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Pad the bottom and right of ``(N, C, H, W)`` to sides that are multiples of ``multiple``
    (reflection; replication when a side is too short to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class Hourglass(nn.Module):
    """The hourglass above, with ``block(channels, level)`` as its block (see :data:`BlockFactory`)."""

    def __init__(
        self,
        block: BlockFactory,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        bias: bool = False,
        zero_init_output: bool = False,
    ) -> None:
        super().__init__()
        num_blocks = [int(n) for n in num_blocks]
        if len(num_blocks) != 4 or min(num_blocks) < 1:
            raise ValueError(f"num_blocks must be 4 numbers >= 1, got {num_blocks}")
        if num_refinement_blocks < 0:
            raise ValueError(f"num_refinement_blocks must be >= 0, got {num_refinement_blocks}")
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be even and >= 2 (pixel-unshuffle halves then quadruples it), got {dim}")
        if in_channels != out_channels:
            raise ValueError(f"the global residual needs out_channels == in_channels, got {out_channels} and {in_channels}")

        def stage(channels: int, level: int, count: int) -> nn.Sequential:
            return nn.Sequential(*(block(channels, level) for _ in range(count)))

        c1, c2, c3, c4 = dim, 2 * dim, 4 * dim, 8 * dim
        self.patch_embed = nn.Conv2d(in_channels, c1, 3, padding=1, bias=bias)
        self.encoder_level1 = stage(c1, 0, num_blocks[0])
        self.down1_2 = _downsample(c1)
        self.encoder_level2 = stage(c2, 1, num_blocks[1])
        self.down2_3 = _downsample(c2)
        self.encoder_level3 = stage(c3, 2, num_blocks[2])
        self.down3_4 = _downsample(c3)
        self.latent = stage(c4, 3, num_blocks[3])
        self.up4_3 = _upsample(c4)
        self.reduce_chan_level3 = nn.Conv2d(2 * c3, c3, 1, bias=bias)
        self.decoder_level3 = stage(c3, 2, num_blocks[2])
        self.up3_2 = _upsample(c3)
        self.reduce_chan_level2 = nn.Conv2d(2 * c2, c2, 1, bias=bias)
        self.decoder_level2 = stage(c2, 1, num_blocks[1])
        self.up2_1 = _upsample(c2)
        self.decoder_level1 = stage(2 * c1, 0, num_blocks[0])
        self.refinement = stage(2 * c1, 0, num_refinement_blocks)
        self.output = nn.Conv2d(2 * c1, out_channels, 3, padding=1, bias=bias)
        if zero_init_output:
            zero_init(self.output)

    @staticmethod
    def min_input_size(**_: object) -> int:
        """Inputs are padded to a multiple of 8 and cropped back: any side."""
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` → ``(N, out_channels, H, W)``: ``x + output conv(features)``."""
        h, w = x.shape[-2:]
        e1 = self.encoder_level1(self.patch_embed(pad_to_multiple(x)))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        d = self.latent(self.down3_4(e3))
        d = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(d), e3], dim=1)))
        d = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d), e2], dim=1)))
        d = self.decoder_level1(torch.cat([self.up2_1(d), e1], dim=1))
        return x + self.output(self.refinement(d))[..., :h, :w]


__all__ = ["GDFN", "BlockFactory", "ChannelLayerNorm", "Hourglass", "pad_to_multiple"]
