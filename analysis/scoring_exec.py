"""Executing a scoring plan (:mod:`analysis.scoring_plan`): every metric on every evaluation image at
every planned checkpoint, through a per-checkpoint cache, with the LDCT-input and NDCT-noise baselines and
the visual-comparison examples.

Each (cell, checkpoint) has a cache file ``cache/<cell>/epoch_<NNN>.parquet`` holding its per-image values
of every metric scored so far, stamped with the checkpoint's size and modification time and the evaluation
settings (split, window, image selection); :func:`cached_values` computes only the (checkpoint, metric)
pairs not in a valid cache. Each checkpoint is denoised once for all its missing metrics
(:func:`score_checkpoint`), reference-side work is shared across the epochs of a cell (the metrics'
``ref_cache``), images go through :func:`analysis.metrics.compute_metrics` in chunks of ``chunk`` slices
to bound memory, on the GPU when there is one. The baselines of a dose are cached the same way
(``cache/_input/<dose>.parquet``, stamped with the dataset's kind and options).

:func:`score_checkpoints` runs a plan in this process and returns the rows; :func:`score_shard` is a
worker process's whole job (plan, then fill the caches of its shard). Every file is written atomically
(:mod:`benchmark.core.io`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from tqdm.auto import tqdm

from analysis.metrics import METRICS, compute_metrics, info
from analysis.schema import SOURCE_METRIC
from analysis.scoring_plan import (
    Checkpoint,
    ScoreOptions,
    ScorePlan,
    ScoreSummary,
    plan_scoring,
    skip_checkpoint,
)
from benchmark.checkpoint import CheckpointError, load_checkpoint, load_model
from benchmark.core.conventions import window_to_unit
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write
from benchmark.data import Dataset, Split
from benchmark.evaluate import denoise
from benchmark.layout import CellInfo

CACHE_COLUMNS = ["patient", "image", "metric", "value"]


@dataclass
class EvalSet:
    """The evaluation slices of one dose: ``(S, H, W)`` HU stacks and their ids (a subset by ``indices``).

    ``source`` is the split's whole input stack, ``rows`` the evaluated images' rows in it and
    ``volumes`` its contiguous volumes: a 3-D model denoises an image with its volume around it
    (:func:`benchmark.evaluate.denoise`), even when the neighbouring slices are not evaluated.
    ``pixel_mm`` (the dataset's pixel spacing) and ``roi`` (the dataset's ``(S, H, W)`` uniform-region
    masks, ``extra["roi"]``, or None) feed the NPS metrics; ``target_noise_free`` is the noiseless
    counterpart of a noisy reference (``synth`` ``target: ndct``), else None."""

    dose: str
    inputs: np.ndarray
    targets: np.ndarray
    patients: np.ndarray
    images: np.ndarray
    stamp: str  # identity of the evaluation settings (split, window, image selection) for the cache
    source: np.ndarray
    rows: np.ndarray
    volumes: list[slice]
    pixel_mm: float = 1.0
    roi: np.ndarray | None = None
    target_noise_free: np.ndarray | None = None


def select_images(n: int, max_images: int | None) -> np.ndarray:
    """Indices of the evaluated slices: all, or ``max_images`` evenly spaced over the split (so every
    patient keeps slices), in order."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_images).round().astype(int))


def _stamp(*parts: object) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def checkpoint_stamp(path: Path) -> str:
    """Identity of a checkpoint file for the cache: size and modification time (a retrained epoch
    rewrites the file, so its stamp changes)."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def load_eval_set(dataset: Dataset, split: Split, dose: str, window: str, max_images: int | None) -> EvalSet:
    """Load the evaluation split of one dose (HU) and pick the images to score."""
    sl = dataset.load(split, dose)
    idx = select_images(len(sl), max_images)
    images = np.asarray(sl.slice_ids)[idx].astype(str)
    every_slice = len(idx) == len(sl)  # keep the dataset's (possibly memory-mapped) arrays: chunks read lazily
    roi = sl.extra.get("roi")
    clean = sl.extra.get("other_target") if sl.extra.get("target_kind") == "ndct" else None
    return EvalSet(
        dose=dose,
        inputs=sl.inputs if every_slice else np.asarray(sl.inputs[idx], dtype=np.float32),
        targets=sl.targets if every_slice else np.asarray(sl.targets[idx], dtype=np.float32),
        patients=np.asarray(sl.patients)[idx].astype(str),
        images=images,
        stamp=_stamp(split, dose, str(window), tuple(images), tuple(sl.targets.shape[1:])),
        source=sl.inputs,
        rows=idx,
        volumes=sl.volumes(),
        pixel_mm=float(sl.pixel_spacing_mm),
        roi=None if roi is None else np.asarray(roi[idx], dtype=bool),
        target_noise_free=None if clean is None else np.asarray(clean[idx], dtype=np.float32),
    )


def _version(metric: str) -> int:
    """The registry's implementation version of ``metric`` (0 for a name it no longer has)."""
    meta = METRICS.get(metric)
    return meta.version if meta is not None else 0


