"""Inference on stacks of slices in HU: the one batching path of validation and the analysis.

:func:`net_batches` turns ``(S, H, W)`` HU stacks into network-space batches on the device;
:func:`denoise` (the analysis, ``ldct-bench analyze``) and :func:`benchmark.train.validate` (the
per-epoch validation loss) both walk the slices with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from benchmark.core.conventions import hu_to_net, net_to_hu


def net_batches(stacks: Sequence[np.ndarray], *, batch_size: int, device: str | torch.device = "cpu",
                limit: int | None = None) -> Iterator[tuple[slice, list[torch.Tensor]]]:  # fmt: skip
    """Walk aligned ``(S, H, W)`` HU stacks (e.g. inputs and targets) in batches of ``batch_size``
    slices, the first ``limit`` only if given. Yields ``(rows, tensors)``: the slice of rows and one
    ``(b, 1, H, W)`` float32 network-space tensor per stack, on ``device``. Each batch is copied out of
    the stacks (memory maps are read-only), so only one batch is in memory at a time."""
    n = len(stacks[0]) if limit is None else min(len(stacks[0]), limit)
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        yield rows, [hu_to_net(torch.from_numpy(np.array(s[rows], dtype=np.float32)).unsqueeze(1).to(device))
                     for s in stacks]  # fmt: skip


@torch.no_grad()
def denoise(
    model: nn.Module, inputs_hu: np.ndarray, *, batch_size: int = 8, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Denoise ``(S, H, W)`` HU slices in batches; returns ``(S, H, W)`` float32 HU.

    The model sees the network normalisation of :mod:`benchmark.core.conventions`; ``model`` must be in
    eval mode (checkpoints loaded with :func:`benchmark.checkpoint.load_model` are).
    """
    out = np.empty(inputs_hu.shape, dtype=np.float32)
    for rows, (x,) in net_batches([inputs_hu], batch_size=batch_size, device=torch.device(device)):
        out[rows] = net_to_hu(model(x)).squeeze(1).float().cpu().numpy()
    return out
