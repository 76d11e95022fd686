"""The dataset interface shared by the runner, the analysis and the CLI.

A dataset yields, per split (``train``/``val``/``test``, split by patient) and per condition (a dose /
view level such as ``25_360``, or ``quarter`` for Mayo 2016), aligned stacks of low-dose inputs and
normal-dose targets in HU. Everything downstream works in HU; :mod:`benchmark.core.conventions` maps HU to
network space and to metric windows.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
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
    (``<patient>/<slice>``) used as the image key in every analysis table. ``positions_mm`` is the
    table position (z) of each slice where the dataset knows it, else None.

    Every dataset stores a patient's slices in consecutive rows, in increasing table position
    (``synth``: the ``slices_per_patient`` neighbouring slices, 3 mm apart; DICOM: sorted by position),
    so :meth:`volumes` can hand 3-D models contiguous volumes.
    """

    inputs: np.ndarray
    targets: np.ndarray
    patients: np.ndarray
    slice_ids: np.ndarray
    condition: str
    split: str
    pixel_spacing_mm: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    positions_mm: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.inputs.shape != self.targets.shape or self.inputs.ndim != 3:
            raise ValueError(f"inputs {self.inputs.shape} and targets {self.targets.shape} must be equal (S, H, W)")
        if not (len(self.patients) == len(self.slice_ids) == self.inputs.shape[0]):
            raise ValueError("patients and slice_ids need one entry per slice")
        if self.positions_mm is not None and len(self.positions_mm) != self.inputs.shape[0]:
            raise ValueError("positions_mm needs one entry per slice")
        for what, arr in (("inputs", self.inputs), ("targets", self.targets)):
            check_finite(arr, what=what, split=self.split, condition=self.condition, slice_ids=self.slice_ids)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def volumes(self) -> list[slice]:
        """The row ranges that are contiguous volumes, in order: :func:`contiguous_volumes`."""
        return contiguous_volumes(self.patients, self.positions_mm)


_FINITE_CHECKED: set[tuple[str, int, int]] = set()  # memory-mapped files found finite in this process
_FINITE_ROWS = 64  # slices checked per block (a block of 512² float32 slices is 64 MiB)


def check_finite(arr: np.ndarray, *, what: str, split: str, condition: str, slice_ids: np.ndarray) -> None:
    """Raise a :class:`UserError` naming the split, the condition (dose) and the first slice whose
    ``what`` (inputs / targets) hold a NaN or an infinite value: bad data is reported as bad data when it
    is loaded, not later as a diverged training loss or a metric error. A memory-mapped cache file found
    finite is not scanned again in this process (keyed by path, size and modification time)."""
    key = None
    name = getattr(arr, "filename", None)
    if name:
        try:
            st = Path(name).stat()
            key = (str(name), st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if key in _FINITE_CHECKED:
            return
    if not np.issubdtype(arr.dtype, np.floating):
        return
    for start in range(0, len(arr), _FINITE_ROWS):
        block = np.asarray(arr[start : start + _FINITE_ROWS])
        ok = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if not ok.all():
            row = start + int(np.flatnonzero(~ok)[0])
            bad = block[row - start][~np.isfinite(block[row - start])]
            kind = "NaN" if np.isnan(bad).any() else "an infinite value"
            where = f" ({name})" if name else ""
            raise UserError(
                f"the {split} split of dose {condition!r} holds {kind} in the {what} of slice "
                f"{str(slice_ids[row])!r} (row {row}, {bad.size} non-finite pixel(s)){where}; fix or remove that "
                "slice in the source data, or delete the dataset's cache folder to rebuild it",
                field="dataset",
            )
    if key is not None:
        _FINITE_CHECKED.add(key)


GAP_FACTOR = 1.5  # a position step above 1.5 × the patient's usual step is a missing slice


def contiguous_volumes(patients: np.ndarray | list[str], positions_mm: np.ndarray | None = None) -> list[slice]:
    """Maximal runs of consecutive rows that form one volume: rows of one patient and, where positions
    are known, increasing in position by the patient's usual step (its median step; a step above
    ``GAP_FACTOR`` times it, e.g. an unpaired slice left out of a DICOM series, or a step that is not
    forward, starts a new run). Every row is in exactly one run."""
    pats = np.asarray(patients)
    n = len(pats)
    if n == 0:
        return []
    cut = np.zeros(n, dtype=bool)
    cut[0] = True
    cut[1:] = pats[1:] != pats[:-1]
    if positions_mm is not None:
        z = np.asarray(positions_mm, dtype=np.float64)
        step = np.diff(z)
        same = ~cut[1:]
        usual = np.zeros(n - 1)
        for name in np.unique(pats):
            mine = same & (pats[1:] == name) & (step > 0)
            if mine.any():
                usual[pats[1:] == name] = np.median(step[mine])
        cut[1:] |= same & ((step <= 0) | (step > GAP_FACTOR * usual))
    return [slice(a, b) for a, b in itertools.pairwise([*np.flatnonzero(cut).tolist(), n])]


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

    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of this dataset's slices where it is known without building anything (``validate``
        checks the training patch against it), else None."""
        return None

    def fingerprint(self) -> str:
        """A short text that changes whenever the arrays :meth:`load` returns may change (options, source
        files, a rebuilt cache); recorded where a cell diverges, so that a cell which diverged on other
        data is retried (:mod:`benchmark.runner`). Default: the options' hash."""
        text = json.dumps({"kind": self.kind, "options": self.options.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        """Facts for the resolved config and ``data inspect`` (sizes, geometry, cache path ...)."""
        return {"kind": self.kind, "options": self.options.model_dump(mode="json")}