def read_cache(path: Path, settings: str, checkpoint: str) -> tuple[pd.DataFrame, dict[str, int]] | None:
    """The cached per-image values of one checkpoint and the implementation version each metric was
    computed with (:attr:`analysis.metrics.MetricInfo.version`; 1 for caches written before versions
    were stamped), or None if absent, unreadable or stale."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except Exception:  # a truncated or foreign file: rescore
        return None
    meta = table.schema.metadata or {}
    if meta.get(b"settings", b"").decode() != settings or meta.get(b"checkpoint", b"").decode() != checkpoint:
        return None
    try:
        versions = {str(k): int(v) for k, v in json.loads(meta.get(b"versions", b"{}").decode()).items()}
    except (ValueError, TypeError, AttributeError):
        versions = {}
    return table.to_pandas(), versions


def write_cache(path: Path, values: pd.DataFrame, settings: str, checkpoint: str) -> None:
    """Write one checkpoint's values with their stamps and each metric's implementation version,
    atomically (:mod:`benchmark.core.io`)."""
    table = pa.Table.from_pandas(values[CACHE_COLUMNS].reset_index(drop=True), preserve_index=False)
    versions = {str(m): _version(str(m)) for m in dict.fromkeys(values["metric"])}
    table = table.replace_schema_metadata({"settings": settings, "checkpoint": checkpoint,
                                           "versions": json.dumps(versions, sort_keys=True)})  # fmt: skip
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def score_images(
    ev: EvalSet,
    metrics: Sequence[str],
    produce: Callable[[slice], np.ndarray | torch.Tensor],
    *,
    window: str,
    device: str,
    batch_size: int,
    chunk: int,
    ref_cache: dict,
) -> pd.DataFrame:
    """Every metric in ``metrics`` per image of ``ev`` for the images ``produce(part)`` makes for the
    images ``part`` of ``ev`` (a slice of its images → ``(s, H, W)`` HU), in chunks of ``chunk`` slices,
    against ``ev.targets``. Returns :data:`CACHE_COLUMNS` rows."""
    n = len(ev.images)
    values = {m: np.empty(n) for m in metrics}
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        pred = produce(slice(start, stop))
        res = compute_metrics(list(metrics), pred, ev.targets[start:stop], window=window, device=device,
                              batch_size=batch_size, ref_cache=ref_cache, pixel_spacing_mm=ev.pixel_mm,
                              roi=None if ev.roi is None else ev.roi[start:stop])  # fmt: skip
        for m in metrics:
            values[m][start:stop] = res[m]
    frames = [pd.DataFrame({"patient": ev.patients, "image": ev.images, "metric": m, "value": values[m]}) for m in metrics]
    return pd.concat(frames, ignore_index=True)


def score_checkpoint(path: Path, ev: EvalSet, metrics: Sequence[str], *, window: str, device: str,
                     batch_size: int, chunk: int, ref_cache: dict,
                     identity: Mapping[str, Any] | None = None) -> pd.DataFrame:  # fmt: skip
    """Denoise the evaluation set with one checkpoint (once, chunk by chunk; a 3-D model each image
    within its volume, :func:`denoise_images`) and compute every metric in ``metrics`` per image
    (:func:`score_images`). On a GPU the denoised images stay there for the metrics (``as_tensor``).
    ``identity`` (``cell_id``, ``config``): load it only if it is that cell's
    (:func:`benchmark.checkpoint.load_checkpoint`)."""
    model = load_model(path, device=device, **(identity or {}))
    on_device = torch.device(device).type != "cpu"
    return score_images(ev, metrics, lambda part: denoise_images(model, ev, part, batch_size=batch_size, device=device,
                                                                 as_tensor=on_device),
                        window=window, device=device, batch_size=batch_size, chunk=chunk, ref_cache=ref_cache)  # fmt: skip


def denoise_images(model: nn.Module, ev: EvalSet, part: slice, *, batch_size: int, device: str,
                   as_tensor: bool = False) -> np.ndarray | torch.Tensor:  # fmt: skip
    """The denoised images ``part`` of ``ev``, ``(s, H, W)`` HU: :func:`benchmark.evaluate.denoise` of
    their rows of the split, each with its volume (2-D models: slice by slice, as ``ev.inputs[part]``); a
    numpy array, or with ``as_tensor`` a tensor left on ``device``."""
    return denoise(model, ev.source, rows=ev.rows[part], volumes=ev.volumes, batch_size=batch_size, device=device,
                   as_tensor=as_tensor)


def score_input(ev: EvalSet, metrics: Sequence[str], *, window: str, device: str, batch_size: int, chunk: int,
                ref_cache: dict) -> pd.DataFrame:  # fmt: skip
    """The LDCT-input baseline: every metric of the low-dose inputs themselves (no denoising) against the
    references (:func:`score_images` with the identity)."""
    return score_images(ev, metrics, lambda part: np.array(ev.inputs[part], dtype=np.float32), window=window,
                        device=device, batch_size=batch_size, chunk=chunk, ref_cache=ref_cache)  # fmt: skip


def score_ndct_noise(ev: EvalSet, metrics: Sequence[str], *, window: str, device: str, batch_size: int, chunk: int,
                     ref_cache: dict) -> pd.DataFrame:  # fmt: skip
    """The NDCT scan's own noise texture: the noise-region (NPS) metrics of ``metrics`` for the
    noise-free image scored against the noisy NDCT reference, i.e. the NPS of (noise-free − NDCT) = that
    of the NDCT noise, which a perfect denoiser's residual would show. Needs ``ev.target_noise_free``
    (``synth`` with ``target: ndct``); the reference of ``closer_texture`` claims with ``reference: ndct``."""
    assert ev.target_noise_free is not None
    clean = ev.target_noise_free
    return score_images(ev, metrics, lambda part: np.array(clean[part], dtype=np.float32), window=window,
                        device=device, batch_size=batch_size, chunk=chunk, ref_cache=ref_cache)  # fmt: skip


def noise_region_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics of ``metrics`` measured on noise regions (``MetricInfo.regions``: the NPS features)."""
    return [m for m in metrics if info(m).regions]


