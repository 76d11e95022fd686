"""The run folder: every file name the runner writes and the analysis reads, and the writers of the
runner's files. These names are a contract; nothing else in the suite spells them::

    <out>/matrix.resolved.yaml                       the resolved matrix (every default filled in)
    <out>/cells/<cell_id>/config.yaml                the cell: loss, architecture, dose, seed, dataset, training
    <out>/cells/<cell_id>/checkpoints/epoch_<NNN>.pt one per epoch (or the epochs the matrix's `checkpoints` keeps)
    <out>/cells/<cell_id>/checkpoints/epoch_<NNN>.pt.corrupt|.unsafe|.foreign   set aside by `run`: unreadable, holding objects, another cell's
    <out>/cells/<cell_id>/history.csv                one row per epoch (the checkpointed history + seconds)
    <out>/cells/<cell_id>/timing.csv                 wall-clock seconds per epoch (kept out of checkpoints)
    <out>/cells/<cell_id>/DONE                       finished (json: epochs, time)
    <out>/cells/<cell_id>/DIVERGED                   the loss became NaN/inf (json: epoch, term, data fingerprint)
    <out>/cells/<cell_id>/FAILED                     an error stopped the cell (json: message)
    <out>/cells/<cell_id>/.lock                      held while a runner trains the cell
    <out>/cells/<cell_id>/RUNNING                    who trains it now (json: worker, pid, host, device, started)
    <out>/cells/<cell_id>/tensorboard/               optional TensorBoard event files
    <out>/cells/<cell_id>/attempts/<n>/              an earlier, diverged attempt set aside by a retry (its
                                                     DIVERGED marker; for a fresh start also its config,
                                                     checkpoints, history, timing, environment)
    <out>/slurm/<job id>/                            submitit's logs of Slurm jobs

    <out>/analysis/trajectories.parquet              tidy per-image metric values + per-epoch losses
    <out>/analysis/input_baseline.parquet            the same metrics of the LDCT input itself, per dose
    <out>/analysis/unavailable_metrics.csv           metrics that could not run here, and why
    <out>/analysis/cells.csv                         every cell's status and whether it was analysed
    <out>/analysis/correlations.csv                  loss–metric correlations
    <out>/analysis/significance.csv                  paired tests, corrections, effect sizes
    <out>/analysis/friedman_ranks.csv                mean ranks, critical difference, Nemenyi p-values
    <out>/analysis/claims.csv                        the matrix's claims: tests and verdicts (if it has claims)
    <out>/analysis/settings.json                     the settings of the analysis (read by the report)
    <out>/analysis/cache/<cell_id>/epoch_<NNN>.parquet   per-checkpoint metric cache
    <out>/analysis/cache/_input/<dose>.parquet       the LDCT-input baseline's cache
    <out>/analysis/detectability.parquet             task-based image quality: d', AUC, TTF f50/f10 (evaluation.task)
    <out>/analysis/ttf.parquet                       the task transfer functions (f, ttf) per rod and source
    <out>/analysis/detectability_settings.json       the task analysis's ROIs, channels and observers
    <out>/analysis/cache/_task/<cell_id>/epoch_<NNN>.parquet (+ .ttf.parquet)   per-checkpoint task cache
    <out>/analysis/cache/_task/_reference/<condition>.parquet (+ .ttf.parquet)  the LDCT input's / NDCT's
    <out>/analysis/examples/<cell_id>.npz            the slice of the visual comparison
    <out>/analysis/tables/, figures/, report.md      the report

Every file is written atomically (:mod:`benchmark.core.io`). The writers below are the runner's; tests
that fake a run use them too, so a fake run has the runner's files.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from filelock import FileLock, Timeout
from pydantic import BaseModel, ValidationError

from benchmark.config import (
    ArchitectureConfig,
    DatasetConfig,
    LossConfig,
    MatrixConfig,
    TrainingConfig,
    dump_yaml,
    load_yaml,
    parse_matrix,
)
from benchmark.core.errors import SkippedWarning, UserError
from benchmark.core.io import atomic_write_text
from benchmark.core.precision import ENVIRONMENT

Status = Literal["done", "partial", "failed", "diverged", "pending"]

# --- the training side's files
RESOLVED_MATRIX = "matrix.resolved.yaml"
CELLS = "cells"
CELL_CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
HISTORY = "history.csv"
TIMING = "timing.csv"
DONE = "DONE"
DIVERGED = "DIVERGED"
FAILED = "FAILED"
LOCK = ".lock"
RUNNING = "RUNNING"  # written by the lock holder while it trains the cell, removed after
TENSORBOARD = "tensorboard"
ATTEMPTS = "attempts"  # <cell>/attempts/<n>/: earlier diverged attempts, set aside by a retry
SLURM = "slurm"  # <out>/slurm/<job id>/: submitit's job logs
CORRUPT_SUFFIX = ".corrupt"  # an unreadable checkpoint is kept under its name + this suffix
UNSAFE_SUFFIX = ".unsafe"  # one holding objects no checkpoint holds (never unpickled), likewise
FOREIGN_SUFFIX = ".foreign"  # one of another cell, or of this cell with other settings, likewise
_CHECKPOINT_RE = re.compile(r"^epoch_(\d{3,})\.pt$")

# --- the analysis side's files (under ANALYSIS)
ANALYSIS = "analysis"
TRAJECTORIES = "trajectories.parquet"
INPUT_BASELINE = "input_baseline.parquet"
NDCT_BASELINE = "ndct_noise_baseline.parquet"
UNAVAILABLE = "unavailable_metrics.csv"
CELLS_CSV = "cells.csv"
CORRELATIONS = "correlations.csv"
SIGNIFICANCE = "significance.csv"
RANKS = "friedman_ranks.csv"
CLAIMS_CSV = "claims.csv"
SETTINGS = "settings.json"
REPORT = "report.md"
CACHE = "cache"
INPUT_CACHE = "_input"  # under cache/; cell ids are loss__arch__dose__sN, so no cell can clash with it
NDCT_CACHE = "_ndct_noise"
TASK_CACHE = "_task"  # under cache/: the task-based image quality's caches (analysis.detectability)
TASK_REFERENCE = "_reference"  # under cache/_task/: the LDCT input's and the NDCT's, per condition
DETECTABILITY = "detectability.parquet"
TTF_CURVES = "ttf.parquet"
DETECTABILITY_SETTINGS = "detectability_settings.json"
EXAMPLES = "examples"
TABLES = "tables"
FIGURES = "figures"


def checkpoint_name(epoch: int) -> str:
    """``epoch_<NNN>.pt``."""
    return f"epoch_{epoch:03d}.pt"


def checkpoint_epoch(path: Path | str) -> int | None:
    """The epoch in a checkpoint file name, or None for any other name."""
    m = _CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(folder: Path) -> dict[int, Path]:
    """``epoch -> path`` for the files named ``epoch_<NNN>.pt`` in ``folder``, sorted by epoch (not
    validated; see :func:`benchmark.checkpoint.read_checkpoint`)."""
    out: dict[int, Path] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            epoch = checkpoint_epoch(p)
            if epoch is not None:
                out[epoch] = p
    return dict(sorted(out.items()))


def write_or_explain(path: Path, text: str) -> None:
    """:func:`atomic_write_text`, with an ``OSError`` (a read-only folder, a full disk) turned into a
    :class:`UserError` naming the path: the run folder must be writable for what comes next."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise UserError(f"cannot write here ({exc.strerror or exc}); the run folder must be writable for this "
                        "command (a finished run needs no write to be rerun or read)", field=str(path)) from None


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]


