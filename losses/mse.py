"""Mean squared error.

``mse(pred, target) = mean((pred − target)²)`` over all elements. Shapes ``(N, 1, H, W)`` or
``(N, 1, D, H, W)``; inputs in network normalisation (about [0, 1]); value in [0, ∞).
The pixel baseline of every LDCT denoising study (e.g. RED-CNN, Chen et al., IEEE TMI 2017).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


class MSELoss(nn.Module):
    """``mean((pred − target)²)``; see the module docstring."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse(pred, target)
