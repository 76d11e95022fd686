"""uPL: untrained perceptual loss (Pfaehler et al., arXiv 2411.05884).

A small convolutional network φ with random, frozen weights; the loss compares its feature maps of the
denoised image and the target::

    uPL(ŷ, y) = Σ_{j ∈ layers} mean |φ_j(ŷ) − φ_j(y)|^p,   p = 2 (``distance="l2"``) or 1 (``"l1"``)

φ is ``depth`` blocks of conv (``kernel_size``, "same" padding, zero bias) → ReLU, with optional 2×
pooling (``none``, ``max``, ``avg``) between blocks; φ_j is the output of block j (1-based). The paper's
ablation axes are all exposed: depth 3–7 (default 5, the paper's best), kernel 3/5/7, channels,
pooling, initialisation and compared layers; ``dims=2`` for slices ``(N, 1, H, W)`` and ``dims=3``
(Conv3d) for volumes/slabs ``(N, 1, D, H, W)``. With pooling every side must be ≥ 2^(depth−1).

Initialisations (weights; biases are 0): ``kaiming`` = He normal, fan-in, ReLU gain (default);
``xavier`` = Glorot normal; ``normal`` = N(0, 0.02²); ``uniform`` = U(±1/√fan_in) (PyTorch's conv
default range). They are drawn from a local ``torch.Generator`` seeded by ``init_seed`` (not the
cell's seed), so every cell of a matrix compares against the same network, rebuilt identically in the
constructor and never stored in checkpoints. No public code exists; written from the paper's
description.

Scale (``normalize=True``, the default): the value is divided by one constant fixed at construction,
the loss between a probe image and a blank one, ``s = uPL(z, 0) = Σ_j mean |φ_j(z)|^p`` (``φ_j(0) = 0``:
zero biases), with ``z ~ U(0, 1)`` of side 32 (2-D) or 16 (3-D), at least ``2^(depth−1)`` with pooling
(so the deepest block still sees ≥ 1 pixel a side), drawn from its own fixed seed :data:`PROBE_SEED`
(not ``init_seed``, whose stream draws the weights). A network whose compared blocks are all zero on the
probe (every ReLU dead, possible with very few channels) is refused. The minimiser and the weighting of
the layers are the paper's; only the arbitrary overall scale goes. Without it the initialisations differ
in scale by orders of magnitude (measured on 48² CT patches in network units, depth 5 × 16 channels: loss
1.6·10⁻³ with ``kaiming``, 7·10⁻⁷ with ``normal``, whose features shrink ~6× per layer), and at ~10⁻⁷
Adam's ε = 10⁻⁸ exceeds √v for most weights, so the update shrinks by up to ~500× and the denoiser does
not move: a comparison of initialisations would then measure the optimiser's ε, not the loss.
``normalize=False`` gives the paper's raw value.

Inputs in network normalisation ``(HU + 1024)/4096`` (about [0, 1]), fed as they are. Value ≥ 0,
0 for identical inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from losses.features import DISTANCES, feature_distance

POOLINGS = ("none", "max", "avg")
INITS = ("kaiming", "xavier", "normal", "uniform")
DEPTHS = range(3, 8)
PROBE_SEED = 2411_05884
"""Seed of the probe image that fixes uPL's scale (the paper's arXiv number), independent of ``init_seed``."""


def _init_weight(weight: torch.Tensor, how: str, generator: torch.Generator) -> None:
    fan_in = weight[0].numel()
    if how == "kaiming":
        nn.init.kaiming_normal_(weight, nonlinearity="relu", generator=generator)
    elif how == "xavier":
        nn.init.xavier_normal_(weight, generator=generator)
    elif how == "normal":
        nn.init.normal_(weight, 0.0, 0.02, generator=generator)
    else:
        bound = fan_in**-0.5
        nn.init.uniform_(weight, -bound, bound, generator=generator)


def random_feature_net(*, depth: int, kernel_size: int, channels: Sequence[int], pooling: str, init: str,
                       dims: int, init_seed: int) -> nn.ModuleList:
    """The frozen blocks of φ (module docstring), built deterministically from ``init_seed``."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = {"max": nn.MaxPool2d if dims == 2 else nn.MaxPool3d, "avg": nn.AvgPool2d if dims == 2 else nn.AvgPool3d}
    gen = torch.Generator().manual_seed(int(init_seed))
    blocks = nn.ModuleList()
    c_in = 1
    for j, c_out in enumerate(channels):
        layers: list[nn.Module] = []
        if j > 0 and pooling != "none":
            layers.append(pool[pooling](2))
        c = conv(c_in, c_out, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            _init_weight(c.weight, init, gen)
            assert c.bias is not None
            c.bias.zero_()
        layers += [c, nn.ReLU()]
        blocks.append(nn.Sequential(*layers))
        c_in = c_out
    blocks.requires_grad_(False)
    return blocks.eval()


class UPLLoss(nn.Module):
    """Untrained perceptual loss; see the module docstring."""

    def __init__(
        self,
        *,
        depth: int = 5,
        kernel_size: int = 3,
        channels: int | Sequence[int] = 32,
        pooling: str = "none",
        init: str = "kaiming",
        layers: Sequence[int] | None = None,
        distance: str = "l2",
        dims: int = 2,
        init_seed: int = 0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be {DEPTHS.start}..{DEPTHS.stop - 1}, got {depth}")
        if kernel_size not in (3, 5, 7):
            raise ValueError(f"kernel_size must be 3, 5 or 7, got {kernel_size}")
        chans = [int(channels)] * depth if isinstance(channels, int) else [int(c) for c in channels]
        if len(chans) != depth or min(chans) < 1:
            raise ValueError(f"channels must be a positive int or {depth} positive ints (one per layer), got {channels}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        chosen = list(range(1, depth + 1)) if layers is None else sorted({int(j) for j in layers})
        if not chosen or chosen[0] < 1 or chosen[-1] > depth:
            raise ValueError(f"layers must be block numbers in 1..{depth}, got {layers}")
        self.layers = chosen
        self.distance = distance
        self.dims = dims
        self.pooling = pooling
        self.net = random_feature_net(depth=depth, kernel_size=kernel_size, channels=chans, pooling=pooling,
                                      init=init, dims=dims, init_seed=init_seed)
        self.scale = 1.0
        if normalize:
            side = 32 if dims == 2 else 16
            if pooling != "none":
                side = max(side, 2 ** (depth - 1))
            probe = torch.rand((1, 1) + (side,) * dims, generator=torch.Generator().manual_seed(PROBE_SEED))
            with torch.no_grad():
                self.scale = float(self(probe, torch.zeros_like(probe)))  # the raw value: scale is still 1
            if not math.isfinite(self.scale) or self.scale <= 0:
                raise ValueError(f"uPL's network (depth {depth}, channels {chans}, init {init!r}, init_seed {init_seed}) "
                                 f"is zero on every compared block for the probe image (scale {self.scale}): choose "
                                 "another init_seed or more channels, or normalize: false")

    def train(self, mode: bool = True) -> UPLLoss:
        """The random network always stays in eval mode."""
        super().train(mode)
        self.net.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """φ_j(x) for the compared blocks j."""
        if x.dim() != self.dims + 2 or x.shape[1] != 1:
            shape = "(N, 1, H, W)" if self.dims == 2 else "(N, 1, D, H, W)"
            raise ValueError(f"uPL with dims={self.dims} expects {shape}, got {tuple(x.shape)}")
        out = []
        for j, block in enumerate(self.net[: self.layers[-1]], start=1):
            x = block(x)
            if j in self.layers:
                out.append(x)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return feature_distance(self.features(pred), self.features(target), self.distance) / self.scale
