"""MSTLF: multi-scale texture loss (Di Feola et al., "Multi-scale texture loss for CT denoising with
GANs", arXiv 2403.16640).

Inputs ``pred``, ``target``: ``(N, 1, H, W)`` in network normalisation ``(HU + 1024)/4096`` (about
[0, 1]; :mod:`benchmark.core.conventions`), H, W > 7. Output: a scalar ≥ 0, 0 for identical inputs.

**Texture grid.** For each image, soft GLCMs (:mod:`losses.glcm`) at a 4 × 4 grid of offsets — rows
are the angles 0°, 45°, 90°, 135°, columns the distances {1, 3, 5, 7} pixels at 0°/90° and
{1, 2, 4, 6} diagonal steps at 45°/135° (offsets (±d, ±d), as in the paper's code; in scikit-image's
``distances`` that is d·√2) — and from each GLCM the chosen Haralick features T (contrast,
homogeneity, correlation, asm; default contrast only, as in the paper's code), contrast and homogeneity
on the 256-level reference scale (below). The deviation grid is ``Δ = |T(pred) − T(target)|`` of shape
(N, F, 4, 4), F = number of features.

**Reference scale: the same statistic whatever L.** In bin units GLCM contrast grows with (L − 1)²: at 64
levels it is ~16× smaller than at the paper's 256 for the same images, so the paper's λ = 0.001 would
mean 16× less. Here every gray-level difference is measured in normalised gray levels and rescaled to
``REFERENCE_LEVELS = 256`` levels (:mod:`losses.glcm`, ``reference_levels``): contrast is
``(255/(L − 1))² · Σ_ij P_ij (i − j)²``, homogeneity uses ``1/(1 + (255/(L − 1))²(i − j)²)``. At L = 256
nothing changes; at other L the grid estimates the same texture statistic in the same units (bin² of a
256-level GLCM over ``value_range``, the paper's). Measured on the same images (6 synth test slices,
25 % vs 100 % dose, and pydicom's CT_small with 30 HU noise): with the paper's soft binning
(``sigma=0.25, normalize=False``) the grid at L = 256 is the official formulation's to float64 round-off
and at L = 64 within 2 % of it (Δ aggregates within 2 %); with the default σ (one bin) the 64- and
256-level aggregates agree within 8 % (synth slices; 4 % on CT_small), since the bin, hence σ, is 4×
wider at 64 levels.

**Aggregation** (per feature, then summed over features, then averaged over the batch):

* ``max``: ``max_grid Δ``; ``average``: ``mean_grid Δ``; ``frobenius``: ``‖Δ‖_F = √(Σ_grid Δ²)``
  (static rules; the paper's code weights the texture term by λ = 0.001 against the adversarial
  loss: set λ as this term's weight in the matrix YAML, e.g. ``{mse: 1, mstlf: 0.001}``).
* ``attention``: as in the paper's code, Δ is first min-max normalised over the batch (per feature),
  ``Δ̂ = (Δ − min_batch Δ)/(max_batch Δ − min_batch Δ)`` in [0, 1] (0 instead of 0/0 when all
  deviations are equal, e.g. identical inputs), then a SAGAN self-attention layer (Zhang et al., ICML
  2019) over the 16 grid positions: ``y = Δ̂ + γ·(V Δ̂) softmax((QΔ̂)ᵀ(KΔ̂))ᵀ`` with 1×1 convolutions Q, K
  (F → max(1, F//8)) and V (F → F, no bias so that y = 0 when Δ̂ = 0), γ a learnable scalar
  initialised at 0; loss = ``Σ_grid |y|`` (a sum over the 16 positions, as the paper's code). Its
  parameters are trained with the generator (``LossInfo.has_parameters``) and initialised from a local
  generator seeded by ``init_seed`` (independent of the global RNG). At γ = 0 it equals the paper's
  code's value, ``mean_N Σ_grid Δ̂``: per sample and feature a sum of 16 values in [0, 1] (the batch's
  largest deviation counts 1, its smallest 0). The normalisation makes the term scale-free: it does not
  depend on L, nor on the size of the deviations, only on their pattern over the grid and the batch
  (it does not shrink as pred → target; its gradient carries 1/(max Δ − min Δ) and also flows through
  the batch's extreme deviations, as in the paper's code). The paper adds it unweighted. The attention
  is trained on the same objective it computes, so it can learn to down-weight grid positions; the
  paper's design, kept here.

**Differences from the paper's public code** (read for facts only):

* Its 90° and 135° GLCM calls pass the bin range as (−1, −1), so all 256 bin centres collapse to −1
  and those 8 grid entries measure nothing; here every angle uses the same ``value_range``.
* It concatenates the per-offset (N, 1) features along the batch axis and then views them as
  (N, 1, 4, 4), which mixes samples whenever N > 1; here each sample has its own grid.
* Its attention aggregation returns ``|mean_N Σ_grid y|`` (0/0 for identical inputs); here
  ``mean_N Σ_grid |y|`` with the min-max denominator guarded: the same value while y ≥ 0 (always at
  γ = 0), but the attention cannot cancel positive against negative entries, and its value projection
  has no bias.
* Its data loader min-max normalises each slice (after clipping to [−1024, 3071] HU) to [−1, 1], the
  range its bins cover; here the bins cover the fixed network range, which is the same for a slice
  that spans [−1024, 3071] HU. For a slice spanning a narrower HU range R its contrast is larger by
  about (4095/R)² (e.g. 2.8× for the synth slices' ~2430 HU).
* Its angle labels 45°/135° are swapped relative to scikit-image's convention used here; the two
  diagonals carry the same distances, so this only permutes grid rows.

**Defaults.** ``levels = 256`` as in the paper; ``value_range = (0, 1)`` (the whole network range,
−1024 … 3072 HU, i.e. the paper's bins over [−1, 1] after its HU clip to [−1024, 3071]; ``window``
restricts the bins to an HU window of :mod:`benchmark.core.conventions` instead); ``sigma = None`` =
one bin spacing with per-pixel normalised weights (see :mod:`losses.glcm` for why). The paper's code
uses unnormalised weights with σ = 0.5 on its [−1, 1] bin range, a quarter of the range: ``sigma=0.25,
normalize=False`` on (0, 1) (what ``benchmark/presets/mstlf*.yaml`` use). Its GLCM is smoothed over ~64
of 256 bins, and its contrast deviations are smaller than the near-hard GLCM's of the default σ: on
the images above the default gives 1.1× (synth slices) to 2.2× (CT_small) the paper's values, so
only the paper's soft binning puts λ = 0.001 at the paper's scale. With a σ fixed in gray levels like
the paper's the number of levels hardly matters (64 levels: within 2 %), so 64 levels lose little.

**Scale.** Contrast is in bin² units of a 256-level GLCM over ``value_range`` whatever ``levels`` (above);
homogeneity, correlation and ASM lie in [0, 1] or [−1, 1] (ASM still depends on L); with several
features their aggregated deviations are simply summed, so contrast dominates unless it is left out.

**Cost** (``benchmarks/bench_mstlf.py``; RED-CNN, batch 16, 64×64, L = 256, 2 loaded CPU cores):
an MSE + contrast-MSTLF training step takes 1.1× the MSE step (the public code's einsum formulation:
4.7×; the texture term alone is ~50× faster than that formulation); ``asm`` needs the 16 L×L GLCMs
and costs about as much as the einsum formulation (all four features: 6.9×, +2.3 GiB peak RSS). Those
figures are for the default σ (~21 bins per pixel); the paper's σ weights every bin of every pixel:
texture term forward + backward on 1 core, batch 16 × 64², 256 levels 0.75 s against 0.12 s; batch
8 × 40², 64 levels 34 ms against 24 ms.

Hand-written: no library provides a differentiable GLCM texture loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from benchmark.core.conventions import hu_to_net, parse_window
from losses.glcm import FEATURES, Offset, glcm_features

AGGREGATIONS = ("max", "average", "frobenius", "attention")
REFERENCE_LEVELS = 256  # contrast and homogeneity are on the scale of a 256-level GLCM, the paper's
ANGLES = (0, 45, 90, 135)
AXIAL_DISTANCES = (1, 3, 5, 7)  # 0° and 90°
DIAGONAL_STEPS = (1, 2, 4, 6)  # 45° and 135°, in diagonal steps


def mstlf_offsets(axial: Sequence[int] = AXIAL_DISTANCES, diagonal: Sequence[int] = DIAGONAL_STEPS) -> list[Offset]:
    """The grid's ``(dr, dc)`` offsets, angle-major (0°, 45°, 90°, 135°) as in :func:`losses.glcm.glcm_offsets`."""
    if len(axial) != len(diagonal):
        raise ValueError(f"axial and diagonal distance lists must have the same length, got {axial} and {diagonal}")
    return (
        [(0, int(d)) for d in axial]
        + [(int(d), int(d)) for d in diagonal]
        + [(int(d), 0) for d in axial]
        + [(int(d), -int(d)) for d in diagonal]
    )


