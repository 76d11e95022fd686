"""Worker processes for the analysis, sharded by cell: ``ldct-bench analyze --jobs N --devices 0,1,...``.

The scoring (:func:`analysis.scoring.score_in_shards`) and the task analysis
(:func:`analysis.detectability.task_run`) split the cells of their plan into at most ``N`` shards
(:func:`assign_shards`: whole cells, the load balanced by checkpoint count) and start one *spawned*
process per shard (:func:`run_in_workers`), pinned to a device (round-robin over ``devices``; ``cpu``
allowed) with ``torch.set_num_threads(max(1, cpu_count // n))`` (``n`` = the processes started). The
worker function is passed in (a module-level function, :func:`call_in_worker` of it): this module
imports neither of its callers. A scoring worker scores through the same per-checkpoint cache as a
serial run and returns its :class:`analysis.scoring_plan.ScoreSummary`; it writes nothing else.

Why no two processes ever write the same file: every cache file belongs to one (cell, checkpoint)
(``cache/<cell>/epoch_<NNN>.parquet``) and every example to one cell, and a cell is in exactly one
shard; the input-baseline cache of a dose (``cache/_input/<dose>.parquet``) is written only by the one
shard that owns that dose's baseline (:attr:`analysis.scoring_plan.Shard.baseline_doses`). The run-level
outputs (``trajectories.parquet``, ``input_baseline.parquet``, ``cells.csv``...) are written by the parent
alone, after every worker has finished: it then walks the plan as a ``--jobs 1`` run does, reading every
value from the caches the workers just filled, so the merged table is the serial one, row for row.
Incremental behaviour is the cache's: a worker computes only what is missing or stale.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from tqdm.auto import tqdm

from benchmark.core.device import parse_device_list, worker_threads
from benchmark.core.errors import UserError
from benchmark.core.processes import (
    die_with_parent,
    parent_pid,
    stop_on_signals,
    stop_processes,
    worker_signals,
)
from benchmark.layout import CellInfo

R = TypeVar("R")


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


def _shard_main(worker: Callable[[str, Any, int], WorkerResult[R]], out: str, task: Any, threads: int,
                result: Connection) -> None:  # fmt: skip
    """One shard's process: ``worker(out, task, threads)``, its result sent through ``result`` as
    ``("done", value)`` or ``("crash", traceback)``; nothing when stopped (``SIGTERM`` from the parent, or
    the parent's death: :mod:`benchmark.core.processes`)."""
    worker_signals()
    try:
        if not die_with_parent(parent_pid()):
            return
        result.send(("done", worker(out, task, threads)))
    except KeyboardInterrupt:
        return
    except BaseException:
        result.send(("crash", traceback.format_exc()))
    finally:
        result.close()


def _ended(proc: Any) -> str:
    code = proc.exitcode
    return f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"


def run_in_workers(worker: Callable[[str, Any, int], WorkerResult[R]], out: Path | str, tasks: Sequence[Any], *,
                   progress: bool, desc: str) -> list[R]:  # fmt: skip
    """``worker(out, task, threads)`` for each of ``tasks`` in its own *spawned* process, the machine's CPU
    threads divided among them; their results in task order. The first worker to report a
    :class:`UserError` (or a crash, as a ``RuntimeError`` with its traceback, or an end without a result)
    raises it here, and the other workers are stopped.

    The workers stop with this process: Ctrl-C, or ``SIGTERM`` / ``SIGHUP`` to it
    (:class:`benchmark.core.processes.Stopped`), stops them with ``SIGTERM`` before the
    :class:`KeyboardInterrupt` goes on; if it is killed, the kernel stops them (``PR_SET_PDEATHSIG``).
    What a stopped worker scored is kept (each cache file is written atomically); a rerun scores the rest."""
    threads = worker_threads(len(tasks))
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    pending: dict[Connection, int] = {}
    results: list[Any] = [None] * len(tasks)
    with stop_on_signals(), tqdm(total=len(tasks), desc=desc, unit="shard", disable=not progress) as bar:
        try:
            for i, task in enumerate(tasks):
                receive, send = ctx.Pipe(duplex=False)
                pending[receive] = i
                try:
                    procs.append(ctx.Process(target=_shard_main, name=f"ldct-bench-shard{i}",
                                             args=(worker, str(out), task, threads, send)))  # fmt: skip
                    procs[-1].start()  # listed before it starts: a stop that lands here still reaches it
                finally:
                    send.close()  # the worker holds the only sending end: its death reads as EOF here
            while pending:
                for conn in cast(list[Connection], wait(list(pending))):
                    i = pending.pop(conn)
                    try:
                        kind, payload = conn.recv()
                    except (EOFError, OSError):  # OSError: it died part-way through sending
                        procs[i].join()
                        raise RuntimeError(f"scoring worker {i} ended without a result ({_ended(procs[i])}); "
                                           "run the same command again to go on") from None  # fmt: skip
                    finally:
                        conn.close()
                    if kind == "crash":
                        raise RuntimeError(f"scoring worker {i} failed:\n{payload}")
                    value, error = payload
                    if error is not None:
                        raise UserError(error[0], field=error[1])
                    results[i] = value
                    bar.update(1)
        except BaseException:
            stop_processes(procs)
            raise
        finally:
            for conn in pending:
                conn.close()
    for proc in procs:  # each has sent its result and is ending on its own
        proc.join()
    return results
