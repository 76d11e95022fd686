"""``ldct-bench analyze`` and ``ldct-bench report``: thin command functions over :mod:`analysis.report`,
mounted by :mod:`benchmark.cli` (``app.command("analyze")(analyze)``). The options both commands take are
defined once, as the fields of :class:`SharedOptions` (each an ``Annotated`` ``typer.Option`` alias with
its default); :func:`with_shared_options` appends them to each command's own parameters, so typer shows
them in both, and hands the command one :class:`SharedOptions`. The functions also run from Python with
plain defaults. Bad options raise :class:`benchmark.core.errors.UserError` (exit code 2, no traceback)."""

from __future__ import annotations

import functools
import inspect
import signal
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

from benchmark.core.errors import UserError
from benchmark.core.processes import stop_on_signals

if TYPE_CHECKING:  # imported lazily below: `ldct-bench --help` must not load scipy, torch and seaborn
    from analysis.pipeline import StatsOptions  # lazy: CLI start-up
    from analysis.scoring import ScoreOptions  # lazy: CLI start-up

_OUT_HELP = "run folder written by `ldct-bench run` (has cells/ and matrix.resolved.yaml)"


def _metric_list(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise UserError(f"{spec!r}: give metric names separated by commas, e.g. psnr,ssim,niqe", field="--metrics")
    return names


Out = Annotated[Path, typer.Option("--out", "-o", help=_OUT_HELP)]
Metrics = Annotated[str | None, typer.Option(help="comma-separated metric names (default: the matrix's evaluation.metrics)")]
Every = Annotated[int | None, typer.Option(help="score every N-th epoch checkpoint, the last always (default: matrix)")]
MaxImages = Annotated[int | None, typer.Option(help="cap on evaluation slices per dose, evenly spaced (default: matrix)")]
BatchSize = Annotated[int | None, typer.Option(help="images per batch for denoising and metrics (default: matrix)")]
Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (default: the matrix's device)")]
Partial = Annotated[bool, typer.Option("--partial", help="also score cells that are unfinished or diverged")]
Unit = Annotated[str, typer.Option(help="unit of the paired tests: patient (per-patient means) or slice")]
Epoch = Annotated[str, typer.Option(help="epoch compared between losses: final or best_val")]
Family = Annotated[str, typer.Option(help="multiple-comparison family: metric, condition or all")]
Bootstrap = Annotated[int, typer.Option(help="bootstrap resamples for confidence intervals (0: none)")]
Seed = Annotated[int, typer.Option(help="seed of the bootstrap")]
ExampleImage = Annotated[str | None, typer.Option(help="slice id shown in the visual comparison (default: most structure)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]
Jobs = Annotated[int, typer.Option(help="scoring processes, sharded by cell (spawned; CPU threads divided among them)")]
Devices = Annotated[str | None, typer.Option(help="the processes' devices, round-robin: GPU indices, cuda:N or cpu, e.g. 0,1")]


@dataclass(frozen=True)
class SharedOptions:
    """The options of both ``analyze`` and ``report``, as given on the command line, in ``--help`` order:
    what to score (:meth:`score`) and the statistics (:meth:`stats`)."""

    metrics: Metrics = None
    every: Every = None
    max_images: MaxImages = None
    batch_size: BatchSize = None
    device: Device = None
    partial: Partial = False
    unit: Unit = "patient"
    epoch: Epoch = "final"
    family: Family = "metric"
    bootstrap: Bootstrap = 2000
    seed: Seed = 0
    example_image: ExampleImage = None
    quiet: Quiet = False
    jobs: Jobs = 1
    devices: Devices = None

    def score(self) -> ScoreOptions:
        """The scoring options, checked: positive counts, one of ``--device`` and ``--devices``."""
        from analysis.scoring import ScoreOptions  # lazy: CLI start-up
        from analysis.shards import check_jobs, parse_devices  # lazy: CLI start-up

        for name, value in (("--every", self.every), ("--max-images", self.max_images), ("--batch-size", self.batch_size)):
            if value is not None and value < 1:
                raise UserError(f"{value}: must be a positive integer", field=name)
        check_jobs(self.jobs, field="--jobs")
        device_list = parse_devices(self.devices, field="--devices")
        if device_list is not None and self.device is not None:
            raise UserError("give --device (one process) or --devices (the workers'), not both", field="--devices")
        return ScoreOptions(metrics=_metric_list(self.metrics), every=self.every, max_images=self.max_images,
                            batch_size=self.batch_size, device=self.device, include_partial=self.partial,
                            example_image=self.example_image, progress=not self.quiet, jobs=self.jobs,
                            devices=device_list)  # fmt: skip

    def stats(self) -> StatsOptions:
        """The statistical options, checked (:meth:`analysis.pipeline.StatsOptions.check`)."""
        from analysis.pipeline import StatsOptions  # lazy: CLI start-up

        return StatsOptions(unit=self.unit, epoch=self.epoch, family=self.family, n_resamples=self.bootstrap,
                            seed=self.seed).check()  # fmt: skip


def with_shared_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command(<its own options>, shared: SharedOptions)`` as the command typer sees: its own options,
    then each field of :class:`SharedOptions` as an option of the same name, type, help and default; the
    call gathers those into the ``shared`` argument."""
    hints = get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(command).parameters.values()
           if p.name != "shared"]  # fmt: skip
    shared_hints = get_type_hints(SharedOptions, include_extras=True)
    names = [f.name for f in fields(SharedOptions)]
    extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=shared_hints[f.name], default=f.default)
             for f in fields(SharedOptions)]  # fmt: skip

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        shared = SharedOptions(**{n: kwargs.pop(n) for n in names if n in kwargs})
        command(*args, **kwargs, shared=shared)

    run.__signature__ = inspect.Signature([*own, *extra], return_annotation=None)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
    return run


def interruptible(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with ``SIGTERM`` / ``SIGHUP`` handled as Ctrl-C (:func:`benchmark.core.processes.stop_on_signals`;
    scoring workers are stopped with it): one ``interrupted`` line and exit code ``128 + signal``. What was
    scored is kept in the per-checkpoint caches, so the same command goes on from there. Called from
    Python, the command raises ``typer.Exit`` then, not :class:`KeyboardInterrupt`."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            with stop_on_signals():
                command(*args, **kwargs)
        except KeyboardInterrupt as exc:
            typer.echo("interrupted: scored checkpoints are cached; run the same command again to go on", err=True)
            raise typer.Exit(128 + getattr(exc, "signum", signal.SIGINT)) from None

    return run


@interruptible
@with_shared_options
def analyze(out: Out, shared: SharedOptions) -> None:
    """Score every epoch checkpoint of every finished cell (incremental: cached values are reused) and
    write trajectories, correlations and significance tests to <out>/analysis/."""
    from analysis.pipeline import analyze_run  # lazy: CLI start-up

    stats = shared.stats()
    res = analyze_run(out, shared.score(), stats)
    s = res.summary
    assert s is not None
    typer.echo(f"scored {s.checkpoints_scored} of {s.checkpoints} checkpoints ({s.metric_evaluations} metric "
               f"evaluations) in {s.seconds:.1f} s; wrote {out / 'analysis'}")  # fmt: skip
    for name, reason in s.unavailable.items():
        typer.echo(f"unavailable: {name}: {reason}", err=True)
    if res.task is not None:
        t = res.task
        typer.echo(f"task-based image quality: computed {t.checkpoints_computed} of {t.checkpoints} checkpoints and "
                   f"{t.references_computed} of {t.references} input/NDCT conditions in {t.seconds:.1f} s")  # fmt: skip


@interruptible
@with_shared_options
def report(
    out: Out,
    baseline: Annotated[str | None, typer.Option(help="loss the tables mark significance against (default: the first loss)")] = None,
    skip_analyze: Annotated[bool, typer.Option("--skip-analyze", help="use the existing analysis files; do not score")] = False,
    distortion: Annotated[str, typer.Option(help="x axis of the perception–distortion plane")] = "psnr",
    perception: Annotated[str, typer.Option(help="y axis of the perception–distortion plane (a no-reference metric)")] = "niqe",
    *,
    shared: SharedOptions,
) -> None:
    """Run `analyze` (nothing cached is rescored), then write tables (CSV, Markdown, LaTeX), figures (PNG, PDF)
    and <out>/analysis/report.md."""
    from analysis.report import ReportOptions, write_report  # lazy: CLI start-up

    stats = shared.stats()
    path = write_report(out, shared.score(), stats, ReportOptions(baseline=baseline, distortion=distortion,
                                                                  perception=perception, skip_analyze=skip_analyze))  # fmt: skip
    typer.echo(f"wrote {path}")
