"""Scoring a run: every selected metric on every evaluation image at every scored epoch of every cell,
with a per-checkpoint cache, the LDCT-input baseline and the visual-comparison examples.

:func:`score_run` writes ``trajectories.parquet`` (the tidy table of :mod:`analysis.schema`),
``unavailable_metrics.csv``, ``cells.csv``, ``input_baseline.parquet`` and ``examples/`` under
``<out>/analysis/`` (file names: :mod:`benchmark.layout`).

The pass has three steps, each in its own module, called downward: the plan (what to score:
:mod:`analysis.scoring_plan`), the worker processes that fill the caches of their shard of it when
``jobs > 1`` (:func:`score_in_shards` over :mod:`analysis.shards`), and its execution through the
per-checkpoint caches (:mod:`analysis.scoring_exec`), after which this module writes the outputs.

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
sharded by cell (:func:`score_in_shards`), and this process then builds the outputs from the caches as a
serial run does: the same tables, and no file written by two processes.

Every file is written atomically (:mod:`benchmark.core.io`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import pandas as pd

from analysis.schema import BASELINE_COLUMNS, COLUMNS, SOURCE_HISTORY, check_columns
from analysis.scoring_exec import score_checkpoints, score_shard
from analysis.scoring_plan import ScoreOptions, ScorePlan, ScoreSummary, Shard, epochs_to_score, plan_scoring
from analysis.shards import assign_shards, call_in_worker, check_jobs, parse_devices, run_in_workers
from benchmark.core.device import assign_devices
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write, atomic_write_text
from benchmark.layout import (
    CELLS_CSV,
    INPUT_BASELINE,
    NDCT_BASELINE,
    TRAJECTORIES,
    UNAVAILABLE,
    CellInfo,
    RunLayout,
)

# the public face of the scoring; epochs_to_score is also imported from here (benchmarks/preset_cost.py)
__all__ = ["ScoreOptions", "ScoreSummary", "epochs_to_score", "load_input_baseline", "load_trajectories", "score_run"]


def score_run(out: Path | str, opts: ScoreOptions | None = None) -> ScoreSummary:
    """Score every checkpoint to score (see the module docstring) and write ``trajectories.parquet``,
    ``unavailable_metrics.csv``, ``cells.csv`` and the visual-comparison examples under
    ``<out>/analysis/``. Incremental: nothing already in a valid cache is recomputed."""
    t0 = time.perf_counter()
    plan = plan_scoring(out, opts or ScoreOptions())
    summary = plan.summary
    if plan.opts.jobs != 1:  # workers fill the caches; the pass below then only reads them
        for part in score_in_shards(out, plan):
            summary.checkpoints_scored += part.checkpoints_scored
            summary.metric_evaluations += part.metric_evaluations
            summary.baseline_evaluations += part.baseline_evaluations
    rows = score_checkpoints(plan)
    frames = rows.trajectory + [history_long(plan.layout, c) for c in plan.cells]
    traj = pd.concat([f[COLUMNS] for f in frames if len(f)], ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    write_outputs(plan.layout, traj, summary)
    write_input_baseline(plan.layout, rows.baseline)
    write_input_baseline(plan.layout, rows.ndct_noise, name=NDCT_BASELINE)
    summary.seconds = time.perf_counter() - t0
    return summary


def score_in_shards(out: Path | str, plan: ScorePlan) -> list[ScoreSummary]:
    """Fill the score caches of ``plan`` with ``plan.opts.jobs`` worker processes (:mod:`analysis.shards`:
    whole cells per shard, each dose's input baseline owned by one shard) and return their summaries. Each
    worker runs :func:`analysis.scoring_exec.score_shard` on its :class:`Shard`, on one of ``opts.devices``
    (round-robin; ``plan.device`` where they are None)."""
    opts = plan.opts
    check_jobs(opts.jobs, field="jobs")
    devices = parse_devices(opts.devices, field="devices") or [plan.device]
    shards = assign_shards(plan.checkpoints, opts.jobs)
    if not shards:
        return []
    tasks = [replace(opts, jobs=1, devices=None, device=dev, progress=False,
                     shard=Shard(frozenset(cells), frozenset(doses), plan.dataset, i))
             for i, ((cells, doses), dev) in enumerate(zip(shards, assign_devices(devices, len(shards))))]  # fmt: skip
    return run_in_workers(partial(call_in_worker, score_shard), out, tasks, progress=opts.progress,
                          desc=f"scoring in {len(tasks)} processes")  # fmt: skip


def history_long(layout: RunLayout, cell: CellInfo) -> pd.DataFrame:
    """A cell's ``history.csv`` as ``source = "history"`` rows (every loss column, every epoch)."""
    hist = layout.history(cell.cell_id)
    cols = [c for c in hist.columns if c.startswith(("train_", "val_"))]
    if hist.empty or not cols:
        return pd.DataFrame(columns=COLUMNS)
    long = hist.melt(id_vars=["epoch"], value_vars=cols, var_name="metric", value_name="value")
    return long.assign(cell=cell.cell_id, loss=cell.loss, architecture=cell.architecture, dose=cell.dose,
                       seed=cell.seed, patient="", image="", source=SOURCE_HISTORY)[COLUMNS]  # fmt: skip


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
