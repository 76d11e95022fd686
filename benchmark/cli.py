"""The ``ldct-bench`` command line.

User errors (a bad matrix file, an unknown name, a missing dataset path ...) exit with code 2 and one
message naming the field and what is allowed, without a traceback.

Imports inside the command functions (``# lazy: CLI start-up``) are deliberate here and in the other
command modules (``cli_data``, ``analysis.cli``, ``analysis.cli_report``): ``ldct-bench --help`` must not
load torch, scipy or seaborn.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from analysis.cli import score, weights_app
from analysis.cli_report import analyze, report
from benchmark.cli_checkpoints import checkpoints_app
from benchmark.cli_data import data_app
from benchmark.core.errors import SkippedWarning, UserError

app = typer.Typer(
    name="ldct-bench",
    help="Low-dose CT denoising-loss benchmark: train a matrix, score every checkpoint, compare losses.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

MatrixOpt = Annotated[str, typer.Option("--matrix", "-m", help="matrix YAML path, or a shipped preset name (small.yaml, full.yaml, ...)")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="run folder (cells/, analysis/ ...)")]


@app.command()
def run(
    matrix: MatrixOpt,
    out: OutOpt,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars; one log line per epoch (CI)")] = False,
    device: Annotated[str | None, typer.Option(help="override the matrix's device (auto, cpu, cuda, cuda:N)")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local: train in this process; slurm: submit Slurm jobs (submitit)")] = "local",
    n_jobs: Annotated[int, typer.Option("--jobs", "-j", help="local: worker processes training cells in parallel (1: in this process)")] = 1,
    devices: Annotated[str | None, typer.Option("--devices", help="local: the workers' devices, round-robin: CUDA indices or cpu, e.g. 0,1 (default: every visible GPU, else the matrix's device)")] = None,
    slurm: Annotated[bool, typer.Option("--slurm", help="alias of --executor slurm")] = False,
    slurm_partition: Annotated[str | None, typer.Option(help="Slurm partition")] = None,
    slurm_account: Annotated[str | None, typer.Option(help="Slurm account")] = None,
    slurm_qos: Annotated[str | None, typer.Option(help="Slurm QOS")] = None,
    slurm_constraint: Annotated[str | None, typer.Option(help="Slurm node constraint (e.g. a100)")] = None,
    slurm_time: Annotated[int | None, typer.Option(help="minutes per job; default: measured time per cell x epochs x 1.5 + 15, or 240")] = None,
    slurm_mem: Annotated[int, typer.Option(help="memory per job, GB")] = 32,
    slurm_cpus: Annotated[int, typer.Option(help="CPUs per cell (per Slurm task)")] = 8,
    slurm_parallel: Annotated[int, typer.Option(help="max jobs running at once")] = 16,
    slurm_param: Annotated[list[str] | None, typer.Option(help="extra #SBATCH option key=value (repeatable)")] = None,
    slurm_setup: Annotated[list[str] | None, typer.Option(help="shell line run before each job, e.g. 'module load cuda' (repeatable)")] = None,
    cells_per_job: Annotated[int, typer.Option(help="cells per Slurm job, one task and one GPU each")] = 1,
    portable: Annotated[bool, typer.Option("--portable", help="portable CPU kernels: byte-identical results on every x86-64 host and with any --jobs (sets the matrix's reproducibility.kernels; ~4-6x slower on the CPU)")] = False,
    retry_diverged: Annotated[bool, typer.Option("--retry-diverged", help="train DIVERGED cells again (their earlier attempt is kept under the cell's attempts/); a cell whose config or data changed since it diverged is retried anyway")] = False,
) -> None:
    """Train every cell of MATRIX into OUT; finished cells are skipped, unfinished ones resume."""
    from benchmark.config import load_matrix, parse_matrix  # lazy: CLI start-up
    from benchmark.runner import Runner  # lazy: CLI start-up
    from benchmark.validate import check_matrix  # lazy: CLI start-up

    if slurm:
        if executor not in ("local", "slurm"):
            raise UserError(f"--slurm is an alias of --executor slurm; it contradicts --executor {executor}", field="--executor")
        executor = "slurm"
    if executor not in ("local", "slurm"):
        raise UserError(f"{executor!r}: use local (train in this process) or slurm (submit Slurm jobs)", field="--executor")
    if cells_per_job < 1:
        raise UserError(f"{cells_per_job}: give at least 1", field="--cells-per-job")
    if n_jobs < 1:
        raise UserError(f"{n_jobs}: give at least 1 worker process", field="--jobs")
    if executor == "slurm" and n_jobs != 1:
        raise UserError("applies to --executor local only; Slurm runs one task per cell (see --cells-per-job, --slurm-parallel)", field="--jobs")
    if executor == "slurm" and devices is not None:
        raise UserError("applies to --executor local only; a Slurm task uses its own GPU", field="--devices")
    if executor == "slurm" and retry_diverged:
        raise UserError("applies to --executor local only; Slurm submits no DIVERGED cell (retry them locally, or "
                        "move their DIVERGED marker aside and submit again)", field="--retry-diverged")  # fmt: skip
    cfg = load_matrix(matrix)
    if device is not None:  # a bad value is a UserError naming --device (exit 2), not a ValidationError
        cfg = parse_matrix({**cfg.model_dump(), "device": device}, "--device")
    if portable:
        rep = {**cfg.reproducibility.model_dump(), "kernels": "portable"}
        cfg = parse_matrix({**cfg.model_dump(), "reproducibility": rep}, "--portable")
    if executor == "slurm":
        from benchmark.slurm import SlurmOptions, parse_params, require_slurm, submit  # lazy: CLI start-up

        params = parse_params(slurm_param or [])  # bad input fails before anything else
        require_slurm()
        lacking: list[str] = []  # the submitting host may lack the GPUs or data the compute nodes have
        check_matrix(cfg, warnings=lacking)
        for line in lacking:
            typer.echo(f"warning: this host lacks it (the Slurm jobs fail if their nodes do too): {line}", err=True)
        jobs = submit(cfg, out, SlurmOptions(
            partition=slurm_partition, account=slurm_account, qos=slurm_qos, constraint=slurm_constraint,
            timeout_min=slurm_time, mem_gb=slurm_mem, cpus_per_task=slurm_cpus, array_parallelism=slurm_parallel,
            additional=params, setup=list(slurm_setup or []), cells_per_job=cells_per_job,
        ))
        typer.echo(f"submitted {len(jobs)} job(s); logs under {out / 'slurm'}; `ldct-bench status --out {out}` follows them")
        return
    from benchmark.workers import WorkerPool, parse_devices  # lazy: CLI start-up

    device_list = parse_devices(devices, cfg.device) if devices is not None or n_jobs > 1 else None
    dataset = check_matrix(cfg)
    try:
        if n_jobs > 1:
            summary = WorkerPool(cfg, out, jobs=n_jobs, devices=device_list, quiet=quiet, dataset=dataset,
                                 retry_diverged=retry_diverged).run()  # fmt: skip
        else:
            runner = Runner(cfg, out, quiet=quiet, dataset=dataset, device=device_list[0] if device_list else None,
                            retry_diverged=retry_diverged)  # fmt: skip
            summary = runner.run()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP to a pool (benchmark.core.processes.Stopped)
        typer.echo("interrupted: finished epochs are checkpointed; run the same command again to resume", err=True)
        raise typer.Exit(128 + getattr(exc, "signum", 2)) from None
    for line in summary.lines():
        typer.echo(line)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def validate(
    matrix: MatrixOpt,
    strict: Annotated[bool, typer.Option("--strict", help="what this machine lacks (weight files, GPUs, data folders) is an error too, not a warning")] = False,
) -> None:
    """Check MATRIX against the registries and the dataset without training; print its cells. Errors in
    the matrix exit 2; what this machine lacks is a warning with its fix (an error with --strict)."""
    from benchmark.cells import expand_cells  # lazy: CLI start-up
    from benchmark.config import load_matrix  # lazy: CLI start-up
    from benchmark.validate import check_matrix  # lazy: CLI start-up

    cfg = load_matrix(matrix)
    missing: list[str] = []
    check_matrix(cfg, warnings=None if strict else missing)
    for line in missing:
        typer.echo(f"warning: this machine lacks what the matrix needs (`run` refuses it until fixed): {line}", err=True)
    cells = expand_cells(cfg)
    typer.echo(f"valid: {len(cells)} cell(s) x {cfg.training.epochs} epoch(s)")
    for c in cells:
        typer.echo(f"  {c.cell_id}")


@app.command()
def status(out: OutOpt, csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False) -> None:
    """Which cells of OUT are done, partial, pending, failed or diverged."""
    from benchmark.status import status_table  # lazy: CLI start-up

    df = status_table(out)
    if csv:
        typer.echo(df.to_csv(index=False), nl=False)
        return
    from rich.console import Console  # lazy: CLI start-up
    from rich.table import Table  # lazy: CLI start-up

    table = Table(title=f"{out}")
    for col in df.columns:
        table.add_column(str(col))
    for row in df.itertuples(index=False):
        table.add_row(*["" if v is None or v != v else str(v) for v in row])
    Console(width=max(160, Console().width)).print(table)
    counts = df["status"].value_counts().to_dict()
    typer.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="losses, architectures, discriminators, schemes, metrics, datasets, optimizers, schedulers, presets or windows")],
) -> None:
    """List the registered names of one kind, with their metadata."""
    from benchmark.listing import listing  # lazy: CLI start-up

    typer.echo(listing(what))


# Commands that live beside their code (data, analysis); these modules import their heavy
# dependencies lazily, so `ldct-bench --help` stays fast.
app.add_typer(data_app, name="data", help="Build, inspect and calibrate datasets.")
app.add_typer(checkpoints_app, name="checkpoints", help="Convert a trusted run folder's old (format-1) checkpoints, once.")
app.command("score")(score)
app.add_typer(weights_app, name="weights", help="Pretrained weight files: status, fetch, import.")
app.command("analyze")(analyze)
app.command("report")(report)


def main() -> None:
    """Run the CLI: a :class:`UserError` is one ``error:`` line and its exit code (2); a
    :class:`SkippedWarning` (a run-folder file that is skipped) is one ``warning:`` line each."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", SkippedWarning)
        default = warnings.showwarning

        def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                 line: str | None = None) -> None:  # fmt: skip
            if issubclass(category, SkippedWarning):  # about the user's files, not the code: no source line
                typer.echo(f"warning: {message}", err=True)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            app()
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
