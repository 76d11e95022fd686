"""Submit a matrix to Slurm with submitit: one job per ``cells_per_job`` unfinished cells (a job array).

Each job runs the same per-cell code as ``ldct-bench run`` (:meth:`Runner.run_cell`, after
:func:`benchmark.runner.setup_process`): the per-cell lock and the ``DONE`` marker make it safe to
submit again, to mix Slurm jobs with local runners on a shared ``--out``. A job packs its cells as
one Slurm task per cell (``tasks_per_node``), each on its own GPU (``cuda:<local rank>``), one GPU
requested per cell.

**Timeouts and preemption.** The job is a checkpointable callable (:class:`CellJob`): at the time
limit or on preemption Slurm signals it, submitit calls :meth:`CellJob.checkpoint` and requeues the
same job, which resumes every cell from its last finished epoch (the last checkpoint). Only real
errors mark a cell ``FAILED``.

The signal is *deferred* (:class:`DeferredSignal`): its handler only records it, and the runner acts
on it at its next safe point (every ``check_every`` steps, after each epoch's files). submitit's own
handler ends the process by raising ``SystemExit`` from wherever the main thread happens to be; code
that swallows exceptions there (pandas 3 does, inside an index lookup) then leaves the job training
as if nothing had happened, and the requeue is lost.

**Time request.** Without ``timeout_min``, :func:`default_timeout_min` sizes it from the measured
seconds per epoch in the ``timing.csv`` files of the same ``--out`` (the slowest cell's mean) ×
epochs × ``SAFETY_FACTOR`` + ``STARTUP_MIN``; with nothing measured yet, ``FALLBACK_TIMEOUT_MIN``.

**Warm starts** (``init_from``): cells are submitted parents first, and a job never packs a cell with
its parent (:func:`job_plan` groups the cells by depth). On Slurm a dependent's job is submitted with
``--dependency=afterok:<the parents' job ids>``, so it starts once they have ended (a cell that fails
ends its job normally: the dependent then fails naming its parent, in ``run_cell``); submitit's local
executors have no dependencies, so :func:`submit` waits for each depth's jobs before the next.

``cluster="local"`` / ``"debug"`` run the same jobs with submitit's local executors (the tests).
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
import torch

from benchmark.cells import Cell, dependencies, expand_cells
from benchmark.config import MatrixConfig
from benchmark.core.device import resolve_device
from benchmark.core.errors import UserError
from benchmark.core.kernels import shell_exports
from benchmark.layout import DIVERGED, DONE, TIMING, RunLayout
from benchmark.runner import Runner

FALLBACK_TIMEOUT_MIN = 4 * 60  # no timing.csv yet: 4 h (a cell that needs longer is requeued and resumes)
SAFETY_FACTOR = 1.5
STARTUP_MIN = 15  # start-up, data loading, a first dataset build
MAX_TIMEOUT_MIN = 7 * 24 * 60


@dataclass
class SlurmOptions:
    partition: str | None = None
    timeout_min: int | None = None  # None: sized from timing.csv (default_timeout_min)
    cells_per_job: int = 1  # one task and one GPU per cell
    cpus_per_task: int = 8
    mem_gb: int = 32  # per job
    array_parallelism: int = 16
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    additional: dict[str, str] = field(default_factory=dict)  # extra #SBATCH key=value
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    cluster: str = "slurm"  # "slurm"; "local" / "debug": submitit's local executors (tests)


def parse_params(items: list[str], *, flag: str = "--slurm-param") -> dict[str, str]:
    """``["key=value", ...]`` → dict; anything else is a :class:`UserError` naming ``flag``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise UserError(f"{item!r}: give key=value, e.g. {flag} mail-type=END (an #SBATCH option without its --)",
                            field=flag)  # fmt: skip
        out[key.replace("-", "_")] = value.strip()
    return out


def default_timeout_min(layout: RunLayout, epochs: int) -> int:
    """Minutes per job: the slowest measured cell's mean seconds per epoch × ``epochs`` ×
    ``SAFETY_FACTOR`` + ``STARTUP_MIN`` (cells of a job run in parallel, one per GPU), or
    ``FALLBACK_TIMEOUT_MIN`` when no ``timing.csv`` exists yet."""
    per_epoch = []
    if layout.cells_dir.is_dir():
        for path in sorted(layout.cells_dir.glob(f"*/{TIMING}")):
            try:
                seconds = pd.read_csv(path)["seconds"].dropna()
            except (OSError, ValueError, KeyError, pd.errors.ParserError):
                continue
            if len(seconds):
                per_epoch.append(float(seconds.mean()))
    if not per_epoch:
        return FALLBACK_TIMEOUT_MIN
    minutes = math.ceil(max(per_epoch) * epochs * SAFETY_FACTOR / 60) + STARTUP_MIN
    return min(minutes, MAX_TIMEOUT_MIN)


