"""The thin matrix runner: for every cell, resume from its last good checkpoint or start, train the
remaining epochs with :mod:`benchmark.train`'s step functions, checkpoint every epoch, mark it done.

Guarantees (tested):

* **Never twice.** A finished cell (``DONE``) is skipped; a cell being trained by another runner on the
  same ``--out`` is skipped too (one ``fcntl`` lock per cell, released by the OS if its owner dies).
* **Exact resume.** Each checkpoint holds the model, optimizers, scheduler, the loss's trainable state,
  every RNG state and the history; after ``kill -9`` the rerun continues from the last good epoch and
  ends with checkpoints and ``history.csv`` identical to an uninterrupted run (``seconds`` is wall
  time and lives in ``timing.csv``, so checkpoints stay bit-identical).
* **Divergence** (a NaN/inf loss term) marks the cell ``DIVERGED`` with the epoch; the matrix goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from benchmark import __version__
from benchmark.cells import Cell, expand_cells
from benchmark.checkpoint import (
    FORMAT_VERSION,
    atomic_write_text,
    checkpoint_name,
    list_checkpoints,
    read_checkpoint,
    save_checkpoint,
)
from benchmark.config import MatrixConfig, dump_yaml, load_yaml, parse_matrix
from benchmark.data import Dataset, open_dataset
from benchmark.errors import UserError
from benchmark.layout import CELL_CONFIG, DIVERGED, DONE, FAILED, HISTORY, LOCK, RunLayout
from benchmark.train import (
    Diverged,
    TrainData,
    TrainState,
    build_state,
    current_lr,
    seed_everything,
    step_scheduler,
    train_epoch,
    validate,
)
from losses import build_loss
from models import build_model

TIMING = "timing.csv"


@dataclass
class RunSummary:
    trained: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    skipped_locked: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"trained {len(self.trained)} cell(s), skipped {len(self.skipped_done)} finished, "
            f"{len(self.skipped_locked)} locked by another runner, {len(self.diverged)} diverged, {len(self.failed)} failed"
        ]
        if self.skipped_done and not self.trained:
            out.append("nothing to train: every cell is finished (see `ldct-bench status`)")
        for c in self.trained:
            out.append(f"  trained: {c}")
        for c in self.skipped_locked:
            out.append(f"  locked (another runner is training it): {c}")
        for c in self.diverged:
            out.append(f"  diverged: {c}")
        for c in self.failed:
            out.append(f"  failed: {c}")
        return out


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but torch sees no CUDA device; use 'auto' or 'cpu'", field="device")
    return dev


def configure_determinism(device: torch.device, deterministic: bool) -> None:
    """On GPU, ``deterministic: true`` turns on PyTorch's deterministic algorithms (slower)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(deterministic, warn_only=False)


def cell_config(cell: Cell, matrix: MatrixConfig) -> dict[str, Any]:
    """What defines a cell's training: a rerun with a different value must not reuse its checkpoints."""
    return {
        **cell.to_dict(),
        "dataset": matrix.dataset.model_dump(mode="json"),
        "training": matrix.training.model_dump(mode="json"),
        "deterministic": matrix.deterministic,
    }


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]


def write_resolved_matrix(layout: RunLayout, matrix: MatrixConfig) -> None:
    """Save the resolved matrix beside the results; refuse an ``--out`` trained with other settings."""
    new = matrix.model_dump(mode="json")
    if layout.matrix_path.is_file():
        old_cfg = parse_matrix(load_yaml(layout.matrix_path.read_text()), str(layout.matrix_path))
        old = old_cfg.model_dump(mode="json")
        diff = [k for k in _diff_keys({k: old[k] for k in ("dataset", "training")}, {k: new[k] for k in ("dataset", "training")})]
        if diff:
            raise UserError(
                f"this folder was trained with different settings ({', '.join(diff)}); "
                "use a new --out, or restore the original values",
                field=str(layout.matrix_path),
            )
    layout.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.matrix_path, dump_yaml(new))