def texture_grid(x: torch.Tensor, features: Sequence[str], offsets: Sequence[Offset], levels: int,
                 sigma: float | None, value_range: tuple[float, float], normalize: bool) -> torch.Tensor:
    """Haralick features on the offset grid, on the ``REFERENCE_LEVELS`` scale: (N, 1, H, W) →
    (N, F, 4, n_distances)."""
    feats = glcm_features(x, offsets, features, levels, sigma, value_range, normalize=normalize,
                          reference_levels=REFERENCE_LEVELS)
    grid = torch.stack([feats[f] for f in features], dim=1)
    return grid.reshape(grid.shape[0], grid.shape[1], len(ANGLES), -1)


class GridSelfAttention(nn.Module):
    """SAGAN self-attention over the positions of a small grid: (N, C, h, w) → (N, C, h, w)."""

    def __init__(self, channels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))
        with torch.no_grad():
            for conv in (self.query, self.key, self.value):
                bound = 1.0 / math.sqrt(conv.in_channels)  # PyTorch's default Conv2d bound
                conv.weight.uniform_(-bound, bound, generator=generator)
                if conv.bias is not None:
                    conv.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)  # (N, C', hw)
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2)  # (N, C, hw)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (N, hw, hw): row = query position
        out = (v @ attn.transpose(1, 2)).reshape(n, c, h, w)
        return x + self.gamma * out