def cached_values(path: Path, settings: str, identity: str, metrics: Sequence[str],
                  compute: Callable[[list[str]], pd.DataFrame]) -> tuple[pd.DataFrame, int]:  # fmt: skip
    """The values of ``metrics`` from the cache file ``path`` (stamped ``settings``/``identity``),
    computing and caching only the missing metrics with ``compute(todo)``. Returns the rows of
    ``metrics`` and the number of metrics computed."""
    found = read_cache(path, settings, identity)
    cached = None
    if found is not None:  # values of an older implementation of a metric are recomputed
        table, versions = found
        current = {m for m in dict.fromkeys(table["metric"]) if versions.get(str(m), 1) == _version(str(m))}
        cached = table[table["metric"].isin(current)]
    have = set(cached["metric"]) if cached is not None else set()
    todo = [m for m in metrics if m not in have]
    if todo:
        new = compute(todo)
        cached = new if cached is None else pd.concat([cached, new], ignore_index=True)
        write_cache(path, cached, settings, identity)
    assert cached is not None
    return cached[cached["metric"].isin(list(metrics))], len(todo)


def drop_too_small(summary: ScoreSummary, shape: tuple[int, ...]) -> None:
    """Record as unavailable the metrics whose implementation needs larger images (``min_size``)."""
    for m in list(summary.metrics):
        need = info(m).min_size
        if min(shape) < need:
            summary.unavailable[m] = (
                f"needs images of at least {need} pixels a side; the evaluation images are {shape[0]}x{shape[1]}"
            )
            summary.metrics.remove(m)


def example_index(ev: EvalSet, window: str, image: str | None = None) -> int:
    """The slice shown in the visual comparison: ``image`` if given, else the one whose windowed reference
    has the largest standard deviation (the most visible structure in the window)."""
    if image is not None:
        hits = np.flatnonzero(ev.images == image)
        if not len(hits):
            raise UserError(f"{image!r} is not an evaluation image (e.g. {ev.images[0]!r})", field="example_image")
        return int(hits[0])
    spread = [float(window_to_unit(ev.targets[i], window).std()) for i in range(len(ev.images))]
    return int(np.argmax(spread))


