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
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from tqdm.auto import tqdm

from benchmark.core.device import assign_devices, parse_device_list, worker_threads
from benchmark.core.errors import UserError
from benchmark.data import Dataset
from benchmark.layout import CellInfo

if TYPE_CHECKING:  # analysis.scoring imports this module lazily; at run time the worker imports it
    from analysis.scoring import ScoreOptions, ScoreSummary

R = TypeVar("R")


@dataclass(frozen=True)
class Shard:
    """One worker's share of a scoring run: the ids of its ``cells``, the doses whose LDCT-input baseline
    it scores, and the opened ``dataset`` (passed, not re-opened: a worker needs no dataset registry)."""

    cells: frozenset[str]
    baseline_doses: frozenset[str]
    dataset: Dataset
    index: int = 0


def parse_devices(spec: str | Sequence[str] | None, *, field: str = "--devices") -> list[str] | None:
    """``"0,1"`` / ``"cuda:1,cpu"`` / a list of such names → torch device names
    (:func:`benchmark.core.device.parse_device_list`; ``"0"`` means ``cuda:0``); None → None."""
    return None if spec is None else [str(d) for d in parse_device_list(spec, field=field)]


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


WorkerResult = tuple[R | None, tuple[str, str | None] | None]


def call_in_worker(run: Callable[[str, Any], R], out: str, opts: Any, threads: int) -> WorkerResult[R]:
    """A worker's body: ``run(out, opts)`` with ``threads`` intra-op CPU threads; a :class:`UserError` comes
    back as ``(message, field)`` (exceptions with keyword-only fields do not survive pickling)."""
    torch.set_num_threads(threads)
    try:
        return run(out, opts), None
    except UserError as exc:
        return None, (exc.message, exc.field)


def _run_shard(out: str, opts: ScoreOptions, threads: int) -> WorkerResult[ScoreSummary]:
    """A worker: score one shard (:func:`call_in_worker` of :func:`analysis.scoring.score_run`)."""
    from analysis.scoring import score_run  # the worker process imports it here

    return call_in_worker(score_run, out, opts, threads)


def run_in_workers(worker: Callable[[str, Any, int], WorkerResult[R]], out: Path | str, tasks: Sequence[Any], *,
                   progress: bool, desc: str) -> list[R]:  # fmt: skip
    """``worker(out, task, threads)`` for each of ``tasks`` in its own *spawned* process, the machine's CPU
    threads divided among them; their results in task order, or the first worker's :class:`UserError`."""
    threads = worker_threads(len(tasks))
    with ProcessPoolExecutor(max_workers=len(tasks), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(worker, str(out), t, threads) for t in tasks]
        results = [f.result() for f in tqdm(futures, desc=desc, unit="shard", disable=not progress)]
    done = []
    for value, error in results:
        if error is not None:
            raise UserError(error[0], field=error[1])
        assert value is not None
        done.append(value)
    return done


def score_in_shards(out: Path | str, opts: ScoreOptions, plan: Sequence[tuple[CellInfo, int, Path]],
                    dataset: Dataset, device: str) -> list[ScoreSummary]:  # fmt: skip
    """Fill the score caches of ``plan`` with ``opts.jobs`` worker processes (module docstring) and return
    their summaries. ``device`` is used where ``opts.devices`` is None."""
    check_jobs(opts.jobs, field="jobs")
    devices = parse_devices(opts.devices, field="devices") or [device]
    shards = assign_shards(plan, opts.jobs)
    if not shards:
        return []
    tasks = [replace(opts, jobs=1, devices=None, device=dev, progress=False,
                     shard=Shard(frozenset(cells), frozenset(doses), dataset, i))
             for i, ((cells, doses), dev) in enumerate(zip(shards, assign_devices(devices, len(shards))))]  # fmt: skip
    return run_in_workers(_run_shard, out, tasks, progress=opts.progress, desc=f"scoring in {len(tasks)} processes")