def minmax_over_batch(delta: torch.Tensor) -> torch.Tensor:
    """``(Δ − min)/(max − min)`` with min and max over the batch and the grid, per feature (the paper's
    code's normalisation before the attention): (N, F, h, w) → same shape, in [0, 1]; 0 where all of a
    feature's deviations are equal (instead of 0/0)."""
    lo = delta.amin(dim=(0, 2, 3), keepdim=True)
    hi = delta.amax(dim=(0, 2, 3), keepdim=True)
    return (delta - lo) / (hi - lo).clamp_min(torch.finfo(delta.dtype).tiny)


def aggregate(delta: torch.Tensor, how: str, attention: nn.Module | None = None) -> torch.Tensor:
    """Deviation grid (N, F, h, w) → scalar: per-feature rule, summed over F, averaged over N."""
    flat = delta.flatten(2)
    if how == "max":
        per = flat.amax(dim=-1)
    elif how == "average":
        per = flat.mean(dim=-1)
    elif how == "frobenius":
        per = torch.linalg.vector_norm(flat, dim=-1)
    elif how == "attention":
        assert attention is not None
        per = attention(minmax_over_batch(delta)).flatten(2).abs().sum(dim=-1)
    else:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    return per.sum(dim=1).mean()


def mstlf(pred: torch.Tensor, target: torch.Tensor, *, aggregation: str = "average",
          features: Sequence[str] = ("contrast",), levels: int = 256, sigma: float | None = None,
          value_range: tuple[float, float] = (0.0, 1.0), normalize: bool = True,
          attention: nn.Module | None = None) -> torch.Tensor:
    """Functional MSTLF (module docstring); ``attention`` is required for ``aggregation="attention"``."""
    offsets = mstlf_offsets()
    args = (features, offsets, levels, sigma, value_range, normalize)
    delta = (texture_grid(pred, *args) - texture_grid(target, *args)).abs()
    return aggregate(delta, aggregation, attention)