def _write_marker(path: Path, info: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(info, indent=1, sort_keys=True))


def write_history(cell_dir: Path, history: list[dict[str, Any]]) -> None:
    """``history.csv`` = the checkpointed history (deterministic) joined with wall-clock seconds."""
    if not history:
        (cell_dir / HISTORY).unlink(missing_ok=True)
        return
    df = pd.DataFrame(history)
    timing_path = cell_dir / TIMING
    if timing_path.is_file():
        timing = pd.read_csv(timing_path).drop_duplicates("epoch", keep="last")
        df = df.merge(timing[["epoch", "seconds"]], on="epoch", how="left")
    else:
        df["seconds"] = float("nan")
    atomic_write_text(cell_dir / HISTORY, df.to_csv(index=False))


def _append_timing(cell_dir: Path, epoch: int, seconds: float) -> None:
    path = cell_dir / TIMING
    rows = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["epoch", "seconds"])
    rows = pd.concat([rows[rows["epoch"] != epoch], pd.DataFrame([{"epoch": epoch, "seconds": round(seconds, 4)}])])
    atomic_write_text(path, rows.to_csv(index=False))


def resume_state(state: TrainState, ckpt_dir: Path, log: Any) -> int:
    """Load the newest readable checkpoint into ``state``; unreadable ones are renamed ``*.corrupt``.
    Returns the epoch resumed from (0 = fresh start)."""
    for epoch, path in sorted(list_checkpoints(ckpt_dir).items(), reverse=True):
        ckpt = read_checkpoint(path)
        if ckpt is None or ckpt.get("format_version") != FORMAT_VERSION:
            bad = path.with_name(path.name + ".corrupt")
            os.replace(path, bad)
            log(f"  checkpoint {path.name} is unreadable; kept as {bad.name}, resuming from the previous epoch")
            continue
        state.load_state_dict(ckpt["train_state"])
        return epoch
    return 0


