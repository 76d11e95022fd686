"""The dataset interface shared by the runner, the analysis and the CLI.

A dataset yields, per split (``train``/``val``/``test``, split by patient) and per condition (a dose /
view level such as ``25_360``, or ``quarter`` for Mayo 2016), aligned stacks of low-dose inputs and
normal-dose targets in HU. Everything downstream works in HU; :mod:`benchmark.core.conventions` maps HU to
network space and to metric windows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from benchmark.core.errors import UserError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass
class PairedSlices:
    """Aligned low-dose / normal-dose slices of one split and condition.

    ``inputs`` and ``targets`` are ``(S, H, W)`` float32 arrays in HU (possibly memory-mapped);
    ``patients`` and ``slice_ids`` are ``(S,)`` string arrays; ``slice_ids`` are unique, stable names
    (``<patient>/<slice>``) used as the image key in every analysis table.
    """

    inputs: np.ndarray
    targets: np.ndarray
    patients: np.ndarray
    slice_ids: np.ndarray
    condition: str
    split: str
    pixel_spacing_mm: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.inputs.shape != self.targets.shape or self.inputs.ndim != 3:
            raise ValueError(f"inputs {self.inputs.shape} and targets {self.targets.shape} must be equal (S, H, W)")
        if not (len(self.patients) == len(self.slice_ids) == self.inputs.shape[0]):
            raise ValueError("patients and slice_ids need one entry per slice")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


class DatasetOptions(BaseModel):
    """Base for each dataset's options model (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")


class Dataset(ABC):
    """A registered dataset kind. Subclasses set ``kind``, ``Options`` and implement the methods.

    Construction is cheap and never downloads; :meth:`prepare` builds caches (idempotent).
    """

    kind: ClassVar[str]
    Options: ClassVar[type[DatasetOptions]]

    def __init__(self, options: DatasetOptions) -> None:
        self.options = options

    @classmethod
    def from_options(cls, options: dict[str, Any] | None, *, field: str = "dataset.options") -> Dataset:
        try:
            opts = cls.Options.model_validate(options or {})
        except ValidationError as exc:
            msgs = []
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = "unknown key (not allowed here)" if err["type"] == "extra_forbidden" else err["msg"]
                msgs.append(f"{field}.{loc}: {msg}" if loc else f"{field}: {msg}")
            raise UserError("\n".join(msgs)) from None
        return cls(opts)

    @abstractmethod
    def conditions(self) -> list[str]:
        """The condition names this dataset offers (the matrix ``doses`` axis picks among them)."""

    def prepare(self, *, progress: bool = True) -> None:  # noqa: B027 - optional hook
        """Build or index whatever :meth:`load` needs (idempotent). Default: nothing."""

    @abstractmethod
    def load(self, split: Split, condition: str, *, epoch: int | None = None, seed: int | None = None) -> PairedSlices:
        """Aligned slices of ``split`` under ``condition``.

        ``epoch``/``seed`` matter only for datasets that redraw training noise per epoch; the result is
        a deterministic function of (options, split, condition, epoch, seed).
        """

    def describe(self) -> dict[str, Any]:
        """Facts for the resolved config and ``data inspect`` (sizes, geometry, cache path ...)."""
        return {"kind": self.kind, "options": self.options.model_dump(mode="json")}
