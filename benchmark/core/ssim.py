"""SSIM and MS-SSIM: the one functional behind the ``ssim``/``ms_ssim`` losses and metrics.

piq's pattern: a function of two image batches; the training losses (:mod:`losses.ssim`,
:mod:`losses.ms_ssim`) and the metrics (:mod:`analysis.metrics.full_reference`) are thin wrappers that
map their inputs to [0, 1] and call it. One variant, used everywhere (Wang et al., "Image quality
assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004)::

    SSIM(x, y) = mean_p [(2 μx μy + C1)(2 σxy + C2)] / [(μx² + μy² + C1)(σx² + σy² + C2)],
    C1 = (K1·L)², C2 = (K2·L)², K1 = 0.01, K2 = 0.03, L = data range = 1

Gaussian window 11×11 with σ = 1.5, no downsampling, mean of the valid-convolution map (piq.ssim).

MS-SSIM (Wang, Simoncelli & Bovik, "Multiscale structural similarity for image quality assessment",
Asilomar 2003) with the same window, 2×2 average pooling between scales and the published scale weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)::

    MS-SSIM = Π_{s<S} relu(cs_s)^{w_s} · relu(SSIM_S)^{w_S}

With S scales and 11×11 kernels the image must be at least ``10·2^(S−1) + 1`` pixels a side: 161 for
the standard S = 5. Fewer scales use the first S published weights renormalised to sum 1 (as piq does
for custom weights); S = 5 uses the published weights as they are (piq's default).

Inputs: ``(N, C, H, W)`` tensors in [0, 1] (``data_range = 1``). Outputs: ``(N,)`` with
``reduction="none"``, a scalar with ``"mean"``. Differentiable (the losses backpropagate through it).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from benchmark.core.compat import ensure_torchvision
from benchmark.core.errors import UserError

KERNEL_SIZE = 11
KERNEL_SIGMA = 1.5
SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

Reduction = Literal["none", "mean"]


def piq_module() -> Any:
    """piq, imported on first use: it imports torchvision, which needs :func:`ensure_torchvision` first
    on a CPU-only torch (and loading it at import time would slow every command's start-up)."""
    ensure_torchvision()
    import piq  # after ensure_torchvision(): it imports torchvision

    return piq


def ms_ssim_min_size(scales: int, kernel_size: int = KERNEL_SIZE) -> int:
    """Smallest image side for ``scales`` scales: ``(k − 1)·2^(S−1) + 1``."""
    return (kernel_size - 1) * 2 ** (scales - 1) + 1


def max_scales(size: int, kernel_size: int = KERNEL_SIZE) -> int:
    """Largest number of scales (≤ 5) an image side of ``size`` allows (0 if even one does not fit)."""
    return max((s for s in range(1, len(SCALE_WEIGHTS) + 1) if ms_ssim_min_size(s, kernel_size) <= size), default=0)


def ssim(x: torch.Tensor, y: torch.Tensor, *, reduction: Reduction = "none") -> torch.Tensor:
    """SSIM of ``x`` against ``y`` (both in [0, 1]); see the module docstring."""
    return piq_module().ssim(x, y, kernel_size=KERNEL_SIZE, kernel_sigma=KERNEL_SIGMA, data_range=1.0,
                             downsample=False, reduction=reduction)  # fmt: skip


def ms_ssim(x: torch.Tensor, y: torch.Tensor, *, scales: int = len(SCALE_WEIGHTS), reduction: Reduction = "none",
            field: str = "ms_ssim") -> torch.Tensor:  # fmt: skip
    """MS-SSIM of ``x`` against ``y`` (both in [0, 1]) over ``scales`` ∈ 1…5 scales.

    An image too small for ``scales`` is a :class:`UserError` naming ``field`` and the largest number of
    scales that fits."""
    if scales not in range(1, len(SCALE_WEIGHTS) + 1):
        raise UserError(f"scales must be 1..{len(SCALE_WEIGHTS)}, got {scales}", field=field)
    side = min(x.shape[-2:])
    if side < ms_ssim_min_size(scales):
        raise UserError(
            f"MS-SSIM with {scales} scales and {KERNEL_SIZE}x{KERNEL_SIZE} kernels needs images of at least "
            f"{ms_ssim_min_size(scales)} px a side, got {tuple(x.shape[-2:])}; set scales <= {max_scales(side)} "
            "or use larger patches",
            field=field,
        )
    weights = None if scales == len(SCALE_WEIGHTS) else torch.tensor(SCALE_WEIGHTS[:scales], dtype=x.dtype,
                                                                       device=x.device)  # fmt: skip
    return piq_module().multi_scale_ssim(x, y, kernel_size=KERNEL_SIZE, kernel_sigma=KERNEL_SIGMA, data_range=1.0,
                                         reduction=reduction, scale_weights=weights)  # fmt: skip
