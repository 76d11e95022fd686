"""MS-SSIM loss: ``1 − MS-SSIM(pred, target)`` (Wang, Simoncelli & Bovik, "Multiscale structural
similarity for image quality assessment", Asilomar 2003).

A thin wrapper over the suite's one MS-SSIM functional, :func:`benchmark.core.ssim.ms_ssim` (piq;
Gaussian 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, ``data_range = 1``, 2×2 average pooling between scales,
published scale weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)), which the ``ms_ssim`` metric wraps
too::

    MS-SSIM = Π_{s<S} relu(cs_s)^{w_s} · relu(SSIM_S)^{w_S}

**Size.** With S scales and 11×11 kernels the image must be at least ``10·2^(S−1) + 1`` pixels a
side: 161 for the standard S = 5. Training patches are usually smaller (64 px allows S ≤ 3), so
``scales`` selects the first S published weights, renormalised to sum 1 (as piq does for custom
weights); a too-small input raises a :class:`~benchmark.core.errors.UserError` naming the largest
``scales`` that fits. ``scales = 1`` is plain SSIM.

Inputs ``(N, 1, H, W)`` in network normalisation, mapped to [0, 1] as in :mod:`losses.ssim`
(``window``). Value in [0, 1]; 0 for identical inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.core.ssim import SCALE_WEIGHTS, ms_ssim
from losses.ssim import check_window, to_unit


def ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor, scales: int = 5, window: str | None = None) -> torch.Tensor:
    """``1 − MS-SSIM`` averaged over the batch; see the module docstring."""
    return 1.0 - ms_ssim(to_unit(pred, window), to_unit(target, window), scales=scales, reduction="mean",
                         field="losses.ms_ssim.scales")  # fmt: skip


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
