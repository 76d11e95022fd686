"""What a scoring pass scores: the options, the resolved settings, the cells and checkpoints, the shard.

:func:`plan_scoring` turns a run folder and :class:`ScoreOptions` into a :class:`ScorePlan`: the metrics
(unknown names fail here; those that cannot run here, and later those the images are too small for,
are recorded as unavailable), the window, device and batch size, the cells to analyse
(:func:`cells_to_analyse`), the checkpoints to score (:func:`epochs_to_score` of each cell's kept
epochs), the opened dataset, and the :class:`Shard` a worker process is restricted to.
:mod:`analysis.scoring_exec` executes a plan through the per-checkpoint caches; :mod:`analysis.scoring`
plans, hands the shards to worker processes (:mod:`analysis.shards`) and writes the run's outputs. The
task analysis (:mod:`analysis.detectability`) shares :func:`cells_to_analyse`, :func:`epochs_to_score`
and :func:`skip_checkpoint`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from analysis.metrics import info, unavailable_metrics
from analysis.shards import parse_devices
from benchmark.checkpoint import CheckpointError
from benchmark.config import MatrixConfig
from benchmark.core.device import resolve_device
from benchmark.core.errors import SkippedWarning, UserError
from benchmark.core.kernels import apply_kernels
from benchmark.data import Dataset, open_dataset
from benchmark.layout import CellInfo, RunLayout

Checkpoint = tuple[CellInfo, int, Path]  # (cell, epoch, checkpoint file)


@dataclass(frozen=True)
class Shard:
    """One worker's share of a scoring run: the ids of its ``cells``, the doses whose LDCT-input baseline
    it scores, and the opened ``dataset`` (passed, not re-opened: a worker needs no dataset registry)."""

    cells: frozenset[str]
    baseline_doses: frozenset[str]
    dataset: Dataset
    index: int = 0


@dataclass
class ScoreOptions:
    """What :func:`analysis.scoring.score_run` scores; ``None`` fields take the matrix's ``evaluation``
    settings."""

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
    shard: Shard | None = None  # internal: score only this worker's share (analysis.scoring_exec.score_shard)


@dataclass
class ScoreSummary:
    """What one scoring pass did. ``metric_evaluations`` counts (checkpoint, metric) pairs computed,
    ``baseline_evaluations`` (dose, metric) pairs of the LDCT-input baseline (both 0 on a rerun with
    nothing new); ``skipped`` maps cell id → reason; ``bad_checkpoints`` maps the path of each checkpoint
    skipped (another cell's, unreadable, unsafe, gone mid-read) → reason."""

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


@dataclass
class ScorePlan:
    """A resolved scoring pass (:func:`plan_scoring`). ``checkpoints`` lists every checkpoint to score,
    cell by cell in plan order, before any shard restriction (:meth:`to_score` applies it); ``summary``
    starts with the metrics to score and those unavailable, and the execution fills in the rest."""

    layout: RunLayout
    matrix: MatrixConfig
    opts: ScoreOptions
    window: str
    device: str
    batch_size: int
    cells: list[CellInfo]
    checkpoints: list[Checkpoint]
    dataset: Dataset
    summary: ScoreSummary

    def to_score(self) -> list[Checkpoint]:
        """The checkpoints this process scores: all, or those of its shard's cells."""
        shard = self.opts.shard
        return self.checkpoints if shard is None else [x for x in self.checkpoints if x[0].cell_id in shard.cells]

    def doses(self) -> list[str]:
        """The matrix's doses with an analysed cell, in matrix order."""
        return [d for d in self.matrix.doses if any(c.dose == d for c in self.cells)]


def epochs_to_score(available: Iterable[int], every: int) -> list[int]:
    """Every ``every``-th epoch of ``available`` (epochs divisible by ``every``) and always the last.
    ``available`` may have gaps (checkpoints thinned by the matrix's ``checkpoints`` section): only
    epochs in it are returned."""
    epochs = sorted(available)
    if not epochs:
        return []
    keep = {e for e in epochs if e % every == 0} | {epochs[-1]}
    return sorted(keep)


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


def plan_scoring(out: Path | str, opts: ScoreOptions) -> ScorePlan:
    """Resolve ``opts`` against the run's matrix (module docstring). A matrix trained with the portable
    kernels, or a pinned thread count, is scored with them (:func:`benchmark.core.kernels.apply_kernels`)."""
    layout = RunLayout(out)
    matrix = layout.matrix()
    rep = matrix.reproducibility  # score with the kernels and threads the run trained with
    apply_kernels(rep.kernels, rep.threads, field=f"{out}: matrix.resolved.yaml reproducibility.kernels")
    ev_cfg = matrix.evaluation
    metrics = list(dict.fromkeys(opts.metrics or ev_cfg.metrics))
    for m in metrics:
        info(m, field="evaluation.metrics")  # unknown names fail here, with the valid names
    every = opts.every or ev_cfg.every
    if every < 1:
        raise UserError(f"{every}: score every N-th epoch with N >= 1", field="every")
    window = ev_cfg.window if isinstance(ev_cfg.window, str) else f"{ev_cfg.window[0]},{ev_cfg.window[1]}"
    if opts.devices:  # workers use them all (jobs > 1); this process, the first
        device = (parse_devices(opts.devices, field="devices") or [""])[0]
    else:
        device = str(resolve_device(opts.device or matrix.device))
    summary = ScoreSummary(unavailable=unavailable_metrics(metrics))
    summary.metrics = [m for m in metrics if m not in summary.unavailable]
    cells = cells_to_analyse(layout, opts.include_partial, summary.skipped)
    checkpoints = [(c, e, p) for c in cells for e, p in layout.checkpoints(c.cell_id).items()
                   if e in epochs_to_score(layout.checkpoints(c.cell_id), every)]  # fmt: skip
    summary.checkpoints = len(checkpoints)
    shard = opts.shard
    dataset = shard.dataset if shard is not None else open_dataset(matrix.dataset.kind, matrix.dataset.options)
    return ScorePlan(layout=layout, matrix=matrix, opts=opts, window=window, device=device,
                     batch_size=opts.batch_size or ev_cfg.batch_size, cells=cells, checkpoints=checkpoints,
                     dataset=dataset, summary=summary)  # fmt: skip
