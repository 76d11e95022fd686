"""Charbonnier loss, a differentiable L1.

``charbonnier(pred, target) = mean(√((pred − target)² + ε²))`` with ε = 1e-3 by default. Shapes
``(N, 1, H, W)`` or ``(N, 1, D, H, W)``; inputs in network normalisation (about [0, 1]); value in
[ε, ∞) (ε for identical inputs). Charbonnier et al., ICIP 1994; Lai et al., LapSRN, CVPR 2017.
"""

from __future__ import annotations

import torch
from torch import nn


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    diff = pred - target
    return torch.sqrt(diff * diff + eps * eps).mean()


class CharbonnierLoss(nn.Module):
    """``mean(√((pred − target)² + ε²))``; see the module docstring."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return charbonnier(pred, target, self.eps)
