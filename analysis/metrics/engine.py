"""Batched, chunked metric computation with a reusable reference-side cache.

:func:`compute_metrics` is what the trajectory code, the ``score`` command and the benchmark call.
Per metric it walks the images in chunks (``min(batch_size, scorer.max_batch)`` images), converts
each chunk to the metric's input space, gets the reference side from ``ref_cache`` (or computes and
stores it) and scores the prediction chunk.

Reference cache correctness: entries are keyed by a content digest of the reference HU array
(BLAKE2b over its float32 bytes and shape), the window, the metric, the device, the weight files
(path and modification time) and the chunk bounds. A different reference can therefore never hit
a stale entry, whatever the caller passes; ``ref_key`` is only a label that lets a caller drop its
entries (:func:`drop_ref`). Hashing costs about 10 ms per 16×512² stack. The cached state can be
large per 512² image: windowed reference 1 MB, VIF ≈ 4 MB, LPIPS-alex ≈ 11 MB, LPIPS-vgg and
DISTS ≈ 130 MB each (float32 features); the caller owns the dict and should keep one per cell (or
per evaluation split), not one for the whole run.

Device residency: the prediction (numpy, or a tensor left where it is, e.g. the GPU scoring path's
denoised images) goes to ``device`` once per call and is windowed once (``_Spaces``); every scorer then
gets chunks already on the device, so no metric copies images through the host. Torch all the way:
piq (PSNR, SSIM, MS-SSIM, VIFp, FSIM, GMSD), VIF, NIQE (:func:`analysis.metrics.no_reference.niqe_fast`),
PIQUE (pyiqa, torch), LPIPS, ST-LPIPS, DISTS. The one exception: the NPS metrics (``nps_*``) are numpy
FFTs over ROIs placed from masks (:mod:`analysis.metrics.nps`), so they copy the reference (once, cached)
and the prediction chunk to the host. Only the ``(B,)`` per-image values come back per chunk.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from analysis.metrics.base import MetricInfo, MetricUnavailable, RegionScorer, Scorer
from analysis.metrics.registry import METRICS
from benchmark.core import weights
from benchmark.core.conventions import HUWindow, parse_window, window_to_unit
from benchmark.core.errors import UserError
from benchmark.core.registry import lookup

_SCORERS: dict[tuple, Scorer] = {}


def info(name: str, *, field: str = "metrics") -> MetricInfo:
    """The :class:`MetricInfo` of ``name`` (the one look-up of the metric metadata,
    :data:`analysis.metrics.METRICS`); unknown names fail with the valid names and a close match, the error
    naming ``field``."""
    return lookup(METRICS, name, "metric", field=field)


def available(name: str) -> tuple[bool, str]:
    """``(True, "")`` if metric ``name`` can run here, else ``(False, reason)`` with one line naming the
    missing file and the command that fixes it."""
    for key in info(name).weights:
        if not weights.is_present(key):
            return False, f"weight file missing: {weights.weight_path(key)}; {weights.fix_command(key)}"
    return True, ""


def unavailable_metrics(names: list[str]) -> dict[str, str]:
    """``{name: reason}`` for the metrics in ``names`` that cannot run here (empty if all can)."""
    out = {}
    for name in names:
        ok, reason = available(name)
        if not ok:
            out[name] = reason
    return out


def _scorer_key(meta: MetricInfo, dev: torch.device) -> tuple:
    """Metric, device and each weight file's path and modification time."""
    files = (weights.weight_path(k) for k in meta.weights)
    return (meta.name, str(dev), tuple((str(p), p.stat().st_mtime_ns) for p in files))


