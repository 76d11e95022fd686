"""Training patches: random crops from a seeded ``torch.Generator``, with optional augmentation by 90°
rotations and flips in-plane (the dihedral group D4), and patient-balanced weights.

* 2-D models: :func:`sample_patches` draws square crops of single slices.
* Unpaired schemes (CycleGAN, UNIT): :func:`sample_unpaired_patches` draws the low-dose and the
  normal-dose crops from independently drawn slices, optionally from the disjoint patient halves of
  :func:`disjoint_halves`, so no LD/ND pair shows the same anatomy.
* 3-D models: :func:`sample_volume_patches` draws ``d × h × w`` crops of ``d`` consecutive slices of
  one contiguous volume (one patient, adjacent in position: :meth:`benchmark.data.PairedSlices.volumes`),
  never across a patient boundary or a missing slice; :func:`window_starts` lists the first rows of
  the windows allowed.

Every random number comes from the generator passed in, so a seeded generator gives the same patches
on any machine.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from benchmark.core.errors import UserError


def _pick(count: int, n: int, generator: torch.Generator, weights: torch.Tensor | None) -> torch.Tensor:
    """``n`` indices in ``range(count)``: uniform, or by ``weights`` (with replacement)."""
    if weights is None:
        return torch.randint(0, count, (n,), generator=generator)
    return torch.multinomial(weights.double(), n, replacement=True, generator=generator)


@functools.lru_cache(maxsize=16)
def _d4_maps(p: int, device: torch.device) -> torch.Tensor:
    """``(8, p * p)`` source positions of the D4 elements on a ``p × p`` grid, element ``2 k + flip``
    being ``rot90(·, k, (-2, -1))`` followed, with ``flip``, by a left-right flip (built by applying
    exactly those operations to the grid of flat indices)."""
    grid = torch.arange(p * p).view(p, p)
    maps = [torch.rot90(grid, k, (-2, -1)).flip(-1) if f else torch.rot90(grid, k, (-2, -1))
            for k in range(4) for f in (0, 1)]  # fmt: skip
    return torch.stack(maps).view(8, p * p).to(device)


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random element of D4 (a 90° rotation, then maybe a left-right flip) applied in-plane
    (the last two axes) to each aligned pair ``x[i]``, ``y[i]``: one gather per stack on its device
    for square planes (the random numbers drawn are the same either way)."""
    n = x.shape[0]
    k = torch.randint(0, 4, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    h, w = x.shape[-2:]
    if h == w and y.shape == x.shape:
        index = _d4_maps(h, x.device)[(2 * k + flip.long()).to(x.device)]  # (n, h * w)
        index = index[:, None, :].expand(n, x.shape[1:-2].numel(), h * w)
        gx = x.reshape(index.shape).gather(-1, index).view(x.shape)
        gy = gx if y is x else y.reshape(index.shape).gather(-1, index).view(y.shape)
        return gx, gy
    xs, ys = [], []
    for i in range(n):
        xi, yi = torch.rot90(x[i], int(k[i]), (-2, -1)), torch.rot90(y[i], int(k[i]), (-2, -1))
        if flip[i]:
            xi, yi = xi.flip(-1), yi.flip(-1)
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def _crop(
    stacks: Sequence[torch.Tensor], idx: torch.Tensor, patch_size: int | None, generator: torch.Generator
) -> list[torch.Tensor]:
    """The same square crop of slices ``idx`` from each ``(S, H, W)`` stack, as ``(n, 1, p, p)`` tensors:
    the whole slices when ``patch_size`` is None or equals them (no random numbers drawn), else a crop
    at a uniform position (the top rows, then the left columns, drawn from ``generator``). A patch larger
    than the slices is a :class:`UserError` (it used to train on whole slices without a word;
    ``ldct-bench validate`` refuses it first)."""
    _, h, w = stacks[0].shape
    if patch_size is not None and (patch_size > h or patch_size > w):
        raise UserError(f"patch size {patch_size} exceeds the image size {h}x{w}", field="training.patch_size")
    if patch_size is None or (patch_size == h and patch_size == w):
        return [t[idx.to(t.device)].unsqueeze(1) for t in stacks]
    n = len(idx)
    top = torch.randint(0, h - patch_size + 1, (n,), generator=generator)
    left = torch.randint(0, w - patch_size + 1, (n,), generator=generator)
    ar = torch.arange(patch_size)
    rows = (top[:, None] + ar[None, :])[:, :, None]
    cols = (left[:, None] + ar[None, :])[:, None, :]
    dev = stacks[0].device  # the gather runs where the stacks are (the training device, or the host)
    rows, cols, idx = rows.to(dev), cols.to(dev), idx.to(dev)
    return [t[idx[:, None, None], rows, cols].unsqueeze(1) for t in stacks]


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
    s = inputs.shape[0]
    idx = _pick(s, n, generator, weights)
    x, y = _crop((inputs, targets), idx, patch_size, generator)
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
    zs, rows, cols = zs.to(inputs.device), rows.to(inputs.device), cols.to(inputs.device)
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


def disjoint_halves(patients: np.ndarray | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Split the training rows by patient into two disjoint halves for unpaired sampling: the sorted unique
    patient ids, the first ``ceil(P / 2)`` of them the low-dose source, the other ``floor(P / 2)`` the
    normal-dose source. ``patients``: the patient id of every row (slice or window start), length S.

    Returns boolean row masks ``(ld, nd)``, each of length S, disjoint, together every row. With fewer
    than two patients no split exists: a :class:`UserError` on ``training.disjoint_patients`` naming the count.
    """
    arr = np.asarray(patients)
    unique = np.unique(arr)
    if len(unique) < 2:
        raise UserError(f"disjoint halves need at least 2 training patients, the training split has {len(unique)}",
                        field="training.disjoint_patients")  # fmt: skip
    ld_ids = unique[: (len(unique) + 1) // 2]
    ld = np.isin(arr, ld_ids)
    return ld, ~ld


def _rows(rows: torch.Tensor | np.ndarray | None, count: int, which: str) -> torch.Tensor | None:
    """Row indices from a boolean mask of length ``count`` or from indices; None stays None."""
    if rows is None:
        return None
    t = torch.as_tensor(np.asarray(rows) if isinstance(rows, np.ndarray) else rows)
    if t.dtype == torch.bool:
        if len(t) != count:
            raise ValueError(f"{which} mask has {len(t)} entries for {count} rows")
        t = torch.nonzero(t).flatten()
    t = t.long()
    if len(t) == 0:
        raise UserError(f"no training rows to draw the {which} patches from", field="training.pairing")
    return t


def _pick_rows(count: int, n: int, generator: torch.Generator, rows: torch.Tensor | None,
               weights: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """``n`` row indices: from ``rows`` (all ``count`` rows when None), uniform or by the per-row
    ``weights`` (length ``count``) restricted to them."""
    if rows is None:
        return _pick(count, n, generator, weights)
    sub = None if weights is None else weights[rows]
    return rows[_pick(len(rows), n, generator, sub)]


def sample_unpaired_patches(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    n: int,
    patch_size: int | None,
    generator: torch.Generator,
    *,
    augment: bool = False,
    ld_rows: torch.Tensor | np.ndarray | None = None,
    nd_rows: torch.Tensor | np.ndarray | None = None,
    weights_ld: torch.Tensor | None = None,
    weights_nd: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Draw ``n`` *unpaired* crops for the unpaired schemes (CycleGAN, Zhu et al. ICCV 2017; UNIT, Liu et
    al. NeurIPS 2017): low-dose crops of ``inputs`` and normal-dose crops of ``targets`` (``(S, H, W)``
    stacks, network normalisation) from independently drawn slices, at independent crop positions and,
    with ``augment``, under independent D4 elements, so an LD crop and the ND crop at the same batch
    position are unrelated.

    ``ld_rows`` / ``nd_rows`` (a boolean mask of length S or row indices) restrict the slices each side is
    drawn from, e.g. the two halves of :func:`disjoint_halves`, so no pair can share a slice or a patient;
    None = every row. ``weights_ld`` / ``weights_nd`` (length S, e.g. :func:`patient_balanced_weights`)
    make each side's choice non-uniform, restricted to its rows. Every random number comes from
    ``generator``, in this order: LD slices, ND slices, LD crop positions, ND crop positions, LD
    augmentation, ND augmentation.

    Returns ``(x, y, (idx_ld, idx_nd))``: x (LD) and y (ND) of shape ``(n, 1, p, p)`` (``p = H`` and no
    crop when ``patch_size`` is None), and the slice index of each.
    """
    s = inputs.shape[0]
    if targets.shape != inputs.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    rows_ld, rows_nd = _rows(ld_rows, s, "low-dose"), _rows(nd_rows, s, "normal-dose")
    idx_ld = _pick_rows(s, n, generator, rows_ld, weights_ld)
    idx_nd = _pick_rows(s, n, generator, rows_nd, weights_nd)
    (x,) = _crop((inputs,), idx_ld, patch_size, generator)
    (y,) = _crop((targets,), idx_nd, patch_size, generator)
    if augment:
        x = _augment(x, x, generator)[0]
        y = _augment(y, y, generator)[0]
    return x.contiguous(), y.contiguous(), (idx_ld, idx_nd)