@contextlib.contextmanager
def cell_lock(cell_dir: Path) -> Iterator[bool]:
    """Yield True if this process holds the cell's lock (non-blocking); the OS frees it if we die."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cell_dir / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


class Runner:
    """Trains the cells of one matrix into one ``--out`` folder."""

    def __init__(self, matrix: MatrixConfig, out: Path, *, quiet: bool = False, dataset: Dataset | None = None) -> None:
        self.matrix = matrix
        self.layout = RunLayout(out, must_exist=False)
        self.quiet = quiet
        self.device = resolve_device(matrix.device)
        self.dataset = dataset or open_dataset(matrix.dataset.kind, matrix.dataset.options)

    def log(self, msg: str) -> None:
        if self.quiet:
            print(msg, flush=True)
        else:
            tqdm.write(msg, file=sys.stderr)

    def run(self) -> RunSummary:
        configure_determinism(self.device, self.matrix.deterministic)
        write_resolved_matrix(self.layout, self.matrix)
        self.dataset.prepare(progress=not self.quiet)
        cells = expand_cells(self.matrix)
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

    def run_cell(self, cell: Cell) -> str:
        """Returns the RunSummary field the cell belongs to."""
        cdir = self.layout.cell_dir(cell.cell_id)
        if (cdir / DONE).is_file():
            return "skipped_done"
        if (cdir / DIVERGED).is_file():
            return "diverged"
        with cell_lock(cdir) as held:
            if not held:
                return "skipped_locked"
            if (cdir / DONE).is_file():  # finished by another runner while we waited
                return "skipped_done"
            self._check_cell_config(cell, cdir)
            (cdir / FAILED).unlink(missing_ok=True)
            try:
                self.train_cell(cell, cdir)
            except Diverged as exc:
                _write_marker(cdir / DIVERGED, {"epoch": exc.epoch, "term": exc.term, "message": f"epoch {exc.epoch}: {exc}"})
                self.log(f"{cell.cell_id}: diverged at epoch {exc.epoch} ({exc})")
                return "diverged"
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:  # a bug or an out-of-memory in one cell must not stop the matrix
                _write_marker(cdir / FAILED, {"message": f"{type(exc).__name__}: {exc}"})
                self.log(f"{cell.cell_id}: failed: {type(exc).__name__}: {exc}")
                return "failed"
        return "trained"

    def _check_cell_config(self, cell: Cell, cdir: Path) -> None:
        cfg = cell_config(cell, self.matrix)
        path = cdir / CELL_CONFIG
        if path.is_file():
            old = load_yaml(path.read_text(), str(path))
            diff = _diff_keys(old, cfg)
            if diff:
                raise UserError(
                    f"cell {cell.cell_id} was started with other settings ({', '.join(diff)}); "
                    "use a new --out or restore the original values",
                    field=str(path),
                )
        else:
            atomic_write_text(path, dump_yaml(cfg))

    def build(self, cell: Cell) -> TrainState:
        generator = seed_everything(cell.seed)
        model = build_model(cell.architecture.name, cell.architecture.kwargs).to(self.device)
        loss = build_loss([(t.name, t.weight, t.kwargs) for t in cell.loss.terms]).to(self.device)
        return build_state(model, loss, self.matrix.training, generator)

    def train_cell(self, cell: Cell, cdir: Path) -> None:
        writer = _tensorboard_writer(cdir) if self.matrix.tensorboard else None
        try:
            self._train_cell(cell, cdir, writer)
        finally:
            if writer is not None:
                writer.close()

    def _train_cell(self, cell: Cell, cdir: Path, writer: Any) -> None:
        tr = self.matrix.training
        state = self.build(cell)
        ckpt_dir = cdir / "checkpoints"
        start = resume_state(state, ckpt_dir, self.log)
        write_history(cdir, state.history)
        if start:
            self.log(f"{cell.cell_id}: resuming after epoch {start}")
        redraw = bool(getattr(self.dataset.options, "redraw_train_noise", False))
        val = self.dataset.load("val", cell.dose)
        train = None if redraw else TrainData(self.dataset.load("train", cell.dose), tr)
        for epoch in range(start + 1, tr.epochs + 1):
            if redraw:
                train = TrainData(self.dataset.load("train", cell.dose, epoch=epoch, seed=cell.seed), tr)
            assert train is not None
            t0 = time.perf_counter()
            bar = tqdm(total=train.steps, desc=f"{cell.cell_id} epoch {epoch}/{tr.epochs}", unit="step",
                       disable=self.quiet, position=1, leave=False, dynamic_ncols=True)

            def progress(step: int, total: int, loss: float, bar: Any = bar) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

            try:
                train_logs = train_epoch(state, train, self.device, tr.grad_clip, progress)
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
            save_checkpoint(ckpt_dir / checkpoint_name(epoch), {
                "format_version": FORMAT_VERSION,
                "epoch": epoch,
                "cell": cell_config(cell, self.matrix),
                "model": state.model.state_dict(),
                "train_state": state.state_dict(),
                "ldct_bench_version": __version__,
                "torch_version": torch.__version__,
            })
            _append_timing(cdir, epoch, time.perf_counter() - t0)
            write_history(cdir, state.history)
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
        _write_marker(cdir / DONE, {"epochs": state.epoch, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _early_stop(self, state: TrainState, val_loss: float) -> bool:
        es = self.matrix.training.early_stopping
        if val_loss < state.best_val - es.min_delta:
            state.best_val = val_loss
            state.bad_epochs = 0
        else:
            state.bad_epochs += 1
        return es.enabled and state.bad_epochs >= es.patience


def _tensorboard_writer(cdir: Path) -> Any:
    """A writer for ``<cell>/tensorboard`` (needs the ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UserError("needs the tensorboard package: pip install 'ldct-bench[tensorboard]'", field="tensorboard") from exc
    return SummaryWriter(log_dir=str(cdir / "tensorboard"))


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")
