"""Training patches: random square crops from a seeded ``torch.Generator``, with optional
augmentation by 90° rotations and flips (the dihedral group D4), and patient-balanced slice weights.

Every random number comes from the generator passed in, so a seeded generator gives the same patches
on any machine.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmark.core.errors import UserError


def sample_patches(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    n: int,
    patch_size: int | None,
    generator: torch.Generator,
    *,
    augment: bool = False,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``n`` aligned random crops from ``(S, H, W)`` input/target stacks.

    ``weights`` (length S) makes slice choice non-uniform, e.g. patient-balanced sampling
    (:func:`patient_balanced_weights`). Every random number comes from ``generator``, so a seeded
    generator gives the same patches on any machine. Returns ``(x, y, slice_index)`` with x, y of
    shape ``(n, 1, p, p)`` (``p = H`` and no crop when ``patch_size`` is None).
    """
    s, h, w = inputs.shape
    if weights is None:
        idx = torch.randint(0, s, (n,), generator=generator)
    else:
        idx = torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    if patch_size is None or (patch_size >= h and patch_size >= w):
        x = inputs[idx].unsqueeze(1)
        y = targets[idx].unsqueeze(1)
    else:
        if patch_size > h or patch_size > w:
            raise UserError(f"patch size {patch_size} exceeds the image size {h}x{w}", field="training.patch_size")
        top = torch.randint(0, h - patch_size + 1, (n,), generator=generator)
        left = torch.randint(0, w - patch_size + 1, (n,), generator=generator)
        ar = torch.arange(patch_size)
        rows = (top[:, None] + ar[None, :])[:, :, None]
        cols = (left[:, None] + ar[None, :])[:, None, :]
        x = inputs[idx[:, None, None], rows, cols].unsqueeze(1)
        y = targets[idx[:, None, None], rows, cols].unsqueeze(1)
    if augment:
        k = torch.randint(0, 4, (n,), generator=generator)
        flip = torch.randint(0, 2, (n,), generator=generator).bool()
        xs, ys = [], []
        for i in range(n):
            xi, yi = torch.rot90(x[i], int(k[i]), (-2, -1)), torch.rot90(y[i], int(k[i]), (-2, -1))
            if flip[i]:
                xi, yi = xi.flip(-1), yi.flip(-1)
            xs.append(xi)
            ys.append(yi)
        x, y = torch.stack(xs), torch.stack(ys)
    return x.contiguous(), y.contiguous(), idx


def patient_balanced_weights(patients: np.ndarray | list[str]) -> torch.Tensor:
    """Per-slice sampling weights that give every patient the same total probability."""
    arr = np.asarray(patients)
    _, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    return torch.from_numpy(1.0 / counts[inverse]).double()