def write_example(path: Path, checkpoint: Path, epoch: int, ev: EvalSet, idx: int, *, device: str,
                  batch_size: int = 1, identity: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Save one denoised slice with its low-dose input and reference (HU) for the visual comparison (a
    3-D model's within its volume, with the scoring's ``batch_size``, so it is the slice scored), and
    what the NPS figure needs: ``pixel_mm``, the uniform-region mask ``roi`` when the dataset has one, and
    ``target_noise_free`` when the reference is noisy. ``identity``: as :func:`score_checkpoint`'s."""
    model = load_model(checkpoint, device=device, **(identity or {}))
    out = denoise_images(model, ev, slice(idx, idx + 1), batch_size=batch_size, device=device)[0]
    extra: dict[str, Any] = {"pixel_mm": ev.pixel_mm}
    if ev.roi is not None:
        extra["roi"] = ev.roi[idx]
    if ev.target_noise_free is not None:
        extra["target_noise_free"] = ev.target_noise_free[idx]
    atomic_write(path, lambda tmp: np.savez_compressed(
        tmp, input=np.asarray(ev.inputs[idx], np.float32), output=out, target=np.asarray(ev.targets[idx], np.float32),
        image=ev.images[idx], epoch=epoch, stamp=checkpoint_stamp(checkpoint), **extra), suffix=".npz")  # fmt: skip


def _example_is_current(path: Path, checkpoint: Path, image: str) -> bool:
    if not path.is_file():
        return False
    with np.load(path, allow_pickle=False) as z:  # a run folder's file: never unpickle
        return str(z["stamp"]) == checkpoint_stamp(checkpoint) and str(z["image"]) == image


@dataclass
class ScoredRows:
    """The rows a scoring pass read from (or computed into) the caches: per checkpoint, trajectory rows
    (:data:`analysis.schema.COLUMNS` but for the history); per dose, the LDCT input's and the NDCT noise's
    (:data:`analysis.schema.BASELINE_COLUMNS`)."""

    trajectory: list[pd.DataFrame] = field(default_factory=list)
    baseline: list[pd.DataFrame] = field(default_factory=list)
    ndct_noise: list[pd.DataFrame] = field(default_factory=list)


def score_shard(out: str, opts: ScoreOptions) -> ScoreSummary:
    """A worker process's job (``opts.shard`` set by :func:`analysis.scoring.score_in_shards`): plan, then
    fill the caches and examples of its shard; it writes no run output."""
    t0 = time.perf_counter()
    plan = plan_scoring(out, opts)
    score_checkpoints(plan)
    plan.summary.seconds = time.perf_counter() - t0
    return plan.summary


def score_checkpoints(plan: ScorePlan) -> ScoredRows:
    """Every checkpoint of ``plan`` (of its shard, if any) and the baselines of its doses, dose by dose,
    through the caches (:func:`cached_values`; counts and skipped checkpoints go into ``plan.summary``).
    One reference cache per dose serves its baseline, all its cells and all their epochs."""
    todo = plan.to_score()
    shard = plan.opts.shard
    configs = {c.cell_id: plan.layout.cell_config(c.cell_id) or {} for c in plan.cells}  # what each checkpoint must match
    rows = ScoredRows()
    bar = tqdm(total=len(todo), desc="scoring checkpoints", unit="ckpt", disable=not plan.opts.progress)
    for dose in plan.doses():
        if shard is not None and dose not in shard.baseline_doses and not any(x[0].dose == dose for x in todo):
            continue
        dose_run = _DoseRun.open(plan, dose)
        if shard is None or dose in shard.baseline_doses:  # one shard owns each dose's baseline cache
            dose_run.score_baselines(rows)
        for cell, epoch, path in [x for x in todo if x[0].dose == dose]:
            bar.set_postfix_str(f"{cell.cell_id} epoch {epoch}")
            dose_run.score_checkpoint(rows, (cell, epoch, path), configs[cell.cell_id])
            bar.update(1)
        del dose_run  # its reference cache goes before the next dose's images are loaded
    bar.close()
    return rows


@dataclass
class _DoseRun:
    """The scoring of one dose: its evaluation set, its example image, the reference cache its baselines,
    cells and epochs share, and the keyword arguments of every scoring call."""

    plan: ScorePlan
    ev: EvalSet
    example: int
    ref_cache: dict
    kw: dict[str, Any]
    dataset_id: str  # what the inputs are: the baseline caches' identity

    @classmethod
    def open(cls, plan: ScorePlan, dose: str) -> _DoseRun:
        """Load the dose's evaluation set and drop the metrics its images are too small for."""
        ev_cfg, opts, matrix = plan.matrix.evaluation, plan.opts, plan.matrix
        ev = load_eval_set(plan.dataset, ev_cfg.split, dose, plan.window, opts.max_images or ev_cfg.max_images)
        plan.summary.images += len(ev.images)
        drop_too_small(plan.summary, ev.targets.shape[1:])
        return cls(plan=plan, ev=ev, example=example_index(ev, plan.window, opts.example_image), ref_cache={},
                   kw={"window": plan.window, "device": plan.device, "batch_size": plan.batch_size, "chunk": opts.chunk},
                   dataset_id=_stamp(matrix.dataset.kind, sorted(matrix.dataset.options.items())))  # fmt: skip

    def score_baselines(self, rows: ScoredRows) -> None:
        """The LDCT input's rows of every metric and, where the noise-free image is known, the NDCT noise's
        rows of the noise-region metrics."""
        layout, summary, ev, dose = self.plan.layout, self.plan.summary, self.ev, self.ev.dose
        found, done = cached_values(layout.input_cache(dose), ev.stamp, self.dataset_id, summary.metrics,
                                    partial(score_input, ev, ref_cache=self.ref_cache, **self.kw))  # fmt: skip
        summary.baseline_evaluations += done
        rows.baseline.append(found.assign(dose=dose))
        texture = noise_region_metrics(summary.metrics)
        if texture and ev.target_noise_free is not None:
            found, done = cached_values(layout.ndct_cache(dose), ev.stamp, self.dataset_id, texture,
                                        partial(score_ndct_noise, ev, ref_cache=self.ref_cache, **self.kw))  # fmt: skip
            summary.baseline_evaluations += done
            rows.ndct_noise.append(found.assign(dose=dose))

    def score_checkpoint(self, rows: ScoredRows, checkpoint: Checkpoint, config: dict[str, Any]) -> None:
        """One checkpoint's rows (the cell's own, checked before any cache is trusted; skipped with a warning
        if not) and, at the cell's last epoch and lowest seed, its visual-comparison example."""
        cell, epoch, path = checkpoint
        layout, summary, ev = self.plan.layout, self.plan.summary, self.ev
        identity: dict[str, Any] = {"cell_id": cell.cell_id, "config": config}
        try:
            load_checkpoint(path, mmap=True, **identity)  # tensors mapped, not read
            found, done = cached_values(layout.score_cache(cell.cell_id, epoch), ev.stamp, checkpoint_stamp(path),
                                        summary.metrics, partial(score_checkpoint, path, ev, ref_cache=self.ref_cache,
                                                                 identity=identity, **self.kw))  # fmt: skip
        except (CheckpointError, FileNotFoundError) as exc:
            skip_checkpoint(summary.bad_checkpoints, path, exc)
            return
        summary.checkpoints_scored += int(done > 0)
        summary.metric_evaluations += done
        rows.trajectory.append(found.assign(cell=cell.cell_id, loss=cell.loss, architecture=cell.architecture,
                                             dose=cell.dose, seed=cell.seed, epoch=epoch, source=SOURCE_METRIC))  # fmt: skip
        if self._shows_example(cell, epoch, path):
            try:
                write_example(layout.example(cell.cell_id), path, epoch, ev, self.example, device=self.plan.device,
                              batch_size=self.plan.batch_size, identity=identity)  # fmt: skip
            except (CheckpointError, FileNotFoundError) as exc:
                skip_checkpoint(summary.bad_checkpoints, path, exc)

    def _shows_example(self, cell: CellInfo, epoch: int, path: Path) -> bool:
        """Whether this checkpoint's example is to be (re)written: the cell's last epoch, the lowest seed of
        its loss × architecture × dose (the example images come from it), and no current example file."""
        last = max(self.plan.layout.checkpoints(cell.cell_id), default=epoch)
        lowest = min(c.seed for c in self.plan.cells
                     if (c.loss, c.architecture, c.dose) == (cell.loss, cell.architecture, cell.dose))  # fmt: skip
        return epoch == last and lowest == cell.seed and \
            not _example_is_current(self.plan.layout.example(cell.cell_id), path, str(self.ev.images[self.example]))  # fmt: skip
