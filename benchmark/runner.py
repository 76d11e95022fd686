"""The thin matrix runner: for every cell, resume from its last good checkpoint or start, train the
remaining epochs with :mod:`benchmark.train`'s step functions, checkpoint every epoch, mark it done.

Guarantees (tested):

* **Never twice.** A finished cell (``DONE``) is skipped; a cell being trained by another runner on the
  same ``--out`` is skipped too (one ``fcntl`` lock per cell, released by the OS if its owner dies).
* **Exact resume.** Each checkpoint holds the model, optimizers, scheduler, the loss's trainable state,
  every RNG state and the history; after ``kill -9`` the rerun continues from the last good epoch and
  ends with checkpoints and ``history.csv`` identical to an uninterrupted run (``seconds`` is wall
  time and lives in ``timing.csv``, so checkpoints stay bit-identical).
* **Divergence** (a NaN/inf loss term) marks the cell ``DIVERGED`` with the epoch and the data's
  fingerprint; the matrix goes on. A rerun leaves it unless its settings or data changed since (it then
  starts afresh) or ``run --retry-diverged`` asks (it resumes from its last good epoch); the diverged
  attempt is kept under ``<cell>/attempts/<n>/``. Non-finite values in the data are a data error, not
  a divergence: loading the split fails naming the split, dose and slice (exit 2).
* **Retention.** The matrix's ``checkpoints`` section may delete older epochs or thin them to
  weights-only files once the next epoch's full checkpoint is written (:func:`thin_checkpoints`,
  :class:`benchmark.config.CheckpointsConfig`); the newest epoch's checkpoint is always full, so the
  resume above is unchanged.
* **Warm starts** (``init_from``, :mod:`benchmark.cells`). Cells run parents first; a dependent cell
  starts (under its lock) only once its parent is ``DONE``: its generator is built as a cold start's
  and then overwritten with the parent's checkpointed weights (:func:`resolve_start`, read safely and
  only if the file's sha256 is the one resolved); a diverged or failed parent fails it naming the
  parent (it never trains from nothing), an unfinished one leaves it ``waiting``. The start (parent,
  epoch, sha256) is part of its config, and a cell whose parent's checkpoint changed since it started
  does not resume (:func:`check_start_unchanged`, a :class:`UserError` naming both cells and hashes).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmark import __version__
from benchmark.cells import Cell, cell_config, expand_cells
from benchmark.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    is_full,
    load_checkpoint,
    load_start_weights,
    read_checkpoint,
    read_start_weights,
    save_checkpoint,
    weights_only_state,
)
from benchmark.config import CheckpointsConfig, MatrixConfig, TrainingConfig
from benchmark.core.device import resolve_device
from benchmark.core.errors import UserError
from benchmark.core.kernels import apply_kernels
from benchmark.core.precision import ENVIRONMENT, environment, record_environment
from benchmark.core.weights import sha256_file
from benchmark.data import Dataset, open_dataset
from benchmark.layout import (
    CELL_CONFIG,
    DIVERGED,
    DONE,
    FAILED,
    LOCK,
    RUNNING,
    RunLayout,
    cell_lock,
    list_checkpoints,
)
from benchmark.sampling import disjoint_halves
from benchmark.schemes import pairing as scheme_pairing
from benchmark.step_settings import StepSettings
from benchmark.train import (
    Diverged,
    TrainData,
    TrainState,
    build_state,
    current_lr,
    seed_everything,
    step_scheduler,
    steps_per_epoch,
    train_epoch,
    validate,
)
from losses import build_loss
from models import build_model, spatial_dims


@dataclass
class RunSummary:
    trained: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    skipped_locked: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # their shared start is not finished (another runner has it)

    def lines(self) -> list[str]:
        out = [
            f"trained {len(self.trained)} cell(s), skipped {len(self.skipped_done)} finished, "
            f"{len(self.skipped_locked)} locked by another runner, {len(self.diverged)} diverged, {len(self.failed)} failed"
            + (f", {len(self.waiting)} waiting for their shared start" if self.waiting else "")
        ]
        if self.skipped_done and not (self.trained or self.failed or self.skipped_locked):
            out.append("nothing to train: every cell is finished (see `ldct-bench status`)")
        for c in self.trained:
            out.append(f"  trained: {c}")
        for c in self.skipped_locked:
            out.append(f"  locked (another runner is training it): {c}")
        for c in self.diverged:
            out.append(f"  diverged: {c}")
        for c in self.failed:
            out.append(f"  failed: {c}")
        for c in self.waiting:
            out.append(f"  waiting for its shared start (run again once it is finished): {c}")
        return out


def step_settings(training: TrainingConfig) -> StepSettings:
    """The :class:`~benchmark.step_settings.StepSettings` of the matrix's ``training`` section (its
    fields of the same names). A runner builds them once and hands them to
    :func:`benchmark.train.train_epoch` and the scheme (``to``, ``step``); nothing reads them back out
    of a scheme."""
    return StepSettings(precision=training.precision, channels_last=training.channels_last,
                        grad_clip=training.grad_clip, check_every=training.check_every)  # fmt: skip


def configure_determinism(device: torch.device, deterministic: bool) -> None:
    """On GPU, ``deterministic: true`` turns on PyTorch's deterministic algorithms (slower)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(deterministic, warn_only=False)