_CELL_SECTIONS: dict[str, type[BaseModel]] = {
    "loss": LossConfig, "architecture": ArchitectureConfig, "dataset": DatasetConfig, "training": TrainingConfig,
}


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A cell config with each section re-read through the current schema, so that a setting added
    later with its default (e.g. ``training.scheduler.warmup``) does not make a cell started by an
    earlier version look different; a section the schema no longer accepts is compared as it is."""
    out = dict(config)
    for key, model in _CELL_SECTIONS.items():
        if isinstance(out.get(key), dict):
            try:
                out[key] = model.model_validate(out[key]).model_dump(mode="json")
            except ValidationError:
                pass
    return out


def config_differences(old: Any, new: Any) -> list[str]:
    """The dotted keys where two cell configs differ, each section read through the current schema
    first (:func:`_with_defaults`): the one comparison of a cell's settings, used for its
    ``config.yaml`` and for the identity of its checkpoints (:mod:`benchmark.checkpoint`)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else ["(the whole config)"]
    return _diff_keys(_with_defaults(old), _with_defaults(new))


@dataclass(frozen=True)
class CellInfo:
    cell_id: str
    loss: str
    architecture: str
    dose: str
    seed: int
    dir: Path
    status: Status
    epochs_done: int
    detail: str = ""


