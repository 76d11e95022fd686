"""The run folder: where the runner writes and the analysis reads. These names are a contract::

    <out>/matrix.resolved.yaml                       the resolved matrix (every default filled in)
    <out>/cells/<cell_id>/config.yaml                the cell: loss, architecture, dose, seed, dataset, training
    <out>/cells/<cell_id>/checkpoints/epoch_<NNN>.pt one per epoch
    <out>/cells/<cell_id>/history.csv                one row per epoch
    <out>/cells/<cell_id>/DONE                       finished (json: epochs, time)
    <out>/cells/<cell_id>/DIVERGED                   the loss became NaN/inf (json: epoch, term)
    <out>/cells/<cell_id>/FAILED                     an error stopped the cell (json: message)
    <out>/cells/<cell_id>/.lock                      held while a runner trains the cell
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from benchmark.checkpoint import list_checkpoints
from benchmark.config import MatrixConfig, load_yaml, parse_matrix
from benchmark.errors import UserError

Status = Literal["done", "partial", "failed", "diverged", "pending"]

RESOLVED_MATRIX = "matrix.resolved.yaml"
CELLS = "cells"
CELL_CONFIG = "config.yaml"
HISTORY = "history.csv"
DONE = "DONE"
DIVERGED = "DIVERGED"
FAILED = "FAILED"
LOCK = ".lock"


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


class RunLayout:
    def __init__(self, out: Path | str, *, must_exist: bool = True) -> None:
        self.out = Path(out)
        if must_exist and not (self.out / CELLS).is_dir():
            raise UserError("no run here (no cells/ folder); run `ldct-bench run --matrix ... --out` first", field=str(out))

    @property
    def cells_dir(self) -> Path:
        return self.out / CELLS

    @property
    def matrix_path(self) -> Path:
        return self.out / RESOLVED_MATRIX

    def cell_dir(self, cell_id: str) -> Path:
        return self.cells_dir / cell_id

    def checkpoint_dir(self, cell_id: str) -> Path:
        return self.cell_dir(cell_id) / "checkpoints"

    def matrix(self) -> MatrixConfig:
        if not self.matrix_path.is_file():
            raise UserError("missing; this folder was not written by `ldct-bench run`", field=str(self.matrix_path))
        return parse_matrix(load_yaml(self.matrix_path.read_text(), str(self.matrix_path)), str(self.matrix_path))

    def checkpoints(self, cell_id: str) -> dict[int, Path]:
        return list_checkpoints(self.checkpoint_dir(cell_id))

    def history(self, cell_id: str) -> pd.DataFrame:
        path = self.cell_dir(cell_id) / HISTORY
        if not path.is_file():
            return pd.DataFrame(columns=["epoch", "train_loss", "val_loss", "lr", "seconds"])
        return pd.read_csv(path)

    def cell_config(self, cell_id: str) -> dict[str, Any]:
        return yaml.safe_load((self.cell_dir(cell_id) / CELL_CONFIG).read_text())

    def cell_status(self, cell_id: str) -> tuple[Status, str]:
        d = self.cell_dir(cell_id)
        for marker, status in ((DONE, "done"), (DIVERGED, "diverged"), (FAILED, "failed")):
            p = d / marker
            if p.is_file():
                try:
                    info = json.loads(p.read_text() or "{}")
                except json.JSONDecodeError:
                    info = {}
                return status, info.get("message", "")  # type: ignore[return-value]
        if self.checkpoints(cell_id):
            return "partial", ""
        return "pending", ""

    def cells(self) -> list[CellInfo]:
        """Every cell folder with a config, sorted by id."""
        out: list[CellInfo] = []
        if not self.cells_dir.is_dir():
            return out
        for d in sorted(self.cells_dir.iterdir()):
            cfg_path = d / CELL_CONFIG
            if not cfg_path.is_file():
                continue
            cfg = yaml.safe_load(cfg_path.read_text())
            status, detail = self.cell_status(d.name)
            out.append(
                CellInfo(
                    cell_id=d.name,
                    loss=cfg["loss"]["label"],
                    architecture=cfg["architecture"]["label"],
                    dose=str(cfg["dose"]),
                    seed=int(cfg["seed"]),
                    dir=d,
                    status=status,
                    epochs_done=max(self.checkpoints(d.name), default=0),
                    detail=detail,
                )
            )
        return out
