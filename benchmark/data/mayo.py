"""``mayo2016``: the AAPM Low-Dose CT Grand Challenge data (McCollough et al., Med. Phys. 44(10), 2017).

Layout ``<root>/<patient>/{full,quarter}_{1mm,3mm}/…`` with ``.IMA`` or ``.dcm`` files; full- and
quarter-dose slices are paired by patient and slice position (:mod:`benchmark.data.dicom`). The
default split holds out ``L506`` for testing (the common protocol) and uses the last remaining
patient (sorted) for validation; both are options. Condition ``quarter`` is the real quarter-dose
scan; ``extra_doses`` (percent of the full dose) add simulated conditions ``sim<dose>`` by projection-
domain noise insertion into the full-dose images (Yu et al. 2012, :mod:`benchmark.data.noise_insertion`)
with ``i0`` from ``ldct-bench data calibrate --dataset mayo2016 --root …``.

The data is under data-use terms: it is never copied anywhere but the local cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveFloat, field_validator, model_validator
from tqdm.auto import tqdm

from benchmark.data import cache
from benchmark.data.base import DatasetOptions
from benchmark.data.dicom import PairedDicomDataset, PairedDicomOptions
from benchmark.data.noise_insertion import insert_noise


class Mayo2016Options(PairedDicomOptions):
    """``root`` (required), ``thickness`` (``1mm``/``3mm``), ``test_patients`` (default ``[L506]``),
    ``val_patients`` (default: the last other patient), ``skip_unpaired``, ``extra_doses`` (percent,
    e.g. ``[10, 50]``) with the calibrated ``i0`` and ``electronic_noise_var``, ``seed`` of the
    inserted noise."""

    thickness: Literal["1mm", "3mm"] = "1mm"
    test_patients: list[str] | None = Field(default_factory=lambda: ["L506"])
    extra_doses: list[int] = Field(default_factory=list)
    i0: PositiveFloat | None = None
    electronic_noise_var: float = Field(default=10.0, ge=0)
    seed: int = 0

    @field_validator("extra_doses")
    @classmethod
    def _doses(cls, v: list[int]) -> list[int]:
        bad = [d for d in v if not 0 < d < 100]
        if bad:
            raise ValueError(f"simulated doses are percent of the full dose, strictly between 0 and 100: {bad}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _i0_for_extra(self) -> Mayo2016Options:
        if self.extra_doses and self.i0 is None:
            raise ValueError(
                "extra_doses need the calibrated photon count i0: run `ldct-bench data calibrate --dataset "
                "mayo2016 --root <root>` and set dataset.options.i0"
            )
        return self


class Mayo2016Dataset(PairedDicomDataset):
    """AAPM LDCT Grand Challenge 2016: real full/quarter-dose pairs (+ simulated doses)."""

    kind: ClassVar[str] = "mayo2016"
    Options: ClassVar[type[DatasetOptions]] = Mayo2016Options
    options: Mayo2016Options

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"mayo-{self.options.thickness}"

    def reference_folder(self) -> str:
        return f"full_{self.options.thickness}"

    def condition_folders(self) -> dict[str, str]:
        return {"quarter": f"quarter_{self.options.thickness}"}

    def simulated_conditions(self) -> dict[str, float]:
        return {f"sim{d}": d / 100 for d in self.options.extra_doses}

    def conditions(self) -> list[str]:
        return [*self.real_conditions(), *self.simulated_conditions()]

    def _build_extra(self, tmp: Path, splits: dict[str, list[str]], progress: bool) -> None:
        sims = self.simulated_conditions()
        if not sims:
            return
        assert self.options.i0 is not None
        bar = tqdm(total=len(sims) * len(splits), desc="mayo2016: noise insertion", disable=not progress)
        for split in splits:
            src = tmp / split / "quarter"
            full = np.load(src / "targets.npy", mmap_mode="r")
            spacing = np.load(src / "spacing.npy")
            patients = np.load(src / "patients.npy")
            for k, (name, dose) in enumerate(sims.items()):
                d = tmp / split / name
                d.mkdir(parents=True)
                inputs = cache.new_array(d / "inputs.npy", full.shape)
                for j, patient in enumerate(dict.fromkeys(patients.tolist())):
                    rows = np.flatnonzero(patients == patient)
                    rng = np.random.default_rng([self.options.seed, k, j, int(dose * 1000)])
                    inputs[rows] = insert_noise(np.asarray(full[rows]), float(spacing[rows[0]]), dose, self.options.i0,
                                                rng, electronic_var=self.options.electronic_noise_var)
                inputs.flush()
                np.save(d / "targets.npy", np.asarray(full))
                for f in ("patients.npy", "slice_ids.npy", "spacing.npy"):
                    (d / f).write_bytes((src / f).read_bytes())
                bar.update(1)
        bar.close()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["simulated"] = self.simulated_conditions()
        return out