@contextlib.contextmanager
def cell_lock(path: Path) -> Iterator[bool]:
    """Yield True if this process holds the lock file ``path`` (non-blocking); the OS frees it if we die."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


class RunLayout:
    """Paths, readers and writers of one run folder ``out``."""

    def __init__(self, out: Path | str, *, must_exist: bool = True) -> None:
        self.out = Path(out)
        if must_exist and not (self.out / CELLS).is_dir():
            raise UserError("no run here (no cells/ folder); run `ldct-bench run --matrix ... --out` first", field=str(out))

    # --- paths: training side
    @property
    def cells_dir(self) -> Path:
        return self.out / CELLS

    @property
    def matrix_path(self) -> Path:
        return self.out / RESOLVED_MATRIX

    def cell_dir(self, cell_id: str) -> Path:
        return self.cells_dir / cell_id

    def checkpoint_dir(self, cell_id: str) -> Path:
        return self.cell_dir(cell_id) / CHECKPOINTS

    def checkpoint_path(self, cell_id: str, epoch: int) -> Path:
        return self.checkpoint_dir(cell_id) / checkpoint_name(epoch)

    def marker(self, cell_id: str, name: str) -> Path:
        """The path of the ``DONE``, ``DIVERGED`` or ``FAILED`` marker (or the ``.lock``)."""
        return self.cell_dir(cell_id) / name

    def tensorboard_dir(self, cell_id: str) -> Path:
        return self.cell_dir(cell_id) / TENSORBOARD

    @property
    def slurm_dir(self) -> Path:
        return self.out / SLURM

    # --- paths: analysis side
    @property
    def analysis_dir(self) -> Path:
        return self.out / ANALYSIS

    def analysis_file(self, name: str) -> Path:
        """``<out>/analysis/<name>`` for one of the analysis file names of this module."""
        return self.analysis_dir / name

    def score_cache(self, cell_id: str, epoch: int) -> Path:
        return self.analysis_dir / CACHE / cell_id / f"epoch_{epoch:03d}.parquet"

    def input_cache(self, dose: str) -> Path:
        return self.analysis_dir / CACHE / INPUT_CACHE / f"{dose}.parquet"

    def ndct_cache(self, dose: str) -> Path:
        return self.analysis_dir / CACHE / NDCT_CACHE / f"{dose}.parquet"

    def task_cache(self, cell_id: str, epoch: int) -> Path:
        """The task-based image quality cache of one checkpoint (``.ttf.parquet`` beside it: its TTFs)."""
        return self.analysis_dir / CACHE / TASK_CACHE / cell_id / f"epoch_{epoch:03d}.parquet"

    def task_reference_cache(self, condition: str) -> Path:
        """The task cache of the LDCT input (or the NDCT reference) at one condition."""
        return self.analysis_dir / CACHE / TASK_CACHE / TASK_REFERENCE / f"{condition}.parquet"

    def example(self, cell_id: str) -> Path:
        return self.analysis_dir / EXAMPLES / f"{cell_id}.npz"

    @property
    def examples_dir(self) -> Path:
        return self.analysis_dir / EXAMPLES

    @property
    def tables_dir(self) -> Path:
        return self.analysis_dir / TABLES

    @property
    def figures_dir(self) -> Path:
        return self.analysis_dir / FIGURES

    # --- readers
    def matrix(self) -> MatrixConfig:
        if not self.matrix_path.is_file():
            raise UserError("missing; this folder was not written by `ldct-bench run`", field=str(self.matrix_path))
        return parse_matrix(load_yaml(self.matrix_path.read_text(), str(self.matrix_path)), str(self.matrix_path))

    def matrix_or_none(self) -> MatrixConfig | None:
        """The resolved matrix, or None where the folder has none (e.g. a bare trajectory table)."""
        return self.matrix() if self.matrix_path.is_file() else None

    def checkpoints(self, cell_id: str) -> dict[int, Path]:
        return list_checkpoints(self.checkpoint_dir(cell_id))

    def history(self, cell_id: str) -> pd.DataFrame:
        path = self.cell_dir(cell_id) / HISTORY
        if not path.is_file():
            return pd.DataFrame(columns=["epoch", "train_loss", "val_loss", "lr", "seconds"])
        return pd.read_csv(path)

    def cell_config(self, cell_id: str) -> dict[str, Any] | None:
        """The cell's ``config.yaml``, or None before the cell was started."""
        path = self.cell_dir(cell_id) / CELL_CONFIG
        return load_yaml(path.read_text(), str(path)) if path.is_file() else None

    def cell_status(self, cell_id: str) -> tuple[Status, str]:
        """The cell's status from its markers (a marker's presence decides; its JSON is only the detail,
        and one that is not a JSON object gives none)."""
        for name, status in ((DONE, "done"), (DIVERGED, "diverged"), (FAILED, "failed")):
            p = self.marker(cell_id, name)
            if p.is_file():
                try:
                    info = json.loads(p.read_text() or "{}")
                except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
                    info = {}
                message = info.get("message", "") if isinstance(info, dict) else ""
                return status, str(message)  # type: ignore[return-value]
        if self.checkpoints(cell_id):
            return "partial", ""
        return "pending", ""

    def cells(self) -> list[CellInfo]:
        """Every cell folder with a config, sorted by id."""
        out: list[CellInfo] = []
        if not self.cells_dir.is_dir():
            return out
        for d in sorted(self.cells_dir.iterdir()):
            if not d.is_dir():
                continue
            try:
                cfg = self.cell_config(d.name)
                if cfg is None:
                    continue
                loss, arch = cfg["loss"]["label"], cfg["architecture"]["label"]
                dose, seed = cfg["dose"], cfg["seed"]
                if not all(isinstance(v, str) for v in (loss, arch)) or isinstance(seed, bool) or not isinstance(seed, int):
                    raise TypeError("labels must be text and the seed an integer")
            except (UserError, OSError, UnicodeDecodeError, TypeError, KeyError, IndexError) as exc:
                reason = exc.message if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
                warnings.warn(f"{d / CELL_CONFIG}: not a cell config ({reason}); cell skipped", SkippedWarning,
                              stacklevel=2)  # fmt: skip
                continue
            status, detail = self.cell_status(d.name)
            out.append(
                CellInfo(
                    cell_id=d.name,
                    loss=loss,
                    architecture=arch,
                    dose=str(dose),
                    seed=seed,
                    dir=d,
                    status=status,
                    epochs_done=max(self.checkpoints(d.name), default=0),
                    detail=detail,
                )
            )
        return out

    # --- writers (the runner's, and the tests' fake runs)
    def write_matrix(self, matrix: MatrixConfig) -> None:
        """Save the resolved matrix beside the results; refuse a folder trained with other dataset or
        training settings (a :class:`UserError` naming the keys that differ). The file is left as it is
        when its text would not change, so a finished run on a read-only folder reruns (and reports that
        nothing is left to train); a file that must be written and cannot be is a :class:`UserError`
        naming it."""
        new = matrix.model_dump(mode="json")
        old_cfg = self.matrix_or_none()
        if old_cfg is not None:
            old = old_cfg.model_dump(mode="json")
            diff = _diff_keys({k: old[k] for k in ("dataset", "training")}, {k: new[k] for k in ("dataset", "training")})
            if diff:
                raise UserError(
                    f"this folder was trained with different settings ({', '.join(diff)}); "
                    "use a new --out, or restore the original values",
                    field=str(self.matrix_path),
                )
        text = dump_yaml(new)
        try:
            if self.matrix_path.is_file() and self.matrix_path.read_text() == text:
                return
        except (OSError, UnicodeDecodeError):
            pass
        write_or_explain(self.matrix_path, text)

    def config_changes(self, cell_id: str, config: dict[str, Any]) -> list[str]:
        """The dotted keys where the cell's ``config.yaml`` differs from ``config``
        (:func:`config_differences`); ``[]`` when it has none yet or they agree."""
        old = self.cell_config(cell_id)
        return [] if old is None else config_differences(old, config)

    def retire_attempt(self, cell_id: str, *, fresh: bool) -> Path:
        """Set a diverged attempt aside under ``<cell>/attempts/<n>/`` (nothing is deleted) so that the cell
        trains again: its ``DIVERGED`` marker always; with ``fresh`` also its config, checkpoints, history,
        timing, environment and TensorBoard files, so it starts from scratch (its config or data changed),
        else it resumes from its last good checkpoint. Returns the attempt's folder."""
        cdir = self.cell_dir(cell_id)
        n = 1
        while (cdir / ATTEMPTS / str(n)).exists():
            n += 1
        dest = cdir / ATTEMPTS / str(n)
        dest.mkdir(parents=True)
        names = [DIVERGED] + ([CELL_CONFIG, CHECKPOINTS, HISTORY, TIMING, ENVIRONMENT, TENSORBOARD] if fresh else [])
        for name in names:
            src = cdir / name
            if src.exists():
                src.rename(dest / name)
        return dest

    def write_cell_config(self, cell_id: str, config: dict[str, Any]) -> None:
        """Write the cell's ``config.yaml``, or check it against the one there: a cell started with other
        settings is a :class:`UserError` naming the keys that differ."""
        old = self.cell_config(cell_id)
        if old is None:
            atomic_write_text(self.cell_dir(cell_id) / CELL_CONFIG, dump_yaml(config))
            return
        diff = config_differences(old, config)
        if diff:
            raise UserError(
                f"cell {cell_id} was started with other settings ({', '.join(diff)}); "
                "use a new --out or restore the original values",
                field=str(self.cell_dir(cell_id) / CELL_CONFIG),
            )

    def write_marker(self, cell_id: str, name: str, info: dict[str, Any]) -> None:
        """Write the ``DONE``, ``DIVERGED`` or ``FAILED`` marker with its JSON ``info``."""
        atomic_write_text(self.marker(cell_id, name), json.dumps(info, indent=1, sort_keys=True))

    def write_history(self, cell_id: str, history: list[dict[str, Any]]) -> None:
        """``history.csv`` = the checkpointed history (deterministic) joined with the wall-clock seconds
        of ``timing.csv``; an empty history removes the file."""
        cdir = self.cell_dir(cell_id)
        if not history:
            (cdir / HISTORY).unlink(missing_ok=True)
            return
        df = pd.DataFrame(history)
        timing_path = cdir / TIMING
        if timing_path.is_file():
            timing = pd.read_csv(timing_path).drop_duplicates("epoch", keep="last")
            df = df.merge(timing[["epoch", "seconds"]], on="epoch", how="left")
        else:
            df["seconds"] = float("nan")
        atomic_write_text(cdir / HISTORY, df.to_csv(index=False))

    def append_timing(self, cell_id: str, epoch: int, seconds: float) -> None:
        """Record an epoch's wall-clock seconds in ``timing.csv`` (a retrained epoch replaces its row)."""
        path = self.cell_dir(cell_id) / TIMING
        rows = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["epoch", "seconds"])
        rows = pd.concat([rows[rows["epoch"] != epoch], pd.DataFrame([{"epoch": epoch, "seconds": round(seconds, 4)}])])
        atomic_write_text(path, rows.to_csv(index=False))
