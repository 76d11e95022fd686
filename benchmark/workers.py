"""``ldct-bench run --jobs N [--devices 0,1,...]``: a pool of worker processes that trains the cells of
one matrix.

The parent does once what :meth:`Runner.run` does before any cell trains (:meth:`Runner.prepare_run`:
the resolved matrix, the dataset's caches, the preflight), then starts ``N`` worker processes
(``spawn``) and hands out the unfinished cells through a shared queue. Worker ``i`` is pinned to
``devices[i % len(devices)]`` (several workers per GPU are fine), gets ``os.cpu_count() // N`` CPU
threads, and trains each cell it takes with :meth:`Runner.run_cell` after :func:`setup_process`
(through :meth:`Runner.setup`); so the per-cell lock still makes sure no cell is trained twice, by
this pool or by another ``run`` (a pool, a single process, a Slurm job) on the same ``--out``.

**Warm starts** (``init_from``): a cell is handed out only once every parent of it in this run has been
reported (:class:`_Dispatch`), in the matrix's parents-first order; until then it waits and the workers
take other cells. A parent that diverged or failed (or whose worker died) makes ``run_cell`` fail its
dependents, naming it; none trains from nothing.

The parent shows one progress bar over the whole matrix, forwards the workers' per-epoch log lines
and merges their results into one :class:`RunSummary`. A failed cell is marked ``FAILED`` by
``run_cell`` and the others go on; a worker that dies (a segfault, the OOM killer) marks its cell
``FAILED`` and the other workers go on. A user error in a cell (a cell folder started with other
settings) stops the pool, as it stops a single-process run.

**The pool stops with its parent.** ``KeyboardInterrupt`` (Ctrl-C) and ``SIGTERM`` / ``SIGHUP`` to the
parent (``kill``, a closed terminal, a job scheduler's stop), which only the parent handles (workers
ignore SIGINT and SIGHUP), stop the workers with ``SIGTERM``: each ends its cell like an interrupted
single-process run (lock released, ``RUNNING`` removed) and a rerun resumes from the last finished
epoch; the command exits ``128 + signal``. A parent that dies without stopping them (``kill -9``, a
crash) is noticed too: on Linux each worker asks the kernel for ``SIGTERM`` when its parent dies
(``PR_SET_PDEATHSIG``), and everywhere a worker checks its parent before each cell it takes. These
signal conventions are :mod:`benchmark.core.processes`, shared with the analysis shards.

On the CPU, float reductions depend on the number of threads. With ``reproducibility.threads`` set
(always with portable kernels) every worker runs that many threads, so ``--jobs N`` writes the same bytes
as ``--jobs 1`` (tested, portable and native). Native kernels without it divide the machine's cores among
the workers, and a pool's checkpoints equal only those of a single-process run with the same threads per
process (``OMP_NUM_THREADS=<cpu_count // N>``). On GPUs with ``deterministic: true`` they are equal in any
case.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import traceback
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmark.cells import dependencies, expand_cells
from benchmark.config import MatrixConfig
from benchmark.core.device import assign_devices, parse_device_list, resolve_device, worker_threads
from benchmark.core.errors import UserError
from benchmark.core.processes import (
    die_with_parent,
    parent_pid,
    stop_on_signals,
    stop_processes,
    worker_signals,
)
from benchmark.data import Dataset
from benchmark.layout import DIVERGED, DONE, FAILED, RUNNING
from benchmark.runner import Runner, RunSummary

POLL_S = 0.5  # how often the parent looks for dead workers while no message arrives


def parse_devices(spec: str | None, matrix_device: str) -> list[torch.device]:
    """The devices of ``--devices`` (:func:`benchmark.core.device.parse_device_list`: CUDA indices,
    ``cuda:N`` and/or ``cpu``). Without it: every visible GPU when the matrix's device is
    ``auto``/``cuda`` and torch sees one, else the matrix's device."""
    if spec is None:
        dev = resolve_device(matrix_device)
        if dev.type == "cuda" and dev.index is None:
            return [torch.device("cuda", i) for i in range(max(1, torch.cuda.device_count()))]
        return [dev]
    return parse_device_list(spec, field="--devices")


