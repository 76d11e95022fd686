"""Cells: one (loss, architecture, dose, seed) combination of a matrix, with a stable readable id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.config import ArchitectureConfig, ExcludeRule, LossConfig, MatrixConfig


@dataclass(frozen=True)
class Cell:
    loss: LossConfig
    architecture: ArchitectureConfig
    dose: str
    seed: int

    @property
    def cell_id(self) -> str:
        """``<loss>__<architecture>__<dose>__s<seed>``, e.g. ``mse__redcnn__25_720__s0``."""
        return f"{self.loss.label}__{self.architecture.label}__{self.dose}__s{self.seed}"

    def matches(self, rule: ExcludeRule) -> bool:
        return (
            (rule.loss is None or rule.loss == self.loss.label)
            and (rule.architecture is None or rule.architecture == self.architecture.label)
            and (rule.dose is None or rule.dose == self.dose)
            and (rule.seed is None or rule.seed == self.seed)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_id": self.cell_id,
            "loss": self.loss.model_dump(mode="json"),
            "architecture": self.architecture.model_dump(mode="json"),
            "dose": self.dose,
            "seed": self.seed,
        }


def expand_cells(matrix: MatrixConfig) -> list[Cell]:
    """The cross product ``losses × architectures × doses × seeds`` minus ``exclude`` rules, in a
    fixed order (seed, dose, architecture, loss vary slowest to fastest: loss fastest), so the cells
    compared with each other finish close together."""
    cells = []
    for seed in matrix.seeds:
        for dose in matrix.doses:
            for arch in matrix.architectures:
                for loss in matrix.losses:
                    cell = Cell(loss, arch, dose, seed)
                    if not any(cell.matches(r) for r in matrix.exclude):
                        cells.append(cell)
    return cells


def cell_config(cell: Cell, matrix: MatrixConfig) -> dict[str, Any]:
    """What defines a cell's training (its ``config.yaml`` and every checkpoint's ``cell``): a rerun
    with a different value must not reuse its checkpoints."""
    return {
        **cell.to_dict(),
        "dataset": matrix.dataset.model_dump(mode="json"),
        "training": matrix.training.model_dump(mode="json"),
        "deterministic": matrix.deterministic,
        # portable kernels and their thread count decide the bytes; native cells keep their old config
        **({"reproducibility": matrix.reproducibility.model_dump(mode="json")}
           if matrix.reproducibility.kernels == "portable" else {}),
    }
