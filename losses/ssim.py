"""SSIM loss: ``1 − SSIM(pred, target)`` (Wang et al., "Image quality assessment: from error
visibility to structural similarity", IEEE TIP 13(4), 2004).

A thin wrapper over the suite's one SSIM functional, :func:`benchmark.core.ssim.ssim` (piq; Gaussian
window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, no downsampling, ``data_range = 1``), which the ``ssim``
metric wraps too.

Inputs ``pred``, ``target``: ``(N, 1, H, W)`` in network normalisation ``(HU + 1024)/4096``, H, W ≥ 11.
They are mapped to [0, 1] before SSIM (:func:`to_unit`):

* ``window=None`` (default): the network space itself, clamped to [0, 1] (= [−1024, 3072] HU), the
  space the other training losses see. Then C2 corresponds to (0.03·4096 HU)² ≈ (123 HU)², which
  makes the loss much less sensitive to soft-tissue noise (~10–30 HU) than the windowed metric.
* ``window="abdomen"`` (any name or "lo,hi" of :mod:`benchmark.core.conventions`): HU clipped to the
  window and scaled to [0, 1] exactly as the metric does; pixels outside the window get no gradient.

Value in [0, 2] (SSIM ∈ [−1, 1]); 0 for identical inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.core.conventions import net_to_hu, parse_window, window_to_unit
from benchmark.core.ssim import ssim


def to_unit(x: torch.Tensor, window: str | None) -> torch.Tensor:
    """Network space → [0, 1]: clamp (``window=None``) or HU window (see the module docstring)."""
    if window is None:
        return x.clamp(0.0, 1.0)
    return window_to_unit(net_to_hu(x), window)


def check_window(window: str | None) -> str | None:
    """Validate a window spec at construction time (``parse_window`` raises a UserError)."""
    if window is not None:
        parse_window(window)
    return window


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, window: str | None = None) -> torch.Tensor:
    """``1 − SSIM`` averaged over the batch; see the module docstring."""
    return 1.0 - ssim(to_unit(pred, window), to_unit(target, window), reduction="mean")


class SSIMLoss(nn.Module):
    """``1 − SSIM(pred, target)``; see the module docstring."""

    def __init__(self, *, window: str | None = None) -> None:
        super().__init__()
        self.window = check_window(window)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ssim_loss(pred, target, self.window)