# (device, deterministic) that :func:`setup_process` last applied in this process, None before.
_PROCESS_SETUP: tuple[torch.device, bool] | None = None


def setup_process(matrix: MatrixConfig, device: torch.device) -> str:
    """The one per-process set-up of every process that trains cells (``Runner.run``, a direct
    ``Runner.run_cell``, a Slurm task): make ``device`` the current CUDA device (so ``cuda`` and the
    CUDA RNG state of checkpoints mean the cell's GPU) and apply ``matrix.deterministic`` (cuDNN
    flags, ``torch.use_deterministic_algorithms``, ``CUBLAS_WORKSPACE_CONFIG``) and the matrix's
    ``reproducibility`` (portable CPU kernels: refused unless the process started pinned). Idempotent.
    Returns a one-line description for the log."""
    global _PROCESS_SETUP
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    configure_determinism(device, matrix.deterministic)
    rep = matrix.reproducibility
    apply_kernels(rep.kernels, rep.threads)
    _PROCESS_SETUP = (device, matrix.deterministic)
    kernels = f"{rep.kernels} kernels" + (f", {rep.threads} thread(s)" if rep.pinned else "")
    return f"process set-up: device {device}, deterministic {str(matrix.deterministic).lower()}, {kernels}"


def process_setup() -> tuple[torch.device, bool] | None:
    """``(device, deterministic)`` applied by :func:`setup_process` in this process, or None."""
    return _PROCESS_SETUP


def resume_state(state: TrainState, ckpt_dir: Path, log: Any, *, cell_id: str | None = None,
                 config: dict[str, Any] | None = None) -> int:
    """Load the newest usable full checkpoint into ``state``, safely (``weights_only``,
    :func:`benchmark.checkpoint.load_checkpoint`) and, given ``cell_id`` and ``config``, only one of
    that cell trained with those settings. A file that cannot be used is kept aside under a name saying
    why (``*.corrupt``: unreadable; ``*.unsafe``: holds objects no checkpoint holds; ``*.foreign``:
    another cell's or other settings') and the previous epoch is tried; a format-1 checkpoint stops the
    run (a :class:`~benchmark.checkpoint.CheckpointError`, exit 2, naming the conversion command) rather
    than discarding the user's progress. Weights-only ones (``checkpoints.weights_only``) are skipped
    and left as they are (they cannot resume). Returns the epoch resumed from (0 = fresh start)."""
    for epoch, path in sorted(list_checkpoints(ckpt_dir).items(), reverse=True):
        try:
            ckpt = load_checkpoint(path, cell_id=cell_id, config=config)
        except CheckpointError as exc:
            if exc.reason in ("legacy", "newer"):
                raise
            if exc.reason == "missing":  # removed by someone else meanwhile: nothing to keep aside
                log(f"  checkpoint {path.name}: {exc.detail}; resuming from the previous epoch")
                continue
            bad = path.with_name(path.name + exc.suffix)
            os.replace(path, bad)
            log(f"  checkpoint {path.name}: {exc.detail}; kept as {bad.name}, resuming from the previous epoch")
            continue
        if not is_full(ckpt):
            log(f"  checkpoint {path.name} holds weights only; looking for an earlier full checkpoint")
            continue
        state.load_state_dict(ckpt["train_state"])
        return epoch
    return 0