def get_scorer(name: str, device: torch.device | str = "cpu") -> Scorer:
    """The (memoised) scorer of ``name`` on ``device``. The memo key includes each weight file's path
    and modification time, so replacing a weight file (or pointing ``TORCH_HOME`` elsewhere) rebuilds."""
    meta = info(name)
    dev = torch.device(device)
    ok, reason = available(name)
    if not ok:
        raise MetricUnavailable(name, reason)
    key = _scorer_key(meta, dev)
    if key not in _SCORERS:
        assert meta.build is not None, f"metric {name} has no builder"
        for old in [k for k in _SCORERS if k[:2] == key[:2]]:  # superseded weight files: free the network
            del _SCORERS[old]
        _SCORERS[key] = meta.build(dev)
    return _SCORERS[key]


def as_nchw(x: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """``(N, H, W)`` or ``(N, 1, H, W)`` numpy/torch → float32 tensor ``(N, 1, H, W)``: a numpy array on
    the CPU (no copy where it can be avoided), a tensor where it is (a GPU tensor stays on its GPU)."""
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if not x.flags.writeable:  # e.g. a dataset's read-only memmap: torch wants writable memory
            x = x.copy()
    t = torch.as_tensor(x)
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[1] != 1:
        raise UserError(
            f"expected (N, H, W) or (N, 1, H, W) images in HU, got shape {tuple(t.shape)}", field=what
        )
    t = t.detach().to(dtype=torch.float32)
    if not torch.isfinite(t).all():
        raise UserError("images contain NaN or infinite values", field=what)
    return t.contiguous()


def digest(x: torch.Tensor) -> str:
    """BLAKE2b digest of a float32 tensor's shape and bytes (the reference-cache identity; a GPU tensor
    is copied to the host for it, once per call)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(tuple(x.shape)).encode())
    h.update(x.cpu().numpy().tobytes())
    return h.hexdigest()


def _to_space(x: torch.Tensor, meta: MetricInfo, window: HUWindow, device: torch.device) -> torch.Tensor:
    x = x.to(device)
    return x if meta.space == "hu" else window_to_unit(x, window)


class _Spaces:
    """The prediction on the device, in each input space (HU, windowed unit), made once per call and
    sliced per chunk: no host-device copy and no windowing per metric."""

    def __init__(self, pred: torch.Tensor, window: HUWindow, device: torch.device) -> None:
        self.window = window
        self.spaces = {"hu": pred.to(device)}

    def get(self, space: str, start: int, stop: int) -> torch.Tensor:
        if space not in self.spaces:
            self.spaces[space] = window_to_unit(self.spaces["hu"], self.window)
        return self.spaces[space][start:stop]


def _check(meta: MetricInfo, pred: torch.Tensor, ref: torch.Tensor | None) -> None:
    if meta.full_reference and ref is None:
        raise UserError(f"{meta.name} is a full-reference metric: pass reference images", field="ref")
    side = min(pred.shape[-2:])
    if side < meta.min_size:
        raise UserError(
            f"{meta.name} needs images of at least {meta.min_size} pixels a side, got {tuple(pred.shape[-2:])}",
            field="metrics",
        )


def _check_regions(metas: list[MetricInfo], pred: torch.Tensor, pixel_spacing_mm: float | None,
                   roi: np.ndarray | None) -> np.ndarray | None:  # fmt: skip
    """The ``(N, H, W)`` bool masks (or None) after checking what the ``regions`` metrics need."""
    needs = [m.name for m in metas if m.regions]
    if needs and (pixel_spacing_mm is None or not pixel_spacing_mm > 0):
        raise UserError(f"{', '.join(needs)} need the pixel spacing: pass pixel_spacing_mm > 0", field="pixel_spacing_mm")
    if roi is None:
        return None
    masks = np.asarray(roi, dtype=bool)
    if masks.shape != (pred.shape[0], *pred.shape[-2:]):
        raise UserError(f"roi must be (N, H, W) = {(pred.shape[0], *pred.shape[-2:])}, got {masks.shape}", field="roi")
    return masks


def drop_ref(ref_cache: dict, ref_key: str) -> None:
    """Remove every entry a call with ``ref_key`` stored in ``ref_cache``."""
    for k in [k for k in ref_cache if k[0] == ref_key]:
        del ref_cache[k]


def compute_metrics(
    names: list[str],
    pred_hu: np.ndarray | torch.Tensor,
    ref_hu: np.ndarray | torch.Tensor | None,
    *,
    window: str | tuple[float, float] | HUWindow | None = "abdomen",
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    ref_cache: dict | None = None,
    ref_key: str | None = None,
    progress: bool = False,
    skip_unavailable: bool = False,
    pixel_spacing_mm: float | None = None,
    roi: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Score ``pred_hu`` against ``ref_hu`` with each metric in ``names``.

    Args:
        names: registered metric names (:data:`analysis.metrics.METRICS`).
        pred_hu, ref_hu: ``(N, H, W)`` or ``(N, 1, H, W)`` images in HU (numpy or torch). ``ref_hu``
            may be None when only no-reference metrics are requested.
        window: HU window for the unit-space metrics (preset name, ``"lo,hi"``, pair or HUWindow).
        device: where to compute. batch_size: images per chunk (metrics may use fewer).
        ref_cache: a dict the caller keeps across calls with the same references (e.g. the epoch
            checkpoints of one cell); reference-side work is done once per chunk and reused.
        ref_key: optional label for the cache entries (see :func:`drop_ref`).
        progress: show a progress bar over (metric, chunk).
        skip_unavailable: if False (default) raise :class:`MetricUnavailable` for the first requested
            metric whose weights are missing, before any work; if True leave such metrics out of the
            result with a warning. Use :func:`unavailable_metrics` to get the reasons to record.
        pixel_spacing_mm: in-plane pixel spacing (mm); required by the metrics with ``regions`` in
            their metadata (the NPS metrics), ignored by the others.
        roi: optional ``(N, H, W)`` bool uniform-region masks, one per image (e.g. ``synth``'s
            ``extra["roi"]``), for the ``regions`` metrics; None: derived from each reference.

    Returns:
        ``{name: (N,) float64}`` per-image values, in the order of ``names``.
    """
    win = parse_window(window)
    dev = torch.device(device)
    if batch_size < 1:
        raise UserError(f"batch_size must be ≥ 1, got {batch_size}", field="batch_size")
    metas = _requested(names, skip_unavailable)
    pred, ref = _images(pred_hu, ref_hu)
    for m in metas:
        _check(m, pred, ref)
    masks = _check_regions(metas, pred, pixel_spacing_mm, roi)
    refs = _References.of(ref, metas, masks, pixel_spacing_mm, win, dev, ref_key,
                          ref_cache if ref_cache is not None else {})  # fmt: skip
    preds = _Spaces(pred, win, dev)
    plan = _chunk_plan(metas, dev, batch_size, pred.shape[0])
    return _score(plan, preds, refs, pred.shape[0], progress)


def _requested(names: list[str], skip_unavailable: bool) -> list[MetricInfo]:
    """The metadata of ``names`` (once each, in order) that can run here; an unavailable one raises
    :class:`MetricUnavailable`, or with ``skip_unavailable`` is left out with a warning."""
    metas = [info(n) for n in dict.fromkeys(names)]
    missing = unavailable_metrics([m.name for m in metas])
    if missing and not skip_unavailable:
        name = next(iter(missing))
        raise MetricUnavailable(name, missing[name])
    if missing:
        warnings.warn(
            "skipping unavailable metrics: " + "; ".join(f"{k}: {v}" for k, v in missing.items()),
            stacklevel=3,  # the caller of compute_metrics
        )
    return [m for m in metas if m.name not in missing]


def _images(pred_hu: np.ndarray | torch.Tensor,
            ref_hu: np.ndarray | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """The prediction and reference as ``(N, 1, H, W)`` float32 tensors (:func:`as_nchw`), of one shape."""
    pred = as_nchw(pred_hu, "pred")
    ref = as_nchw(ref_hu, "ref") if ref_hu is not None else None
    if ref is not None and ref.shape != pred.shape:
        raise UserError(
            f"prediction {tuple(pred.shape)} and reference {tuple(ref.shape)} differ in shape", field="ref"
        )
    return pred, ref


def _chunk_plan(metas: list[MetricInfo], dev: torch.device, batch_size: int,
                n: int) -> list[tuple[MetricInfo, Scorer, list[tuple[int, int]]]]:  # fmt: skip
    """Per metric: its scorer on ``dev`` and the ``(start, stop)`` image chunks it takes
    (``min(batch_size, scorer.max_batch)`` images each)."""
    plan = []
    for m in metas:
        scorer = get_scorer(m.name, dev)
        bs = min(batch_size, scorer.max_batch or batch_size)
        plan.append((m, scorer, [(s, min(s + bs, n)) for s in range(0, n, bs)]))
    return plan


@dataclass
class _References:
    """The reference side of one :func:`compute_metrics` call: the reference images, their digest and
    region masks, and the caller's cache of prepared reference chunks (module docstring)."""

    images: torch.Tensor | None
    digest: str | None
    region: tuple
    masks: np.ndarray | None
    pixel_spacing_mm: float | None
    window: HUWindow
    device: torch.device
    ref_key: str | None
    cache: dict

    @classmethod
    def of(cls, ref: torch.Tensor | None, metas: list[MetricInfo], masks: np.ndarray | None,
           pixel_spacing_mm: float | None, window: HUWindow, device: torch.device, ref_key: str | None,
           cache: dict) -> _References:  # fmt: skip
        """The references of a call; the digest is taken only when a full-reference metric needs it."""
        ref_id = digest(ref) if (ref is not None and any(m.full_reference for m in metas)) else None
        region_id = (pixel_spacing_mm, None if masks is None else digest(torch.from_numpy(masks.astype(np.float32))))
        return cls(ref, ref_id, region_id, masks, pixel_spacing_mm, window, device, ref_key, cache)

    def state(self, m: MetricInfo, scorer: Scorer, start: int, stop: int) -> Any:
        """The prepared reference of images ``start:stop`` for ``m`` (None for a no-reference metric),
        from the cache or prepared and stored there."""
        if not m.full_reference:
            return None
        assert self.images is not None
        region = self.region if isinstance(scorer, RegionScorer) else ()
        key = (self.ref_key, self.digest, self.window.lo, self.window.hi, _scorer_key(m, self.device), start, stop,
               *region)  # fmt: skip
        if key not in self.cache:
            chunk = _to_space(self.images[start:stop], m, self.window, self.device)
            if isinstance(scorer, RegionScorer):
                assert self.pixel_spacing_mm is not None
                masks = None if self.masks is None else self.masks[start:stop]
                self.cache[key] = scorer.prepare_region_ref(chunk, masks, self.pixel_spacing_mm)
            else:
                self.cache[key] = scorer.prepare_ref(chunk)
        return self.cache[key]


def _score(plan: list[tuple[MetricInfo, Scorer, list[tuple[int, int]]]], preds: _Spaces, refs: _References,
           n: int, progress: bool) -> dict[str, np.ndarray]:  # fmt: skip
    """Each metric of ``plan`` chunk by chunk: ``{name: (n,) float64}``."""
    results: dict[str, np.ndarray] = {m.name: np.empty(n, dtype=np.float64) for m, _, _ in plan}
    with tqdm(
        total=sum(len(c) for _, _, c in plan), desc="metrics", disable=not progress, leave=False
    ) as bar:
        for m, scorer, chunks in plan:
            bar.set_postfix_str(m.name)
            for start, stop in chunks:
                state = refs.state(m, scorer, start, stop)  # the reference side first, as it is cached
                values = scorer.score(preds.get(m.space, start, stop), state)
                results[m.name][start:stop] = values.detach().double().cpu().numpy()
                bar.update(1)
    return results
