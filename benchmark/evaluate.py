"""Inference on stacks of slices in HU: the one denoising path used by validation and the analysis."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmark.conventions import hu_to_net, net_to_hu


@torch.no_grad()
def denoise(
    model: nn.Module, inputs_hu: np.ndarray, *, batch_size: int = 8, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Denoise ``(S, H, W)`` HU slices in batches; returns ``(S, H, W)`` float32 HU.

    The model sees the network normalisation of :mod:`benchmark.conventions`; ``model`` must be in eval
    mode (checkpoints loaded with :func:`benchmark.checkpoint.load_model` are).
    """
    device = torch.device(device)
    out = np.empty(inputs_hu.shape, dtype=np.float32)
    for start in range(0, inputs_hu.shape[0], batch_size):
        chunk = torch.from_numpy(np.array(inputs_hu[start : start + batch_size], dtype=np.float32))
        x = hu_to_net(chunk.unsqueeze(1).to(device))
        y = net_to_hu(model(x)).squeeze(1)
        out[start : start + batch_size] = y.float().cpu().numpy()
    return out