class _WorkerRunner(Runner):
    """A worker's runner: its log lines go to the parent, which prints them under the matrix bar."""

    def __init__(self, *args: Any, messages: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages = messages

    def log(self, msg: str) -> None:
        self.messages.put(("log", self.worker_index, msg))


def _worker(index: int, device: str, threads: int, matrix_dump: dict[str, Any], out: str, tasks: Any,
            messages: Any) -> None:  # fmt: skip
    """One worker process: take cell ids from ``tasks`` until ``None`` and train each (``run_cell``);
    stop (between cells, or through ``SIGTERM`` within one) when the parent stops or dies."""
    worker_signals()  # Ctrl-C and SIGHUP are the parent's; it stops us with SIGTERM
    parent = parent_pid()
    torch.set_num_threads(threads)
    cell_id: str | None = None
    try:
        if not die_with_parent(parent):  # died before PR_SET_PDEATHSIG took effect
            raise KeyboardInterrupt
        matrix = MatrixConfig.model_validate(matrix_dump)
        cells = {c.cell_id: c for c in expand_cells(matrix)}
        runner = _WorkerRunner(matrix, Path(out), quiet=True, device=torch.device(device), messages=messages)
        runner.worker_index = index
        runner.setup()
        while True:
            try:
                cell_id = tasks.get(timeout=1.0)
            except queue.Empty:
                cell_id = ""
            if os.getppid() != parent:  # the parent is gone: stop between cells
                raise KeyboardInterrupt
            if cell_id == "":
                continue
            if cell_id is None:
                return
            messages.put(("start", index, cell_id))
            status = runner.run_cell(cells[cell_id])
            messages.put(("done", index, cell_id, status))
            cell_id = None
    except KeyboardInterrupt:  # stopped: nobody may read what is left in the pipe; do not wait on it
        messages.cancel_join_thread()
        return
    except UserError as exc:
        messages.put(("user_error", index, cell_id, exc.message, exc.field))
    except BaseException:
        messages.put(("crash", index, cell_id, traceback.format_exc()))


class _Dispatch:
    """Puts the cells on the workers' queue in order, each once every parent of it among ``todo`` has
    been reported (:meth:`finished`), then one stop sentinel (``None``) per worker."""

    def __init__(self, tasks: Any, todo: list[str], parents: dict[str, list[str]], workers: int) -> None:
        self.tasks, self.order, self.workers = tasks, list(todo), workers
        pending = set(todo)
        self.blocked = {cid: {p for p in parents.get(cid, []) if p in pending} for cid in todo}
        self.sent: set[str] = set()
        self.stopped = False
        self._release()

    @property
    def waiting(self) -> list[str]:
        """Cells not handed out yet (their parents are still training)."""
        return [cid for cid in self.order if cid not in self.sent]

    def finished(self, cell_id: str) -> None:
        """``cell_id`` was reported (any status): hand out the cells that waited only for it."""
        for parents in self.blocked.values():
            parents.discard(cell_id)
        self._release()

    def _release(self) -> None:
        for cid in self.order:
            if cid not in self.sent and not self.blocked[cid]:
                self.tasks.put(cid)
                self.sent.add(cid)
        if len(self.sent) == len(self.order) and not self.stopped:
            for _ in range(self.workers):
                self.tasks.put(None)
            self.stopped = True


class WorkerPool:
    """Trains the cells of one matrix into one ``--out`` folder with ``jobs`` worker processes."""

    def __init__(self, matrix: MatrixConfig, out: Path, *, jobs: int, devices: list[torch.device] | None = None,
                 quiet: bool = False, dataset: Dataset | None = None, retry_diverged: bool = False) -> None:  # fmt: skip
        if jobs < 1:
            raise UserError(f"{jobs}: give at least 1 worker process", field="--jobs")
        self.matrix = matrix
        self.out = Path(out)
        self.jobs = jobs
        self.devices = devices or parse_devices(None, matrix.device)
        self.quiet = quiet
        # the parent's runner: prepares the run once (on the first device) and prints the log
        # (it also reopens the DIVERGED cells to retry, before they are handed out: Runner.reopen_diverged)
        self.runner = Runner(matrix, self.out, quiet=quiet, dataset=dataset, device=self.devices[0],
                             retry_diverged=retry_diverged)  # fmt: skip

    def run(self) -> RunSummary:
        runner, layout = self.runner, self.runner.layout
        cells = runner.prepare_run()
        order = {c.cell_id: i for i, c in enumerate(cells)}
        summary = RunSummary()
        todo = []
        for cell in cells:  # finished cells need no worker (run_cell checks again, under the lock)
            if layout.marker(cell.cell_id, DONE).is_file():
                summary.skipped_done.append(cell.cell_id)
            elif layout.marker(cell.cell_id, DIVERGED).is_file():
                summary.diverged.append(cell.cell_id)
            else:
                todo.append(cell.cell_id)
        if todo:
            bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="matrix", unit="cell",
                       disable=self.quiet, position=0, dynamic_ncols=True)  # fmt: skip
            try:
                with stop_on_signals():
                    self._train(todo, dependencies(cells), summary, bar)
            finally:
                bar.close()
        for name in ("trained", "skipped_done", "skipped_locked", "diverged", "failed", "waiting"):
            getattr(summary, name).sort(key=order.__getitem__)
        return summary

    def _train(self, todo: list[str], parents: dict[str, list[str]], summary: RunSummary, bar: Any) -> None:
        ctx = mp.get_context("spawn")
        tasks, messages = ctx.Queue(), ctx.Queue()
        n = min(self.jobs, len(todo))
        dispatch = _Dispatch(tasks, todo, parents, n)
        rep = self.matrix.reproducibility
        # pinned threads (portable kernels, or native with `threads`): every worker runs the cells' recorded
        # thread count, so --jobs N == --jobs 1; else the machine's cores are divided among the workers
        threads = rep.threads if rep.threads is not None else worker_threads(self.jobs)
        dump = self.matrix.model_dump(mode="json")
        procs = [
            ctx.Process(target=_worker, name=f"ldct-bench-w{i}", args=(i, str(dev), threads, dump, str(self.out), tasks, messages))
            for i, dev in enumerate(assign_devices(self.devices, n))
        ]
        self.runner.log(f"pool: {n} worker(s) on {', '.join(sorted({str(d) for d in self.devices}))}, "
                        f"{threads} CPU thread(s) each, {len(todo)} cell(s) to train")  # fmt: skip
        try:
            for p in procs:
                p.start()
            self._collect(procs, messages, set(todo), summary, bar, dispatch)
        except BaseException:
            stop_processes(procs)
            raise
        finally:
            tasks.cancel_join_thread()  # cells left in the queue after a stop must not block our exit
        for p in procs:
            p.join()

    def _collect(self, procs: list[Any], messages: Any, remaining: set[str], summary: RunSummary, bar: Any,
                 dispatch: _Dispatch | None = None) -> None:  # fmt: skip
        """Handle the workers' messages until every cell in ``remaining`` is reported; each report lets
        ``dispatch`` hand out the cells that waited for it."""
        active: dict[int, str] = {}  # worker -> the cell it trains
        gone: set[int] = set()

        def handle(msg: tuple[Any, ...]) -> None:
            kind, worker = msg[0], msg[1]
            if kind == "log":
                self.runner.log(f"[w{worker}] {msg[2]}")
            elif kind == "start":
                active[worker] = msg[2]
            elif kind == "done":
                active.pop(worker, None)
                remaining.discard(msg[2])
                getattr(summary, msg[3]).append(msg[2])
                bar.update(1)
                if dispatch is not None:
                    dispatch.finished(msg[2])
            elif kind == "user_error":
                raise UserError(msg[3], field=msg[4])
            elif kind == "crash":
                raise RuntimeError(f"worker {worker} failed ({msg[2] or 'before its first cell'}):\n{msg[3]}")

        while remaining:
            try:
                handle(messages.get(timeout=POLL_S))
                continue
            except queue.Empty:
                pass
            dead = [i for i, p in enumerate(procs) if i not in gone and not p.is_alive()]
            if not dead:
                continue
            while True:  # a dead worker's last messages are in the pipe: read them before judging
                try:
                    handle(messages.get(timeout=0.1))
                except queue.Empty:
                    break
            for i in dead:
                gone.add(i)
                cell_id = active.pop(i, None)
                if cell_id is None:
                    continue
                msg = f"worker {i} died (exit code {procs[i].exitcode}) while training the cell"
                self.runner.log(f"{cell_id}: failed: {msg}")
                if not self.runner.layout.marker(cell_id, DONE).is_file():
                    self.runner.layout.write_marker(cell_id, FAILED, {"message": msg})
                self._remove_running(cell_id, procs[i].pid)
                remaining.discard(cell_id)
                summary.failed.append(cell_id)
                bar.update(1)
                if dispatch is not None:
                    dispatch.finished(cell_id)
            if remaining and len(gone) == len(procs):
                raise RuntimeError(f"every worker has exited with {len(remaining)} cell(s) not trained "
                                   f"({', '.join(sorted(remaining))}); run the same command again to resume")  # fmt: skip

    def _remove_running(self, cell_id: str, pid: int | None) -> None:
        """Remove the ``RUNNING`` marker a dead worker left (only its own, not a new holder's)."""
        path = self.runner.layout.marker(cell_id, RUNNING)
        try:
            if json.loads(path.read_text()).get("pid") == pid:
                path.unlink(missing_ok=True)
        except (OSError, ValueError, AttributeError):
            pass