class MSTLFLoss(nn.Module):
    """Multi-scale texture loss with a static aggregation (``max``, ``average``, ``frobenius``);
    see the module docstring for the formula and defaults. No parameters."""

    allowed_aggregations: tuple[str, ...] = ("max", "average", "frobenius")

    def __init__(
        self,
        *,
        aggregation: str = "average",
        features: Sequence[str] = ("contrast",),
        levels: int = 256,
        sigma: float | None = None,
        value_range: Sequence[float] = (0.0, 1.0),
        window: str | None = None,
        normalize: bool = True,
        axial_distances: Sequence[int] = AXIAL_DISTANCES,
        diagonal_steps: Sequence[int] = DIAGONAL_STEPS,
    ) -> None:
        super().__init__()
        if aggregation not in self.allowed_aggregations:
            hint = " (the attention aggregation is the loss 'mstlf_attention')" if aggregation == "attention" else ""
            raise ValueError(
                f"aggregation {aggregation!r} is not one of {', '.join(self.allowed_aggregations)}{hint}"
            )
        self.features = tuple(features)
        bad = [f for f in self.features if f not in FEATURES]
        if bad or not self.features or len(set(self.features)) != len(self.features):
            raise ValueError(f"features {list(features)} must be distinct names from {', '.join(FEATURES)}")
        if window is not None:
            w = parse_window(window)
            value_range = (float(hu_to_net(w.lo)), float(hu_to_net(w.hi)))
        if len(value_range) != 2 or not value_range[1] > value_range[0]:
            raise ValueError(f"value_range must be [lo, hi] with hi > lo, got {list(value_range)}")
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.aggregation = aggregation
        self.levels = int(levels)
        self.sigma = sigma
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.normalize = bool(normalize)
        self.offsets = mstlf_offsets(axial_distances, diagonal_steps)
        self.attention: GridSelfAttention | None = None

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """Texture grid T(x): (N, 1, H, W) → (N, F, 4, n_distances)."""
        return texture_grid(x, self.features, self.offsets, self.levels, self.sigma, self.value_range, self.normalize)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        delta = (self.grid(pred) - self.grid(target)).abs()
        return aggregate(delta, self.aggregation, self.attention)


class MSTLFAttentionLoss(MSTLFLoss):
    """MSTLF with the self-attention aggregation (module docstring). Trainable parameters (the SAGAN
    layer over the grid, γ initialised at 0) join the generator's optimizer and its checkpoint."""

    allowed_aggregations = ("attention",)

    def __init__(
        self,
        *,
        features: Sequence[str] = ("contrast",),
        levels: int = 256,
        sigma: float | None = None,
        value_range: Sequence[float] = (0.0, 1.0),
        window: str | None = None,
        normalize: bool = True,
        axial_distances: Sequence[int] = AXIAL_DISTANCES,
        diagonal_steps: Sequence[int] = DIAGONAL_STEPS,
        init_seed: int = 0,
    ) -> None:
        super().__init__(
            aggregation="attention", features=features, levels=levels, sigma=sigma, value_range=value_range,
            window=window, normalize=normalize, axial_distances=axial_distances, diagonal_steps=diagonal_steps,
        )
        self.attention = GridSelfAttention(len(self.features), torch.Generator().manual_seed(int(init_seed)))


__all__ = [
    "AGGREGATIONS",
    "REFERENCE_LEVELS",
    "GridSelfAttention",
    "MSTLFAttentionLoss",
    "MSTLFLoss",
    "aggregate",
    "minmax_over_batch",
    "mstlf",
    "mstlf_offsets",
    "texture_grid",
]
