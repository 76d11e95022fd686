"""Scoring a run: every selected metric on every evaluation image at every scored epoch of every cell,
with a per-checkpoint cache, the LDCT-input baseline and the visual-comparison examples.

:func:`score_run` writes ``trajectories.parquet`` (the tidy table of :mod:`analysis.schema`),
``unavailable_metrics.csv``, ``cells.csv``, ``input_baseline.parquet`` and ``examples/`` under
``<out>/analysis/`` (file names: :mod:`benchmark.layout`).

Scoring is incremental: each (cell, checkpoint) has a cache file ``cache/<cell>/epoch_<NNN>.parquet``
holding its per-image values of every metric scored so far, stamped with the checkpoint's size and
modification time and the evaluation settings (split, window, image selection); a rerun computes only
the (checkpoint, metric) pairs not in a valid cache. Each checkpoint is denoised once for all its
missing metrics, reference-side work is shared across the epochs of a cell (the metrics'
``ref_cache``), images go through in chunks of ``chunk`` slices to bound memory, on the GPU when there
is one.

Only the checkpoints that exist are scored: a matrix whose ``checkpoints`` section thins them
(:class:`benchmark.config.CheckpointsConfig`: ``keep: last`` or ``every_k``, ``weights_only``) is scored
at its kept epochs (those ``evaluation.every`` selects among them, and always the last one; a
weights-only checkpoint scores like a full one). Metric trajectories over every epoch, and the
``best_val`` epoch chosen among every epoch, therefore need ``keep: all``; with fewer kept epochs they
are over the kept epochs only (the loss curves of ``history.csv`` always have every epoch).

The **input baseline** (:data:`analysis.schema.BASELINE_COLUMNS`: ``dose, patient, image, metric,
value``) holds the same metrics of the low-dose input itself ("no denoising") against the same
references, on the same images and in the same window: the evaluation set depends on the dose only, so
it is scored once per dose (cached in ``cache/_input/<dose>.parquet``, stamped with the evaluation
settings and the dataset's kind and options) and shared by every cell of that dose. It is kept out of
``trajectories.parquet`` so that correlations and significance tests compare trained losses only; the
tables and figures show it as a reference row/line (:data:`analysis.schema.INPUT_LABEL`).

With ``jobs > 1`` (``ldct-bench analyze --jobs N --devices ...``) worker processes fill the caches,
sharded by cell (:mod:`analysis.shards`), and this process then builds the outputs from the caches as a
serial run does: the same tables, and no file written by two processes.

Every file is written atomically (:mod:`benchmark.core.io`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
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

from analysis import metrics as metrics_pkg  # attribute access at call time (tests spy on compute_metrics)
from analysis.schema import (
    BASELINE_COLUMNS,
    COLUMNS,
    SOURCE_HISTORY,
    SOURCE_METRIC,
    check_columns,
    metric_info,
)
from analysis.shards import Shard, parse_devices, score_in_shards
from benchmark.checkpoint import CheckpointError, load_checkpoint, load_model
from benchmark.core.conventions import window_to_unit
from benchmark.core.device import resolve_device
from benchmark.core.errors import SkippedWarning, UserError
from benchmark.core.io import atomic_write, atomic_write_text
from benchmark.core.kernels import apply_portable
from benchmark.data import Dataset, Split, open_dataset
from benchmark.evaluate import denoise
from benchmark.layout import (
    CELLS_CSV,
    INPUT_BASELINE,
    NDCT_BASELINE,
    TRAJECTORIES,
    UNAVAILABLE,
    CellInfo,
    RunLayout,
)

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


@dataclass
class ScoreSummary:
    """What one :func:`score_run` call did. ``metric_evaluations`` counts (checkpoint, metric) pairs
    computed, ``baseline_evaluations`` (dose, metric) pairs of the LDCT-input baseline (both 0 on a
    rerun with nothing new); ``skipped`` maps cell id → reason; ``bad_checkpoints`` maps the path of
    each checkpoint skipped (another cell's, unreadable, unsafe, gone mid-read) → reason."""

    checkpoints: int = 0
    checkpoints_scored: int = 0
    metric_evaluations: int = 0
    baseline_evaluations: int = 0
    images: int = 0
    seconds: float = 0.0
    unavailable: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    bad_checkpoints: dict[str, str] = field(default_factory=dict)


def select_images(n: int, max_images: int | None) -> np.ndarray:
    """Indices of the evaluated slices: all, or ``max_images`` evenly spaced over the split (so every
    patient keeps slices), in order."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_images).round().astype(int))


def epochs_to_score(available: Iterable[int], every: int) -> list[int]:
    """Every ``every``-th epoch of ``available`` (epochs divisible by ``every``) and always the last.
    ``available`` may have gaps (checkpoints thinned by the matrix's ``checkpoints`` section): only
    epochs in it are returned."""
    epochs = sorted(available)
    if not epochs:
        return []
    keep = {e for e in epochs if e % every == 0} | {epochs[-1]}
    return sorted(keep)


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
    info = metrics_pkg.METRICS.get(metric)
    return info.version if info is not None else 0


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
        res = metrics_pkg.compute_metrics(list(metrics), pred, ev.targets[start:stop], window=window, device=device,
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
    return [m for m in metrics if metrics_pkg.info(m).regions]


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


def history_long(layout: RunLayout, cell: CellInfo) -> pd.DataFrame:
    """A cell's ``history.csv`` as ``source = "history"`` rows (every loss column, every epoch)."""
    hist = layout.history(cell.cell_id)
    cols = [c for c in hist.columns if c.startswith(("train_", "val_"))]
    if hist.empty or not cols:
        return pd.DataFrame(columns=COLUMNS)
    long = hist.melt(id_vars=["epoch"], value_vars=cols, var_name="metric", value_name="value")
    return long.assign(cell=cell.cell_id, loss=cell.loss, architecture=cell.architecture, dose=cell.dose,
                       seed=cell.seed, patient="", image="", source=SOURCE_HISTORY)[COLUMNS]  # fmt: skip


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
class ScoreOptions:
    """What :func:`score_run` scores; ``None`` fields take the matrix's ``evaluation`` settings."""

    metrics: list[str] | None = None
    every: int | None = None
    max_images: int | None = None
    batch_size: int | None = None
    device: str | None = None
    chunk: int = 64
    include_partial: bool = False
    example_image: str | None = None
    progress: bool = True
    jobs: int = 1  # worker processes, sharded by cell (analysis.shards); 1: in this process
    devices: list[str] | None = None  # the workers' devices, round-robin (None: ``device``)
    shard: Shard | None = None  # internal: score only this worker's share, write no run outputs


def drop_too_small(summary: ScoreSummary, shape: tuple[int, ...]) -> None:
    """Record as unavailable the metrics whose implementation needs larger images (``min_size``)."""
    for m in list(summary.metrics):
        need = metric_info(m).min_size
        if min(shape) < need:
            summary.unavailable[m] = (
                f"needs images of at least {need} pixels a side; the evaluation images are {shape[0]}x{shape[1]}"
            )
            summary.metrics.remove(m)


def cells_to_analyse(layout: RunLayout, include_partial: bool, skipped: dict[str, str]) -> list[CellInfo]:
    """The finished cells with checkpoints (also partial and diverged ones with ``include_partial``); every
    other cell goes into ``skipped`` with its status (or "no checkpoints"). Shared by the scoring and the
    task analysis (:mod:`analysis.detectability`)."""
    allowed = {"done", "partial", "diverged"} if include_partial else {"done"}
    cells = []
    for c in layout.cells():
        if c.status in allowed and layout.checkpoints(c.cell_id):
            cells.append(c)
        else:
            skipped[c.cell_id] = c.status if c.status not in allowed else "no checkpoints"
    return cells


def score_run(out: Path | str, opts: ScoreOptions | None = None) -> ScoreSummary:
    """Score every checkpoint to score (see the module docstring) and write ``trajectories.parquet``,
    ``unavailable_metrics.csv``, ``cells.csv`` and the visual-comparison examples under
    ``<out>/analysis/``. Incremental: nothing already in a valid cache is recomputed."""
    t0 = time.perf_counter()
    opts = opts or ScoreOptions()
    layout = RunLayout(out)
    matrix = layout.matrix()
    if matrix.reproducibility.kernels == "portable":  # score with the kernels the run trained with
        apply_portable(matrix.reproducibility.threads, field=f"{out}: matrix.resolved.yaml reproducibility.kernels")
    ev_cfg = matrix.evaluation
    metrics = list(dict.fromkeys(opts.metrics or ev_cfg.metrics))
    for m in metrics:
        metric_info(m)  # unknown names fail here, with the valid names
    every = opts.every or ev_cfg.every
    if every < 1:
        raise UserError(f"{every}: score every N-th epoch with N >= 1", field="every")
    window = ev_cfg.window if isinstance(ev_cfg.window, str) else f"{ev_cfg.window[0]},{ev_cfg.window[1]}"
    if opts.devices:  # workers use them all (jobs > 1); this process, the first
        device = (parse_devices(opts.devices, field="devices") or [""])[0]
    else:
        device = str(resolve_device(opts.device or matrix.device))
    batch_size = opts.batch_size or ev_cfg.batch_size
    summary = ScoreSummary(unavailable=metrics_pkg.unavailable_metrics(metrics))
    summary.metrics = [m for m in metrics if m not in summary.unavailable]
    cells = cells_to_analyse(layout, opts.include_partial, summary.skipped)
    plan = [(c, e, p) for c in cells for e, p in layout.checkpoints(c.cell_id).items()
            if e in epochs_to_score(layout.checkpoints(c.cell_id), every)]  # fmt: skip
    summary.checkpoints = len(plan)
    shard = opts.shard
    dataset = shard.dataset if shard is not None else open_dataset(matrix.dataset.kind, matrix.dataset.options)
    if opts.jobs != 1 and shard is None:  # workers fill the caches; the loop below then only reads them
        for part in score_in_shards(out, opts, plan, dataset, device):
            summary.checkpoints_scored += part.checkpoints_scored
            summary.metric_evaluations += part.metric_evaluations
            summary.baseline_evaluations += part.baseline_evaluations
    if shard is not None:
        plan = [x for x in plan if x[0].cell_id in shard.cells]
    configs = {c.cell_id: layout.cell_config(c.cell_id) or {} for c in cells}  # what each checkpoint must match
    first_seed: dict[tuple[str, str, str], int] = {}  # the example images come from the lowest seed
    for c in cells:
        key = (c.loss, c.architecture, c.dose)
        first_seed[key] = min(first_seed.get(key, c.seed), c.seed)
    bar = tqdm(total=len(plan), desc="scoring checkpoints", unit="ckpt", disable=not opts.progress)
    frames: list[pd.DataFrame] = []
    baseline: list[pd.DataFrame] = []  # the LDCT-input rows, one evaluation set per dose
    ndct_noise: list[pd.DataFrame] = []  # the NDCT noise's NPS rows, where the noise-free image is known
    dataset_id = _stamp(matrix.dataset.kind, sorted(matrix.dataset.options.items()))  # what the inputs are
    for dose in [d for d in matrix.doses if any(c.dose == d for c in cells)]:
        if shard is not None and dose not in shard.baseline_doses and not any(x[0].dose == dose for x in plan):
            continue
        ev = load_eval_set(dataset, ev_cfg.split, dose, window, opts.max_images or ev_cfg.max_images)
        summary.images += len(ev.images)
        drop_too_small(summary, ev.targets.shape[1:])
        ref_cache: dict = {}  # reference-side work of this dose's images, shared by all its cells and epochs
        ex_idx = example_index(ev, window, opts.example_image)
        kw: dict[str, Any] = {"window": window, "device": device, "batch_size": batch_size, "chunk": opts.chunk}
        if shard is None or dose in shard.baseline_doses:  # one shard owns each dose's baseline cache
            rows, done = cached_values(layout.input_cache(dose), ev.stamp, dataset_id,
                                       summary.metrics, partial(score_input, ev, ref_cache=ref_cache, **kw))  # fmt: skip
            summary.baseline_evaluations += done
            baseline.append(rows.assign(dose=dose))
            texture = noise_region_metrics(summary.metrics)
            if texture and ev.target_noise_free is not None:
                rows, done = cached_values(layout.ndct_cache(dose), ev.stamp, dataset_id, texture,
                                           partial(score_ndct_noise, ev, ref_cache=ref_cache, **kw))  # fmt: skip
                summary.baseline_evaluations += done
                ndct_noise.append(rows.assign(dose=dose))
        for cell, epoch, path in [x for x in plan if x[0].dose == dose]:
            bar.set_postfix_str(f"{cell.cell_id} epoch {epoch}")
            identity: dict[str, Any] = {"cell_id": cell.cell_id, "config": configs[cell.cell_id]}
            try:
                # the cell's own checkpoint, checked before any cache is trusted (tensors mapped, not read)
                load_checkpoint(path, mmap=True, **identity)
                rows, done = cached_values(layout.score_cache(cell.cell_id, epoch), ev.stamp,
                                           checkpoint_stamp(path), summary.metrics,
                                           partial(score_checkpoint, path, ev, ref_cache=ref_cache, identity=identity,
                                                   **kw))  # fmt: skip
            except (CheckpointError, FileNotFoundError) as exc:
                skip_checkpoint(summary.bad_checkpoints, path, exc)
                bar.update(1)
                continue
            summary.checkpoints_scored += int(done > 0)
            summary.metric_evaluations += done
            frames.append(rows.assign(cell=cell.cell_id, loss=cell.loss, architecture=cell.architecture,
                                      dose=cell.dose, seed=cell.seed, epoch=epoch, source=SOURCE_METRIC))  # fmt: skip
            last = max(layout.checkpoints(cell.cell_id), default=epoch)
            ex_path = layout.example(cell.cell_id)
            if epoch == last and first_seed[(cell.loss, cell.architecture, cell.dose)] == cell.seed \
                    and not _example_is_current(ex_path, path, str(ev.images[ex_idx])):  # fmt: skip
                try:
                    write_example(ex_path, path, epoch, ev, ex_idx, device=device, batch_size=batch_size,
                                  identity=identity)  # fmt: skip
                except (CheckpointError, FileNotFoundError) as exc:
                    skip_checkpoint(summary.bad_checkpoints, path, exc)
            bar.update(1)
        del ref_cache
    bar.close()
    if shard is not None:  # a worker: its caches and examples are written; the parent merges
        summary.seconds = time.perf_counter() - t0
        return summary
    frames += [history_long(layout, c) for c in cells]
    traj = pd.concat([f[COLUMNS] for f in frames if len(f)], ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    write_outputs(layout, traj, summary)
    write_input_baseline(layout, baseline)
    write_input_baseline(layout, ndct_noise, name=NDCT_BASELINE)
    summary.seconds = time.perf_counter() - t0
    return summary


def skip_checkpoint(bad: dict[str, str], path: Path, exc: Exception, *, by: str = "") -> None:
    """Leave one checkpoint out of the analysis (recorded in ``bad``: path → reason; ``by``: which analysis,
    for the message) with a warning naming it (a :class:`SkippedWarning`,
    printed by the CLI as ``warning: ...``): another cell's (or other
    settings'), unreadable, unsafe, or gone while being read (``analyze --partial`` beside a ``run``
    that thins its checkpoints). A format-1 or newer-format checkpoint is not skipped: it stops the
    analysis with the conversion command (:class:`benchmark.checkpoint.CheckpointError`)."""
    if isinstance(exc, CheckpointError) and exc.reason in ("legacy", "newer"):
        raise exc
    reason = exc.detail if isinstance(exc, CheckpointError) else "disappeared while being read (thinned or moved by a running `run`?)"
    if str(path) not in bad:
        bad[str(path)] = reason
        warnings.warn(f"{path}: {reason}; checkpoint skipped{by and ' by ' + by}", SkippedWarning, stacklevel=3)


def write_outputs(layout: RunLayout, traj: pd.DataFrame, summary: ScoreSummary) -> None:
    """``trajectories.parquet``, ``unavailable_metrics.csv`` (metric, reason) and ``cells.csv`` (every
    cell's status and whether it was analysed), each written atomically."""
    traj = traj.astype({"seed": "int64", "epoch": "int64", "value": "float64"})
    atomic_write(layout.analysis_file(TRAJECTORIES), lambda tmp: traj.to_parquet(tmp, index=False))
    unavailable = pd.DataFrame({"metric": list(summary.unavailable), "reason": list(summary.unavailable.values())})
    atomic_write_text(layout.analysis_file(UNAVAILABLE), unavailable.to_csv(index=False))
    cells = pd.DataFrame([{"cell": c.cell_id, "loss": c.loss, "architecture": c.architecture, "dose": c.dose,
                           "seed": c.seed, "status": c.status, "epochs": c.epochs_done,
                           "analysed": c.cell_id not in summary.skipped} for c in layout.cells()])  # fmt: skip
    atomic_write_text(layout.analysis_file(CELLS_CSV), cells.to_csv(index=False))


def write_input_baseline(layout: RunLayout, frames: Sequence[pd.DataFrame], *, name: str = INPUT_BASELINE) -> None:
    """``input_baseline.parquet`` (or ``name``, e.g. ``ndct_noise_baseline.parquet``;
    :data:`analysis.schema.BASELINE_COLUMNS`), written atomically."""
    rows = [f[BASELINE_COLUMNS] for f in frames if len(f)]
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=BASELINE_COLUMNS)
    table = table.astype({"dose": str, "patient": str, "image": str, "metric": str, "value": "float64"})
    atomic_write(layout.analysis_file(name), lambda tmp: table.to_parquet(tmp, index=False))


def load_input_baseline(out: Path | str, *, name: str = INPUT_BASELINE) -> pd.DataFrame:
    """Read ``<out>/analysis/input_baseline.parquet`` (or ``name``, e.g. the NDCT noise's
    ``ndct_noise_baseline.parquet``; :data:`analysis.schema.BASELINE_COLUMNS`); an empty table when the
    run was analysed before the baseline existed (tables and figures then simply lack the row)."""
    path = RunLayout(out, must_exist=False).analysis_file(name)
    if not path.is_file():
        return pd.DataFrame(columns=BASELINE_COLUMNS)
    table = pd.read_parquet(path)
    missing = [c for c in BASELINE_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"missing columns {missing}; expected {BASELINE_COLUMNS}", field=str(path))
    return table


def load_trajectories(out: Path | str) -> pd.DataFrame:
    """Read ``<out>/analysis/trajectories.parquet`` (written by :func:`score_run`)."""
    path = RunLayout(out, must_exist=False).analysis_file(TRAJECTORIES)
    if not path.is_file():
        raise UserError("no trajectories yet: run `ldct-bench analyze --out ...` first", field=str(path))
    return check_columns(pd.read_parquet(path), str(path))
