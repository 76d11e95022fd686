"""Scoring sharded by cell over worker processes: ``ldct-bench analyze --jobs N --devices 0,1,...``.

:func:`score_in_shards` splits the cells of a scoring plan into at most ``N`` shards (whole cells, the
load balanced by checkpoint count), starts one *spawned* process per shard, pinned to a device
(round-robin over ``devices``; ``cpu`` allowed) with ``torch.set_num_threads(max(1, cpu_count // n))``
(``n`` = the processes started), and runs :func:`analysis.scoring.score_run` restricted to the shard
(:class:`Shard`) in each. A worker scores through the same per-checkpoint cache as a serial run and
returns its :class:`analysis.scoring.ScoreSummary`; it writes nothing else.

Why no two processes ever write the same file: every cache file belongs to one (cell, checkpoint)
(``cache/<cell>/epoch_<NNN>.parquet``) and every example to one cell, and a cell is in exactly one
shard; the input-baseline cache of a dose (``cache/_input/<dose>.parquet``) is written only by the one
shard that owns that dose's baseline (:attr:`Shard.baseline_doses`). The run-level outputs
(``trajectories.parquet``, ``input_baseline.parquet``, ``cells.csv``...) are written by the parent
alone, after every worker has finished: it then walks the plan as a ``--jobs 1`` run does, reading every
value from the caches the workers just filled, so the merged table is the serial one, row for row.
Incremental behaviour is the cache's: a worker computes only what is missing or stale.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from benchmark.core.errors import UserError
from benchmark.data import Dataset
from benchmark.layout import CellInfo

if TYPE_CHECKING:  # analysis.scoring imports this module lazily; at run time the worker imports it
    from analysis.scoring import ScoreOptions, ScoreSummary


@dataclass(frozen=True)
class Shard:
    """One worker's share of a scoring run: the ids of its ``cells``, the doses whose LDCT-input baseline
    it scores, and the opened ``dataset`` (passed, not re-opened: a worker needs no dataset registry)."""

    cells: frozenset[str]
    baseline_doses: frozenset[str]
    dataset: Dataset
    index: int = 0


def parse_devices(spec: str | Sequence[str] | None, *, field: str = "--devices") -> list[str] | None:
    """``"0,1"`` / ``"cuda:1,cpu"`` / a list of such names → torch device names (``"0"`` means
    ``cuda:0``); None → None. A bad name, CUDA where torch sees none or an index past the last GPU is a
    :class:`UserError` naming ``field``."""
    if spec is None:
        return None
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    if not items or not all(items):
        raise UserError(f"{spec!r}: give devices separated by commas, e.g. 0,1 or cuda:0,cpu", field=field)
    out = []
    for item in items:
        name = f"cuda:{item}" if item.isdigit() else item
        try:
            dev = torch.device(name)
        except (RuntimeError, TypeError):
            raise UserError(f"{item!r}: use cpu, cuda, cuda:N or a GPU index N", field=field) from None
        if dev.type not in ("cpu", "cuda"):
            raise UserError(f"{item!r}: use cpu, cuda, cuda:N or a GPU index N", field=field)
        if dev.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise UserError(f"{item!r}: torch sees no CUDA device here; use cpu", field=field)
            if (dev.index or 0) >= count:
                raise UserError(f"{item!r}: torch sees {count} CUDA device(s), 0 to {count - 1}", field=field)
        out.append(str(dev))
    return out


def check_jobs(jobs: int, *, field: str = "--jobs") -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"{jobs!r}: the number of scoring processes must be a positive integer", field=field)
    return jobs


def assign_shards(plan: Sequence[tuple[CellInfo, int, Path]], jobs: int) -> list[tuple[list[str], list[str]]]:
    """``[(cell ids, baseline doses)]``, at most ``jobs`` non-empty shards: the cells of ``plan`` in plan
    order, each to the least-loaded shard (load: checkpoints, plus one for a dose's input baseline, which
    goes with the first cell of that dose). Deterministic."""
    counts: dict[str, int] = {}
    dose_of: dict[str, str] = {}
    for cell, _, _ in plan:
        counts[cell.cell_id] = counts.get(cell.cell_id, 0) + 1
        dose_of[cell.cell_id] = cell.dose
    shards: list[tuple[list[str], list[str]]] = [([], []) for _ in range(min(jobs, len(counts)))]
    load = [0] * len(shards)
    owned: set[str] = set()
    for cell_id, n in counts.items():
        i = load.index(min(load))
        shards[i][0].append(cell_id)
        load[i] += n
        if dose_of[cell_id] not in owned:
            owned.add(dose_of[cell_id])
            shards[i][1].append(dose_of[cell_id])
            load[i] += 1
    return shards


def _run_shard(out: str, opts: ScoreOptions, threads: int) -> tuple[ScoreSummary | None, tuple[str, str | None] | None]:
    """A worker: score one shard; a :class:`UserError` comes back as ``(message, field)`` (exceptions with
    keyword-only fields do not survive pickling)."""
    from analysis.scoring import score_run  # the worker process imports it here

    torch.set_num_threads(threads)
    try:
        return score_run(out, opts), None
    except UserError as exc:
        return None, (exc.message, exc.field)


def score_in_shards(out: Path | str, opts: ScoreOptions, plan: Sequence[tuple[CellInfo, int, Path]],
                    dataset: Dataset, device: str) -> list[ScoreSummary]:  # fmt: skip
    """Fill the score caches of ``plan`` with ``opts.jobs`` worker processes (module docstring) and return
    their summaries. ``device`` is used where ``opts.devices`` is None."""
    check_jobs(opts.jobs, field="jobs")
    devices = parse_devices(opts.devices, field="devices") or [device]
    shards = assign_shards(plan, opts.jobs)
    if not shards:
        return []
    threads = max(1, (os.cpu_count() or 1) // len(shards))
    tasks = [replace(opts, jobs=1, devices=None, device=devices[i % len(devices)], progress=False,
                     shard=Shard(frozenset(cells), frozenset(doses), dataset, i))
             for i, (cells, doses) in enumerate(shards)]  # fmt: skip
    with ProcessPoolExecutor(max_workers=len(tasks), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_shard, str(out), t, threads) for t in tasks]
        results = [f.result() for f in tqdm(futures, desc=f"scoring in {len(tasks)} processes", unit="shard",
                                             disable=not opts.progress)]  # fmt: skip
    summaries = []
    for summary, error in results:
        if error is not None:
            raise UserError(error[0], field=error[1])
        assert summary is not None
        summaries.append(summary)
    return summaries
