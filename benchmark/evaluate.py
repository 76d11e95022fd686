"""Inference on stacks of slices in HU: the one batching path of validation and the analysis.

:func:`net_batches` turns ``(S, H, W)`` HU stacks into network-space batches on the device;
:func:`predict_batches` runs a model over them, slice by slice for 2-D models and slab by slab for
3-D ones; :func:`denoise` (the analysis, ``ldct-bench analyze``) and :func:`benchmark.train.validate`
(the per-epoch validation loss) both walk the slices with it, so a 3-D model is validated and scored on
exactly the output the other path sees.

**3-D models: overlapping slabs, trimmed.** A 3-D model (:func:`models.spatial_dims`) never sees slices
of two patients or across a missing slice: it denoises each contiguous volume
(:meth:`benchmark.data.PairedSlices.volumes`) on its own. A volume is cut into consecutive chunks of
about ``batch_size`` slices (:func:`slab_plan`: nearly equal chunks, so none is a sliver); each chunk is
denoised inside a slab that adds ``context`` slices (default :data:`SLAB_CONTEXT`) of the same volume on
both sides, and only the chunk's own slices are kept. Why slabs and not whole volumes: a Mayo 1 mm
volume has hundreds of 512² slices, and a 64-channel 3-D network on all of them at once needs tens of
GB per layer; a slab of ``batch_size + 2·context`` slices bounds the memory like ``batch_size`` does
for 2-D models. Why trimmed and not averaged in the overlap: a slice kept from a slab is at least
``context`` slices away from every cut the slab makes inside the volume, so the result is **exactly**
the whole-volume result whenever the model's receptive field reaches at most ``context`` slices either
way (e.g. DnCNN3D with ``depth ≤ context`` and 3×3×3 kernels), and for deeper models the zero padding
at the cuts is kept ``context`` slices away from every output; averaging overlapping outputs would
mix in every slab's cut artefacts and is never exact. Volumes of at most ``batch_size`` slices go
through in one pass. The chunk grid depends only on the volume and ``batch_size``, so a slice's output
does not depend on which other slices are asked for.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from benchmark.core.conventions import hu_to_net, net_to_hu
from models import spatial_dims

SLAB_CONTEXT = 8  # slices of context on each side of a kept chunk (3-D models)

Rows = slice | np.ndarray


def net_batches(stacks: Sequence[np.ndarray], *, batch_size: int, device: str | torch.device = "cpu",
                limit: int | None = None, windows: Sequence[Rows] | None = None,
                ) -> Iterator[tuple[Rows, list[torch.Tensor]]]:  # fmt: skip
    """Walk aligned ``(S, H, W)`` HU stacks (e.g. inputs and targets) in batches of ``batch_size``
    slices, the first ``limit`` only if given, or in the given ``windows`` (row slices or index arrays,
    one batch each: the slabs of a 3-D model). Yields ``(rows, tensors)``: the rows and one
    ``(b, 1, H, W)`` float32 network-space tensor per stack, on ``device``. Each batch is copied out of
    the stacks (memory maps are read-only), so only one batch is in memory at a time."""
    if windows is None:
        n = len(stacks[0]) if limit is None else min(len(stacks[0]), limit)
        windows = [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    for rows in windows:
        yield rows, [hu_to_net(torch.from_numpy(np.array(s[rows], dtype=np.float32)).unsqueeze(1).to(device))
                     for s in stacks]  # fmt: skip


def slab_plan(volumes: Sequence[slice], *, chunk: int, context: int = SLAB_CONTEXT, limit: int | None = None,
              rows: np.ndarray | None = None) -> list[tuple[slice, slice]]:  # fmt: skip
    """``(read, keep)`` row ranges of the slabs that denoise ``volumes`` with a 3-D model (module
    docstring): each volume of ``L`` slices is cut into ``ceil(L / chunk)`` consecutive chunks of nearly
    equal size (``keep``), each read with ``context`` more slices of its volume on either side
    (``read``). Only the chunks holding a row of ``rows`` (sorted indices) are listed, and with
    ``limit`` only rows below it are kept (the slabs still read past it)."""
    if chunk < 1 or context < 0:
        raise ValueError(f"chunk must be >= 1 and context >= 0, got {chunk} and {context}")
    want = None if rows is None else np.asarray(rows)
    plan = []
    for v in volumes:
        length = v.stop - v.start
        k = -(-length // chunk)
        bounds = [v.start + (i * length) // k for i in range(k + 1)] if length > 0 else []
        for a, b in itertools.pairwise(bounds):
            if limit is not None:
                b = min(b, limit)
                if b <= a:
                    continue
            if want is not None and np.searchsorted(want, b) == np.searchsorted(want, a):
                continue
            plan.append((slice(max(v.start, a - context), min(v.stop, b + context)), slice(a, b)))
    return plan


def _as_volume(t: torch.Tensor) -> torch.Tensor:
    """``(b, 1, H, W)`` consecutive slices → one ``(1, 1, b, H, W)`` volume."""
    return t.movedim(0, 1).unsqueeze(0)


def predict_batches(model: nn.Module, stacks: Sequence[np.ndarray], *, batch_size: int,
                    device: str | torch.device = "cpu", limit: int | None = None, rows: np.ndarray | None = None,
                    volumes: Sequence[slice] | None = None, context: int = SLAB_CONTEXT,
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor, list[torch.Tensor]]]:  # fmt: skip
    """Run ``model`` over aligned HU stacks, the first being its input: every row, the first ``limit``,
    or the rows ``rows`` (sorted, distinct). Yields ``(rows, prediction, rest)``: the stack rows covered,
    the network-space output for them and the other stacks' rows, in the model's layout:
    ``(b, 1, H, W)`` for a 2-D model (batches of ``batch_size`` slices), ``(1, 1, b, H, W)`` for a 3-D
    model (one kept chunk of one volume, from its slab: module docstring; ``volumes`` are the stacks'
    contiguous volumes, default the whole stack as one; with ``rows`` whole chunks are yielded)."""
    if spatial_dims(model) == 2:
        if rows is None:
            for r, (x, *rest) in net_batches(stacks, batch_size=batch_size, device=device, limit=limit):
                assert isinstance(r, slice)
                yield np.arange(r.start, r.stop), model(x), rest
            return
        idx = np.asarray(rows)
        if limit is not None:
            idx = idx[idx < limit]
        windows = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
        for r, (x, *rest) in net_batches(stacks, batch_size=batch_size, device=device, windows=windows):
            yield np.asarray(r), model(x), rest
        return
    vols = [slice(0, len(stacks[0]))] if volumes is None else volumes
    plan = slab_plan(vols, chunk=batch_size, context=context, limit=limit, rows=rows)
    slabs = net_batches(stacks, batch_size=batch_size, device=device, windows=[read for read, _ in plan])
    for (read, tensors), (_, keep) in zip(slabs, plan, strict=True):
        assert isinstance(read, slice)
        a, b = keep.start - read.start, keep.stop - read.start
        x, *rest = (_as_volume(t) for t in tensors)
        yield np.arange(keep.start, keep.stop), model(x)[:, :, a:b], [t[:, :, a:b] for t in rest]


@torch.no_grad()
def denoise(model: nn.Module, inputs_hu: np.ndarray, *, batch_size: int = 8, device: str | torch.device = "cpu",
            rows: np.ndarray | Sequence[int] | None = None, volumes: Sequence[slice] | None = None,
            context: int = SLAB_CONTEXT, as_tensor: bool = False) -> np.ndarray | torch.Tensor:  # fmt: skip
    """Denoise ``(S, H, W)`` HU slices (all, or the distinct rows ``rows`` in their order); returns
    ``(len(rows) or S, H, W)`` float32 HU, one output per slice whatever the model's dimensionality: a
    numpy array, or with ``as_tensor`` a tensor left on ``device`` (no copy to the host; the GPU scoring
    path).

    2-D models go slice by slice in batches of ``batch_size``; 3-D models volume by volume in slabs
    (module docstring): ``volumes`` are the row ranges of the contiguous volumes of the stack
    (:meth:`benchmark.data.PairedSlices.volumes`; default: the whole stack is one volume), and a row
    asked for is denoised with its volume around it even when its neighbours are not asked for. The
    model sees the network normalisation of :mod:`benchmark.core.conventions`; ``model`` must be in eval
    mode (checkpoints loaded with :func:`benchmark.checkpoint.load_model` are).
    """
    n, shape = len(inputs_hu), tuple(inputs_hu.shape[1:])
    wanted = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    if len(np.unique(wanted)) != len(wanted) or (len(wanted) and (wanted[order[0]] < 0 or wanted[order[-1]] >= n)):
        raise ValueError(f"rows must be distinct indices in 0..{n - 1}")
    position = np.full(n, -1)
    position[wanted] = np.arange(len(wanted))
    out = torch.empty((len(wanted), *shape), dtype=torch.float32, device=torch.device(device) if as_tensor else "cpu")
    for r, pred, _ in predict_batches(model, [inputs_hu], batch_size=batch_size, device=torch.device(device),
                                      rows=None if rows is None else wanted[order], volumes=volumes,
                                      context=context):  # fmt: skip
        pos = position[r]
        keep = pos >= 0  # a 3-D model's chunks may hold rows not asked for
        hu = net_to_hu(pred).reshape(-1, *shape).float()[torch.from_numpy(keep).to(pred.device)]
        out[torch.from_numpy(pos[keep]).to(out.device)] = hu.to(out.device)
    return out if as_tensor else out.numpy()