def thin_checkpoints(ckpt_dir: Path, policy: CheckpointsConfig, newest: int, final: int, *, oldest: int = 1) -> None:
    """Apply the matrix's ``checkpoints`` policy to the checkpoints of epochs ``oldest`` to ``newest - 1``,
    once epoch ``newest``'s full checkpoint is written (call it only then): delete those not kept,
    rewrite those kept as weights-only when ``policy.weights_only`` (atomically, and only if still
    full). ``final`` is the cell's last planned epoch (always kept). Nothing happens with the defaults;
    an unreadable file that is kept is left alone (a resume never reaches it)."""
    if not policy.thins:
        return
    for epoch, path in list_checkpoints(ckpt_dir).items():
        if not oldest <= epoch < newest:
            continue
        if not policy.keeps(epoch, final):
            path.unlink(missing_ok=True)
        elif policy.weights_only:
            ckpt = read_checkpoint(path)
            if ckpt is not None and is_full(ckpt):
                save_checkpoint(path, weights_only_state(ckpt))


class StartNotReady(Exception):
    """A warm-started cell's parent is not ``DONE``: ``waiting`` (not trained yet, or by another runner
    now) or not (it diverged or failed: the dependent cell fails, naming it)."""

    def __init__(self, message: str, *, waiting: bool) -> None:
        super().__init__(message)
        self.waiting = waiting


@dataclass(frozen=True)
class Start:
    """A resolved warm start: ``record`` goes into the cell's config (``init_from``: ``{"cell", "epoch",
    "sha256"}`` of the parent's checkpoint file, or ``{"sha256"}`` of a file); ``path`` is the file."""

    record: dict[str, Any]
    path: Path

    @property
    def source(self) -> str:
        return f"{self.record['cell']} epoch {self.record['epoch']}" if "cell" in self.record else str(self.path)


def _final_epoch(layout: RunLayout, cell_id: str) -> int:
    """A finished cell's last epoch: its ``DONE`` marker's ``epochs`` (early stopping may end it before
    ``training.epochs``), else its newest checkpoint."""
    try:
        epochs = json.loads(layout.marker(cell_id, DONE).read_text()).get("epochs")
    except (OSError, ValueError, AttributeError):
        epochs = None
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0:
        return epochs
    return max(layout.checkpoints(cell_id), default=0)


def resolve_start(layout: RunLayout, cell: Cell) -> Start | None:
    """The warm start of ``cell`` (None: a cold start): for a parent cell, its checkpoint at the named
    or final epoch and that file's sha256 (:class:`StartNotReady` unless the parent is ``DONE`` and has
    that checkpoint); for a file, the path and the sha256 the matrix gives (checked when it is read)."""
    spec = cell.init_from
    if spec is None:
        return None
    if spec.is_file:
        assert spec.checkpoint is not None and spec.sha256 is not None
        return Start({"sha256": spec.sha256}, Path(spec.checkpoint).expanduser())
    pid = cell.parent_id
    if pid is None:  # this cell is the shared start itself
        return None
    status, detail = layout.cell_status(pid)
    if status in ("diverged", "failed"):
        raise StartNotReady(f"its shared start {pid} {status}{f' ({detail})' if detail else ''}; it is not trained "
                            "from scratch instead: fix or retrain the parent, then run again", waiting=False)  # fmt: skip
    if status != "done":
        raise StartNotReady(f"waits for its shared start {pid} ({status})", waiting=True)
    epoch = spec.epoch if isinstance(spec.epoch, int) else _final_epoch(layout, pid)
    path = layout.checkpoint_path(pid, epoch)
    if not path.is_file():
        raise StartNotReady(f"its shared start {pid} has no checkpoint of epoch {epoch} (it ended at epoch "
                            f"{_final_epoch(layout, pid)}); not trained from scratch instead", waiting=False)  # fmt: skip
    return Start({"cell": pid, "epoch": epoch, "sha256": sha256_file(path)}, path)


