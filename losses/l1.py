"""Mean absolute error.

``l1(pred, target) = mean(|pred − target|)``. Shapes ``(N, 1, H, W)`` or ``(N, 1, D, H, W)``; inputs
in network normalisation (about [0, 1]); value in [0, ∞). Zhao et al., "Loss functions for image
restoration with neural networks", IEEE TCI 2017.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target)


class L1Loss(nn.Module):
    """``mean(|pred − target|)``; see the module docstring."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1(pred, target)
