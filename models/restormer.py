"""Restormer (Zamir, Arora, Khan, Hayat, Khan & Yang, "Restormer: efficient transformer for
high-resolution image restoration", CVPR 2022): the hourglass of :mod:`models.hourglass` with transformer
blocks of multi-Dconv head transposed attention (MDTA) and gated-Dconv feed-forward networks (GDFN).

Block (eq. 1–5 of the paper), on ``X (N, C, H, W)``::

    X ← X + MDTA(LN(X))          LN: Restormer's bias-free channel LayerNorm (x / σ · γ)
    X ← X + GDFN(LN(X))          GDFN: gated-Dconv FFN, hidden = int(2.66 · C), GELU gate

    MDTA(Y) = W_p · V̂ · softmax(K̂ᵀ Q̂ ⊙ τ)     per head: Q, K, V = 3×3 depthwise conv(1×1 conv(Y)),
                                              split into ``heads`` groups of C/heads channels, Q̂, K̂
                                              L2-normalised along the H·W pixels, τ a learned temperature
                                              per head; the attention map is (C/heads) × (C/heads),
                                              across channels, whatever H·W.

Defaults are the paper's: dim 48, blocks [4, 6, 6, 8], 4 refinement blocks, heads [1, 2, 4, 8], FFN
expansion 2.66, no biases, bias-free LayerNorm (its denoising configuration). Trainable parameters: 26,111,668
with 3 input/output channels — the paper's 26.1 M; ``layernorm_bias=True`` adds 14,976 LayerNorm biases,
26,126,644, the 26.13 M of its tables — and 26,109,076 with 1 channel (the default here, single-slice CT).
Input/output ``(N, in_channels, H, W)`` in network normalisation, any H, W (padded to a multiple of 8
and cropped back), ``output = input + conv(features)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.hourglass import GDFN, ChannelLayerNorm, Hourglass


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (Restormer eq. 2–3). ``(N, C, H, W)`` → same shape."""

    def __init__(self, channels: int, heads: int, *, bias: bool = False) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} attention heads")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=bias)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        q, k, v = (t.reshape(n, self.heads, c // self.heads, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, 1))
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The transposed attention map, ``(N, heads, C/heads, C/heads)``, rows summing to 1."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(x.shape))


class TransformerBlock(nn.Module):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``. ``(N, C, H, W)`` → same shape."""

    def __init__(self, channels: int, heads: int, *, ffn_expansion_factor: float = 2.66, bias: bool = False,
                 layernorm_bias: bool = False) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels, bias=layernorm_bias)
        self.attn = MDTA(channels, heads, bias=bias)
        self.norm2 = ChannelLayerNorm(channels, bias=layernorm_bias)
        self.ffn = GDFN(channels, ffn_expansion_factor, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Restormer(Hourglass):
    """Restormer; see the module docstring. ``heads[level]`` attention heads at each hourglass level."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layernorm_bias: bool = False,
        zero_init_output: bool = False,
    ) -> None:
        heads = [int(h) for h in heads]
        if len(heads) != 4:
            raise ValueError(f"heads must be 4 numbers (one per level), got {heads}")

        def block(channels: int, level: int) -> nn.Module:
            return TransformerBlock(channels, heads[level], ffn_expansion_factor=ffn_expansion_factor, bias=bias,
                                    layernorm_bias=layernorm_bias)

        super().__init__(block, in_channels=in_channels, out_channels=out_channels, dim=dim, num_blocks=num_blocks,
                         num_refinement_blocks=num_refinement_blocks, bias=bias, zero_init_output=zero_init_output)

    @staticmethod
    def min_input_size(**_: object) -> int:
        """Inputs are padded to a multiple of 8 and cropped back: any side."""
        return 1


__all__ = ["MDTA", "Restormer", "TransformerBlock"]