def check_start_unchanged(layout: RunLayout, cell_id: str, start: Start | None) -> None:
    """Refuse to go on with a cell that started from a parent checkpoint whose file has changed since
    (the parent was retrained, or the file replaced): a :class:`UserError` naming both cells and the two
    hashes. Any other change of the start is the config's usual difference (``init_from.<key>``)."""
    old = layout.cell_config(cell_id)
    was = old.get("init_from") if isinstance(old, dict) else None
    if start is None or not isinstance(was, dict) or "cell" not in start.record:
        return
    now = start.record
    if (was.get("cell"), was.get("epoch")) == (now["cell"], now["epoch"]) and was.get("sha256") != now["sha256"]:
        raise UserError(
            f"cell {cell_id} started from {now['cell']} epoch {now['epoch']} with sha256 {was.get('sha256')}; that "
            f"checkpoint now has sha256 {now['sha256']} (the parent was retrained or its file replaced), so {cell_id} "
            "does not resume from it: restore the parent's checkpoint, use a new --out, or move the cell's folder "
            "aside to train it again from the new start",
            field=str(layout.cell_dir(cell_id) / CELL_CONFIG),
        )


class Runner:
    """Trains the cells of one matrix into one ``--out`` folder."""

    def __init__(self, matrix: MatrixConfig, out: Path, *, quiet: bool = False, dataset: Dataset | None = None,
                 device: torch.device | None = None, retry_diverged: bool = False) -> None:  # fmt: skip
        self.matrix = matrix
        self.settings = step_settings(matrix.training)  # of every step of every cell this runner trains
        # train DIVERGED cells again (``run --retry-diverged``); those whose config or data changed always are
        self.retry_diverged = retry_diverged
        self.layout = RunLayout(out, must_exist=False)
        self.quiet = quiet
        self.device = device if device is not None else resolve_device(matrix.device)
        self.dataset = dataset or open_dataset(matrix.dataset.kind, matrix.dataset.options)
        # exceptions that end the process without marking the cell FAILED (a Slurm job adds
        # submitit's UncompletedJobError: a timeout or preemption, not an error of the cell)
        self.interruptions: tuple[type[BaseException], ...] = ()
        # called at the loop's safe points (every ``check_every`` steps and after each epoch's files are
        # written); it may raise one of ``interruptions`` to stop there (a Slurm job's deferred signal)
        self.safe_point: Callable[[], None] | None = None
        # the pool worker's index (``run --jobs N``), shown by ``ldct-bench status``; None in-process
        self.worker_index: int | None = None
        self._set_up = False
        self._starts: dict[str, Start | None] = {}  # cell id -> its resolved warm start (run_cell)

    def setup(self) -> None:
        """Apply :func:`setup_process` once for this runner (before anything trains)."""
        if not self._set_up:
            self.log(setup_process(self.matrix, self.device))
            self._set_up = True

    def log(self, msg: str) -> None:
        if self.quiet:
            print(msg, flush=True)
        else:
            tqdm.write(msg, file=sys.stderr)

    def prepare_run(self) -> list[Cell]:
        """What a run does once before any cell trains (here, or in the parent of a worker pool):
        the process set-up, the resolved matrix, the dataset's caches, the preflight. Returns the cells."""
        self.setup()
        self.layout.write_matrix(self.matrix)
        self.dataset.prepare(progress=not self.quiet)
        cells = expand_cells(self.matrix)
        self.preflight(cells)
        self.reopen_diverged(cells)
        return cells

    def diverged_retry_reason(self, cell: Cell) -> str | None:
        """Why the DIVERGED ``cell`` should train again, or None to leave it: its settings differ from its
        ``config.yaml`` (a retry starts afresh), the data differs from the data it diverged on (the
        dataset's fingerprint recorded in the marker; afresh too), or the user asked
        (``--retry-diverged``: it resumes from its last good checkpoint). A marker written before data
        fingerprints were recorded is retried only when asked."""
        layout, cid = self.layout, cell.cell_id
        changes = layout.config_changes(cid, self.config_of(cell, recorded=True))
        if changes:
            return f"its settings changed: {', '.join(changes)}"
        try:
            info = json.loads(layout.marker(cid, DIVERGED).read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        data = info.get("data") if isinstance(info, dict) else None
        if data is not None and data != self.dataset.fingerprint():
            return "the data changed"
        return "asked (--retry-diverged)" if self.retry_diverged else None

    def reopen_diverged(self, cells: list[Cell]) -> list[str]:
        """Make DIVERGED cells trainable again where :meth:`diverged_retry_reason` says so, under the
        cell's lock (a cell another runner holds is left to it): the diverged attempt is set aside in
        ``<cell>/attempts/<n>/`` (:meth:`RunLayout.retire_attempt`; nothing is deleted). Returns their ids."""
        reopened = []
        for cell in cells:
            cid = cell.cell_id
            if not self.layout.marker(cid, DIVERGED).is_file():
                continue
            reason = self.diverged_retry_reason(cell)
            if reason is None:
                continue
            with cell_lock(self.layout.marker(cid, LOCK)) as held:
                if not held or not self.layout.marker(cid, DIVERGED).is_file():
                    continue
                dest = self.layout.retire_attempt(cid, fresh=not reason.startswith("asked"))
            self.log(f"{cid}: diverged earlier; training it again ({reason}); the earlier attempt is in {dest}")
            reopened.append(cid)
        return reopened

    def run(self) -> RunSummary:
        cells = self.prepare_run()
        summary = RunSummary()
        bar = tqdm(total=len(cells), desc="matrix", unit="cell", disable=self.quiet, position=0, dynamic_ncols=True)
        try:
            for cell in cells:
                status = self.run_cell(cell)
                getattr(summary, status).append(cell.cell_id)
                bar.update(1)
        finally:
            bar.close()
        return summary

    def preflight(self, cells: list[Cell]) -> None:
        """Checks that need the data, before any cell trains: unpaired cells drawing from disjoint
        halves of the training patients need at least two of them (a :class:`UserError`, exit 2)."""
        tr = self.matrix.training
        if not tr.disjoint_patients:
            return
        doses = sorted({c.dose for c in cells if scheme_pairing(c.architecture.scheme, tr.pairing) == "unpaired"})
        for dose in doses:
            patients = self.dataset.load("train", dose).patients
            try:
                disjoint_halves(patients)
            except UserError as exc:
                raise UserError(f"{exc.message} (dose {dose})", field="training.disjoint_patients") from None

    def config_of(self, cell: Cell, *, recorded: bool = False) -> dict[str, Any]:
        """The cell's config (:func:`~benchmark.cells.cell_config`) with its resolved warm start; with
        ``recorded``, a start that cannot be resolved now (its parent is not finished) is taken as the
        cell's ``config.yaml`` records it."""
        if cell.cell_id not in self._starts:
            try:
                start = resolve_start(self.layout, cell)
            except StartNotReady:
                if not recorded:
                    raise
                old = self.layout.cell_config(cell.cell_id)
                was = old.get("init_from") if isinstance(old, dict) else None
                return cell_config(cell, self.matrix, was if isinstance(was, dict) else None)
            return cell_config(cell, self.matrix, None if start is None else start.record)
        start = self._starts[cell.cell_id]
        return cell_config(cell, self.matrix, None if start is None else start.record)

    def _open_start(self, cell: Cell) -> str | None:
        """Resolve the cell's warm start under its lock (:func:`resolve_start`) and check it against the
        one it started from; returns the RunSummary field when the cell cannot train now (``waiting``, or
        ``failed`` with its ``FAILED`` marker naming the parent), else None."""
        cid = cell.cell_id
        try:
            start = resolve_start(self.layout, cell)
        except StartNotReady as exc:
            self.log(f"{cid}: {exc}")
            if exc.waiting:
                return "waiting"
            self.layout.write_marker(cid, FAILED, {"message": str(exc)})
            return "failed"
        check_start_unchanged(self.layout, cid, start)
        self._starts[cid] = start
        if start is not None:
            self.log(f"{cid}: warm start from {start.source} (sha256 {start.record['sha256'][:12]}…)")
        return None

    def run_cell(self, cell: Cell) -> str:
        """Returns the RunSummary field the cell belongs to."""
        self.setup()
        layout, cid = self.layout, cell.cell_id
        if layout.marker(cid, DONE).is_file():
            return "skipped_done"
        if layout.marker(cid, DIVERGED).is_file():
            return "diverged"
        with cell_lock(layout.marker(cid, LOCK)) as held:
            if not held:
                return "skipped_locked"
            if layout.marker(cid, DONE).is_file():  # finished by another runner while we waited
                return "skipped_done"
            blocked = self._open_start(cell)
            if blocked is not None:
                return blocked
            layout.write_cell_config(cid, self.config_of(cell))
            layout.marker(cid, FAILED).unlink(missing_ok=True)
            try:
                with self._running(cid):
                    self.train_cell(cell)
            except Diverged as exc:
                layout.write_marker(cid, DIVERGED, {"epoch": exc.epoch, "term": exc.term, "message": f"epoch {exc.epoch}: {exc}",
                                                    "data": self.dataset.fingerprint()})  # a retry compares it
                self.log(f"{cell.cell_id}: diverged at epoch {exc.epoch} ({exc})")
                return "diverged"
            except (KeyboardInterrupt, UserError):
                raise
            except self.interruptions:  # timed out or preempted: the next run resumes from the last epoch
                self.log(f"{cell.cell_id}: interrupted; resumes from its last checkpoint")
                raise
            except Exception as exc:  # a bug or an out-of-memory in one cell must not stop the matrix
                layout.write_marker(cid, FAILED, {"message": f"{type(exc).__name__}: {exc}"})
                self.log(f"{cell.cell_id}: failed: {type(exc).__name__}: {exc}")
                return "failed"
        return "trained"

    @contextlib.contextmanager
    def _running(self, cell_id: str) -> Iterator[None]:
        """While the lock holder trains the cell: its ``RUNNING`` marker (worker, pid, host, device,
        start) for ``ldct-bench status``; removed however training ends (a kill leaves it stale, and
        status then checks the pid or the lock)."""
        marker = self.layout.marker(cell_id, RUNNING)
        self.layout.write_marker(cell_id, RUNNING, {
            "worker": self.worker_index, "pid": os.getpid(), "host": socket.gethostname(),
            "device": str(self.device), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        try:
            yield
        finally:
            marker.unlink(missing_ok=True)

    def build(self, cell: Cell, n_train: int) -> TrainState:
        """The cell's fresh state in its training scheme; ``n_train`` (training slices) sizes a per-step
        schedule. Networks are built in a fixed order from the cell's seed: the generator, the loss
        terms, then the scheme's own networks (CycleGAN's F, the discriminators)."""
        generator = seed_everything(cell.seed)
        arch = cell.architecture

        def build_network() -> torch.nn.Module:
            return build_model(arch.name, arch.kwargs).to(self.device)

        model = build_network()
        start = self._starts.get(cell.cell_id)
        if start is not None:  # after the cold start's draws: the other networks get the same random weights
            weights, recorded = read_start_weights(start.path, start.record["sha256"])
            load_start_weights(model, weights, architecture=recorded, name=arch.name, kwargs=arch.kwargs,
                               source=f"{cell.cell_id}: init_from {start.source}")  # fmt: skip
        loss = build_loss([(t.name, t.weight, t.kwargs) for t in cell.loss.terms]).to(self.device)
        state = build_state(model, loss, self.matrix.training, generator, steps_per_epoch(self.matrix.training, n_train),
                            scheme=arch.scheme, scheme_kwargs=arch.scheme_kwargs, build_network=build_network)  # fmt: skip
        state.scheme.to(self.device, self.settings)
        return state

    def train_cell(self, cell: Cell) -> None:
        writer = _tensorboard_writer(self.layout.tensorboard_dir(cell.cell_id)) if self.matrix.tensorboard else None
        try:
            self._train_cell(cell, writer)
        finally:
            if writer is not None:
                writer.close()

    def _train_cell(self, cell: Cell, writer: Any) -> None:
        tr, layout, cid = self.matrix.training, self.layout, cell.cell_id
        train_slices = self.dataset.load("train", cell.dose)  # loaded once: sizes the schedule and trains
        state = self.build(cell, len(train_slices))
        config = self.config_of(cell)
        start = resume_state(state, layout.checkpoint_dir(cid), self.log, cell_id=cid, config=config)
        # a crash between writing a checkpoint and thinning the older ones leaves them as they were
        thin_checkpoints(layout.checkpoint_dir(cid), self.matrix.checkpoints, start, tr.epochs)
        layout.write_history(cid, state.history)
        if start:
            self.log(f"{cell.cell_id}: resuming after epoch {start}")
        redraw = bool(getattr(self.dataset.options, "redraw_train_noise", False))
        val = self.dataset.load("val", cell.dose)
        dims = spatial_dims(state.model)
        pairing = scheme_pairing(cell.architecture.scheme, tr.pairing)
        record_environment(layout.cell_dir(cid) / ENVIRONMENT, start + 1,
                           environment(self.device, self.settings.precision, self.settings.channels_last))  # fmt: skip
        train = None if redraw else TrainData(train_slices, tr, dims, pairing, device=self.device)
        for epoch in range(start + 1, tr.epochs + 1):
            if redraw:
                train = TrainData(self.dataset.load("train", cell.dose, epoch=epoch, seed=cell.seed), tr, dims, pairing,
                                  device=self.device)  # fmt: skip
            assert train is not None
            t0 = time.perf_counter()
            bar = tqdm(total=train.steps, desc=f"{cell.cell_id} epoch {epoch}/{tr.epochs}", unit="step",
                       disable=self.quiet, position=1, leave=False, dynamic_ncols=True)

            def progress(step: int, total: int, loss: float, bar: Any = bar) -> None:  # every training.check_every steps
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                if self.safe_point is not None:
                    self.safe_point()

            try:
                train_logs = train_epoch(state, train, self.device, self.settings, progress)
            except Diverged as exc:
                exc.epoch = epoch
                raise
            finally:
                bar.close()
            val_logs = validate(state, val, self.device, tr.val_batch_size, tr.val_max_images)
            if not all(map(_finite, val_logs.values())):
                bad = next(k for k, v in val_logs.items() if not _finite(v))
                raise Diverged(bad, val_logs[bad], epoch)
            row = {"epoch": epoch, **train_logs, **val_logs, "lr": current_lr(state)}
            step_scheduler(state, val_logs["val_loss"])
            state.epoch = epoch
            state.history.append(row)
            stop = self._early_stop(state, val_logs["val_loss"])
            save_checkpoint(layout.checkpoint_path(cid, epoch), {
                "format_version": FORMAT_VERSION,
                "epoch": epoch,
                "cell": config,
                "model": state.model.state_dict(),
                "train_state": state.state_dict(),
                "ldct_bench_version": __version__,
                "torch_version": str(torch.__version__),  # a str: TorchVersion is no plain type
            })
            thin_checkpoints(layout.checkpoint_dir(cid), self.matrix.checkpoints, epoch, tr.epochs, oldest=epoch - 1)
            layout.append_timing(cid, epoch, time.perf_counter() - t0)
            layout.write_history(cid, state.history)
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, epoch)
                writer.flush()
            self.log(f"{cell.cell_id}: epoch {epoch}/{tr.epochs} train_loss {row['train_loss']:.5g} "
                     f"val_loss {row['val_loss']:.5g} ({time.perf_counter() - t0:.1f} s)")
            if stop:
                self.log(f"{cell.cell_id}: early stop after epoch {epoch} (no val_loss improvement for "
                         f"{tr.early_stopping.patience} epochs)")
                break
            if self.safe_point is not None:
                self.safe_point()
        layout.write_marker(cid, DONE, {"epochs": state.epoch, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _early_stop(self, state: TrainState, val_loss: float) -> bool:
        es = self.matrix.training.early_stopping
        if val_loss < state.best_val - es.min_delta:
            state.best_val = val_loss
            state.bad_epochs = 0
        else:
            state.bad_epochs += 1
        return es.enabled and state.bad_epochs >= es.patience


def _tensorboard_writer(log_dir: Path) -> Any:
    """A TensorBoard writer for ``log_dir`` (needs the optional ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # the optional `tensorboard` extra
    except ImportError as exc:
        raise UserError("needs the tensorboard package: pip install 'ldct-bench[tensorboard]'", field="tensorboard") from exc
    return SummaryWriter(log_dir=str(log_dir))


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")
