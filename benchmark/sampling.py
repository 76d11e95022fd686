"""Training patches: random crops from a seeded ``torch.Generator``, with optional augmentation by 90°
rotations and flips in-plane (the dihedral group D4), and patient-balanced weights.

* 2-D models: :func:`sample_patches` draws square crops of single slices.
* 3-D models: :func:`sample_volume_patches` draws ``d × h × w`` crops of ``d`` consecutive slices of
  one contiguous volume (one patient, adjacent in position: :meth:`benchmark.data.PairedSlices.volumes`),
  never across a patient boundary or a missing slice; :func:`window_starts` lists the first rows of
  the windows allowed.

Every random number comes from the generator passed in, so a seeded generator gives the same patches
on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from benchmark.core.errors import UserError


def _pick(count: int, n: int, generator: torch.Generator, weights: torch.Tensor | None) -> torch.Tensor:
    """``n`` indices in ``range(count)``: uniform, or by ``weights`` (with replacement)."""
    if weights is None:
        return torch.randint(0, count, (n,), generator=generator)
    return torch.multinomial(weights.double(), n, replacement=True, generator=generator)


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random element of D4 (a 90° rotation, then maybe a left-right flip) applied in-plane
    (the last two axes) to each aligned pair ``x[i]``, ``y[i]``."""
    n = x.shape[0]
    k = torch.randint(0, 4, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    xs, ys = [], []
    for i in range(n):
        xi, yi = torch.rot90(x[i], int(k[i]), (-2, -1)), torch.rot90(y[i], int(k[i]), (-2, -1))
        if flip[i]:
            xi, yi = xi.flip(-1), yi.flip(-1)
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


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
    idx = _pick(s, n, generator, weights)
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
        x, y = _augment(x, y, generator)
    return x.contiguous(), y.contiguous(), idx


def window_starts(volumes: Sequence[slice], depth: int) -> torch.Tensor:
    """First rows of every window of ``depth`` consecutive rows that lies inside one volume (row ranges
    of :meth:`benchmark.data.PairedSlices.volumes`), in order. A :class:`UserError` on
    ``training.patch_size`` when no volume has ``depth`` slices."""
    starts = [r for v in volumes for r in range(v.start, v.stop - depth + 1)]
    if not starts:
        longest = max((v.stop - v.start for v in volumes), default=0)
        raise UserError(f"patch depth {depth} exceeds the longest volume of the training split ({longest} consecutive "
                        "slices of one patient)", field="training.patch_size")  # fmt: skip
    return torch.tensor(starts, dtype=torch.long)


def sample_volume_patches(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    n: int,
    patch_size: Sequence[int],
    starts: torch.Tensor,
    generator: torch.Generator,
    *,
    augment: bool = False,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``n`` aligned random ``(d, h, w)`` crops of ``d`` consecutive slices from ``(S, H, W)``
    input/target stacks, each starting at one of the rows ``starts`` (:func:`window_starts`, so the
    ``d`` slices are one contiguous volume's).

    ``weights`` (one per start) makes the choice non-uniform (:func:`patient_balanced_weights` of the
    starts' patients). Crops are placed uniformly in-plane; ``augment`` applies a random D4 element
    in-plane, the same on all ``d`` slices (the slice axis keeps its direction). Returns ``(x, y,
    first_row)`` with x, y of shape ``(n, 1, d, h, w)``.
    """
    d, ph, pw = (int(v) for v in patch_size)
    _, h, w = inputs.shape
    if ph > h or pw > w:
        raise UserError(f"patch size {ph}x{pw} exceeds the image size {h}x{w}", field="training.patch_size")
    first = starts[_pick(len(starts), n, generator, weights)]
    top = torch.randint(0, h - ph + 1, (n,), generator=generator)
    left = torch.randint(0, w - pw + 1, (n,), generator=generator)
    zs = (first[:, None] + torch.arange(d)[None, :])[:, :, None, None]
    rows = (top[:, None] + torch.arange(ph)[None, :])[:, None, :, None]
    cols = (left[:, None] + torch.arange(pw)[None, :])[:, None, None, :]
    x = inputs[zs, rows, cols].unsqueeze(1)
    y = targets[zs, rows, cols].unsqueeze(1)
    if augment:
        x, y = _augment(x, y, generator)
    return x.contiguous(), y.contiguous(), first


def patient_balanced_weights(patients: np.ndarray | list[str]) -> torch.Tensor:
    """Per-slice (or per-window) sampling weights that give every patient the same total probability."""
    arr = np.asarray(patients)
    _, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    return torch.from_numpy(1.0 / counts[inverse]).double()
