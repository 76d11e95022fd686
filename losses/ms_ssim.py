"""MS-SSIM loss: ``1 − MS-SSIM(pred, target)`` (Wang, Simoncelli & Bovik, "Multiscale structural
similarity for image quality assessment", Asilomar 2003), via ``piq.multi_scale_ssim``.

Same SSIM variant as the ``ms_ssim`` metric: Gaussian 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03,
``data_range = 1``, 2×2 average pooling between scales, published scale weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)::

    MS-SSIM = Π_{s<S} relu(cs_s)^{w_s} · relu(SSIM_S)^{w_S}

**Size.** With S scales and 11×11 kernels the image must be at least ``10·2^(S−1) + 1`` pixels a
side: 161 for the standard S = 5. Training patches are usually smaller (64 px allows S ≤ 3), so
``scales`` selects the first S published weights, renormalised to sum 1 (as piq does for custom
weights); a too-small input raises a :class:`~benchmark.errors.UserError` naming the largest ``scales``
that fits. ``scales = 1`` is plain SSIM.

Inputs ``(N, 1, H, W)`` in network normalisation, mapped to [0, 1] as in :mod:`losses.ssim`
(``window``). Value in [0, 1]; 0 for identical inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.errors import UserError
from losses.ssim import KERNEL_SIGMA, KERNEL_SIZE, check_window, piq_module, to_unit

SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def min_size(scales: int, kernel_size: int = KERNEL_SIZE) -> int:
    """Smallest image side for ``scales`` scales: ``(k − 1)·2^(S−1) + 1``."""
    return (kernel_size - 1) * 2 ** (scales - 1) + 1


def max_scales(size: int, kernel_size: int = KERNEL_SIZE) -> int:
    """Largest number of scales (≤ 5) an image side of ``size`` allows (0 if even one does not fit)."""
    return max((s for s in range(1, len(SCALE_WEIGHTS) + 1) if min_size(s, kernel_size) <= size), default=0)


def ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor, scales: int = 5, window: str | None = None) -> torch.Tensor:
    """``1 − MS-SSIM`` averaged over the batch; see the module docstring."""
    side = min(pred.shape[-2:])
    if side < min_size(scales):
        raise UserError(
            f"MS-SSIM with {scales} scales and {KERNEL_SIZE}x{KERNEL_SIZE} kernels needs images of at least "
            f"{min_size(scales)} px a side, got {tuple(pred.shape[-2:])}; set scales <= {max_scales(side)} "
            "or use larger patches",
            field="losses.ms_ssim.scales",
        )
    weights = torch.tensor(SCALE_WEIGHTS[:scales], dtype=pred.dtype, device=pred.device)
    value = piq_module().multi_scale_ssim(
        to_unit(pred, window), to_unit(target, window), kernel_size=KERNEL_SIZE, kernel_sigma=KERNEL_SIGMA,
        data_range=1.0, reduction="mean", scale_weights=weights,
    )
    return 1.0 - value


class MSSSIMLoss(nn.Module):
    """``1 − MS-SSIM(pred, target)`` with ``scales`` ∈ 1…5; see the module docstring."""

    def __init__(self, *, scales: int = 5, window: str | None = None) -> None:
        super().__init__()
        if scales not in range(1, len(SCALE_WEIGHTS) + 1):
            raise ValueError(f"scales must be 1..{len(SCALE_WEIGHTS)}, got {scales}")
        self.scales = int(scales)
        self.window = check_window(window)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ms_ssim_loss(pred, target, self.scales, self.window)