class Interrupted(Exception):
    """A deferred time-limit or preemption signal, raised at a runner's safe point."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


class DeferredSignal:
    """Record ``signum`` instead of handling it at once; :meth:`poll` (the runner's safe point)
    raises :class:`Interrupted` once it came, and :meth:`deliver` then calls the handler that was
    installed before (submitit's checkpoint-and-requeue), from ordinary code.

    Why: a handler that raises (``sys.exit``) does so wherever the main thread is, and a library
    that catches broad exceptions there loses it silently. A recorded signal cannot be lost. Only the
    main thread can install it (Python's rule for signal handlers)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.pending: int | None = None
        self.previous: Callable[[int, FrameType | None], Any] | int | None = signal.getsignal(signum)
        signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = signum

    def poll(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending)

    def deliver(self) -> None:
        """Hand the recorded signal to the previous handler (it normally ends the process)."""
        signal.signal(self.signum, self.previous)  # type: ignore[arg-type]
        if callable(self.previous) and self.pending is not None:
            self.previous(self.pending, None)


class CellJob:
    """One Slurm job: task ``i`` trains ``cell_ids[i]`` on ``cuda:<local rank>`` (or the matrix's CPU).

    Checkpointable (submitit calls :meth:`checkpoint` on timeout or preemption and requeues the
    returned submission): the cell's own checkpoints are the state, so the job resubmits itself."""

    def __init__(self, matrix_dump: dict[str, Any], out: str, cell_ids: list[str]) -> None:
        self.matrix_dump = matrix_dump
        self.out = out
        self.cell_ids = list(cell_ids)

    def __call__(self) -> str:
        import submitit  # the optional `slurm` extra

        env = submitit.JobEnvironment()
        rank = env.local_rank
        if rank >= len(self.cell_ids):
            return f"task {rank}: no cell"
        cell_id = self.cell_ids[rank]
        matrix = MatrixConfig.model_validate(self.matrix_dump)
        cell = next(c for c in expand_cells(matrix) if c.cell_id == cell_id)
        runner = Runner(matrix, Path(self.out), quiet=True, device=task_device(matrix.device, rank))
        runner.interruptions = (submitit.core.utils.UncompletedJobError, Interrupted)
        deferred = DeferredSignal(getattr(signal, "SIG" + env.USR_SIG))  # the time-limit/preemption signal
        runner.safe_point = deferred.poll
        try:
            runner.setup()
            runner.dataset.prepare(progress=False)
            deferred.poll()
            return f"{cell_id}: {runner.run_cell(cell)}"
        except Interrupted:
            deferred.deliver()  # submitit checkpoints, requeues and exits
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue this job unchanged: every cell resumes from its last checkpoint."""
        import submitit  # the optional `slurm` extra

        return submitit.helpers.DelayedSubmission(CellJob(self.matrix_dump, self.out, self.cell_ids))


def task_device(spec: str, local_rank: int) -> torch.device:
    """The device of a job's task ``local_rank``: ``cuda:<local rank>`` when the matrix asks for
    CUDA (``auto`` with a GPU, ``cuda``, ``cuda:N``: a job sees only its own GPUs), else the CPU."""
    dev = resolve_device(spec)
    if dev.type == "cuda":
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return dev


def slurm_available() -> bool:
    """Whether this machine can submit Slurm jobs (submitit's test: ``srun`` on the PATH)."""
    import submitit  # the optional `slurm` extra

    return submitit.SlurmExecutor.affinity() > 0


def require_slurm() -> None:
    """A :class:`UserError` naming ``--executor`` unless submitit is installed and Slurm is here."""
    try:
        available = slurm_available()
    except ImportError:
        raise UserError("slurm needs the submitit package: pip install 'ldct-bench[slurm]'", field="--executor") from None
    if not available:
        raise UserError("slurm: no Slurm here (srun is not on the PATH); use --executor local to train in this process, "
                        "or submit from a Slurm login node", field="--executor")  # fmt: skip


def executor_parameters(matrix: MatrixConfig, layout: RunLayout, opts: SlurmOptions) -> dict[str, Any]:
    """The parameters given to ``executor.update_parameters`` (Slurm's, or the local executor's)."""
    if opts.cells_per_job < 1:
        raise UserError(f"{opts.cells_per_job}: give at least 1", field="--cells-per-job")
    timeout = opts.timeout_min if opts.timeout_min is not None else default_timeout_min(layout, matrix.training.epochs)
    params: dict[str, Any] = {
        "name": f"ldct-bench-{matrix.name}", "timeout_min": timeout, "tasks_per_node": opts.cells_per_job,
        "cpus_per_task": opts.cpus_per_task, "mem_gb": opts.mem_gb, "nodes": 1,
    }
    if opts.cluster != "slurm":
        return {k: params[k] for k in ("timeout_min", "tasks_per_node", "cpus_per_task", "mem_gb", "nodes")}
    params.update(gpus_per_node=opts.cells_per_job, slurm_array_parallelism=opts.array_parallelism)
    for key, value in (("slurm_partition", opts.partition), ("slurm_account", opts.account),
                       ("slurm_qos", opts.qos), ("slurm_constraint", opts.constraint)):  # fmt: skip
        if value:
            params[key] = value
    if opts.additional:
        params["slurm_additional_parameters"] = dict(opts.additional)
    rep = matrix.reproducibility
    # portable kernels are read when the job's Python starts: pin them in the job's shell first
    pins = shell_exports(rep.threads or 1) if rep.kernels == "portable" else []
    if opts.setup or pins:
        params["slurm_setup"] = [*pins, *opts.setup]
    return params


@dataclass(frozen=True)
class JobSpec:
    """One job of a submission: its cells, and the indices (in the plan) of the jobs holding their parents."""

    cell_ids: list[str]
    after: list[int]


def job_plan(cells: list[Cell], cells_per_job: int) -> list[list[JobSpec]]:
    """The jobs of a submission by depth (0: cells whose parents are not submitted; d: a parent at
    d - 1), each depth's cells in ``cells``'s order packed ``cells_per_job`` to a job: jobs of one depth
    run side by side, and each job lists the earlier jobs it must wait for."""
    parents = dependencies(cells)
    depth: dict[str, int] = {}
    for c in cells:  # parents first (expand_cells' order)
        depth[c.cell_id] = 1 + max((depth[p] for p in parents[c.cell_id] if p in depth), default=-1)
    plan: list[list[JobSpec]] = []
    job_of: dict[str, int] = {}
    count = 0
    for d in range(max(depth.values(), default=-1) + 1):
        ids = [c.cell_id for c in cells if depth[c.cell_id] == d]
        level = []
        for i in range(0, len(ids), cells_per_job):
            group = ids[i : i + cells_per_job]
            after = sorted({job_of[p] for cid in group for p in parents[cid]})
            level.append(JobSpec(group, after))
            for cid in group:
                job_of[cid] = count
            count += 1
        plan.append(level)
    return plan


def submit(matrix: MatrixConfig, out: Path, opts: SlurmOptions) -> list[Any]:
    """Write the resolved matrix, then submit one job per ``cells_per_job`` cells that are not
    finished. Returns the jobs. Slurm asked for where it is not available is a :class:`UserError`."""
    if opts.cluster == "slurm":
        require_slurm()
    import submitit  # the optional `slurm` extra: imported only when submitting

    layout = RunLayout(out, must_exist=False)
    params = executor_parameters(matrix, layout, opts)
    layout.write_matrix(matrix)
    cells: list[Cell] = [
        c for c in expand_cells(matrix)
        if not layout.marker(c.cell_id, DONE).is_file() and not layout.marker(c.cell_id, DIVERGED).is_file()
    ]
    if not cells:
        return []
    executor = submitit.AutoExecutor(folder=str(layout.slurm_dir / "%j"), cluster=opts.cluster)
    executor.update_parameters(**params)
    dump = matrix.model_dump(mode="json")
    jobs: list[Any] = []
    for depth, level in enumerate(job_plan(cells, opts.cells_per_job)):
        if depth and opts.cluster != "slurm":  # local executors have no dependencies: the parents' jobs end first
            for job in jobs:
                job.wait()
        if not any(spec.after for spec in level) or opts.cluster != "slurm":
            with executor.batch():
                jobs += [executor.submit(CellJob(dump, os.fspath(out), spec.cell_ids)) for spec in level]
            continue
        for spec in level:  # one submission each: every job waits for its own parents' jobs
            after = ":".join(str(jobs[i].job_id) for i in spec.after)
            executor.update_parameters(slurm_additional_parameters={**params.get("slurm_additional_parameters", {}),
                                                                    "dependency": f"afterok:{after}"})  # fmt: skip
            jobs.append(executor.submit(CellJob(dump, os.fspath(out), spec.cell_ids)))
    return jobs
