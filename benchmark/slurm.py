"""Submit a matrix to Slurm with submitit: one job per unfinished cell (a job array).

Each job runs the same per-cell code as ``ldct-bench run`` (:meth:`Runner.run_cell`): the per-cell
lock and the ``DONE`` marker make it safe to submit again, to mix Slurm jobs with local runners on a
shared ``--out``, and to requeue preempted jobs (they resume from the last checkpoint).
``cluster="local"`` runs the same jobs as local processes (used by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.cells import Cell, expand_cells
from benchmark.config import MatrixConfig
from benchmark.layout import DIVERGED, DONE, RunLayout
from benchmark.runner import Runner


@dataclass
class SlurmOptions:
    partition: str | None = None
    timeout_min: int = 24 * 60
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    array_parallelism: int = 16
    account: str | None = None
    cluster: str | None = None  # None: slurm if available; "local" / "debug" for testing


def _train_one(matrix_dump: dict[str, Any], out: str, cell_id: str) -> str:
    matrix = MatrixConfig.model_validate(matrix_dump)
    cell = next(c for c in expand_cells(matrix) if c.cell_id == cell_id)
    runner = Runner(matrix, Path(out), quiet=True)
    runner.dataset.prepare(progress=False)
    return f"{cell_id}: {runner.run_cell(cell)}"


def submit(matrix: MatrixConfig, out: Path, opts: SlurmOptions) -> list[Any]:
    """Write the resolved matrix, then submit one job per cell that is not finished. Returns the jobs."""
    import submitit  # the optional `slurm` extra: imported only when submitting

    layout = RunLayout(out, must_exist=False)
    layout.write_matrix(matrix)
    cells: list[Cell] = [
        c for c in expand_cells(matrix)
        if not layout.marker(c.cell_id, DONE).is_file() and not layout.marker(c.cell_id, DIVERGED).is_file()
    ]
    if not cells:
        return []
    executor = submitit.AutoExecutor(folder=str(layout.slurm_dir / "%j"), cluster=opts.cluster)
    params: dict[str, Any] = {
        "timeout_min": opts.timeout_min, "cpus_per_task": opts.cpus_per_task, "mem_gb": opts.mem_gb,
        "name": f"ldct-bench-{matrix.name}",
    }
    if executor.cluster == "slurm":
        params.update(gpus_per_node=opts.gpus_per_node, slurm_array_parallelism=opts.array_parallelism)
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.account:
            params["slurm_account"] = opts.account
    executor.update_parameters(**params)
    dump = matrix.model_dump(mode="json")
    with executor.batch():
        jobs = [executor.submit(_train_one, dump, str(out), c.cell_id) for c in cells]
    return jobs
