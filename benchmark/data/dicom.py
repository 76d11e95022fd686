"""Paired real CT data from DICOM folders: ``dicom_pairs`` (generic) and the shared machinery of
``mayo2016`` (:mod:`benchmark.data.mayo`).

Layout ``<root>/<patient>/<condition>/…`` (files at any depth below the condition folder, any name;
``.IMA``, ``.dcm`` or none). One condition folder holds the reference (normal-dose) images; every
other condition folder of a patient is paired with it **by slice position** (ImagePositionPatient z,
else SliceLocation, matched to 0.01 mm), never by file name or order. HU as read by
:func:`benchmark.core.dicom.read_hu` (the one conversion, shared with ``ldct-bench score``: stored value
· RescaleSlope + RescaleIntercept, padding below −1024 HU raised to −1024). A file that is not a readable DICOM CT image, or a
pixel spacing / image size that differs between paired series, is a :class:`UserError` naming the
file. Slices without a partner are reported (``index()``, ``data inspect``) and make ``prepare`` fail
with their list unless ``skip_unpaired: true``.

Cache: ``<cache_root>/<kind>/<label>-<hash>/<split>/<condition>/{inputs,targets}.npy`` plus
``patients.npy``, ``slice_ids.npy`` (``<patient>/<z position in mm>``) and ``spacing.npy``; the hash
covers the options and every file's path, size and modification time, so changed data rebuilds. Each
patient's slices are stored in increasing position; ``load`` reads the positions back from the slice
ids (``PairedSlices.positions_mm``), so 3-D models see only slices that are adjacent in position.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from benchmark.core.dicom import dcmread, read_hu
from benchmark.core.errors import MissingResource, UserError
from benchmark.data import cache
from benchmark.data.base import SPLITS, Dataset, DatasetOptions, PairedSlices, Split

GENERATOR_VERSION = "dicom-1"
POSITION_DECIMALS = 2  # slices pair when their z positions agree to 0.01 mm
_NOT_DICOM = {".txt", ".md", ".json", ".csv", ".xml", ".zip", ".gz", ".tar", ".py", ".png", ".jpg", ".pdf"}


@dataclass(frozen=True)
class SliceHeader:
    """What pairing needs from one DICOM file (read without pixel data)."""

    path: Path
    z: float
    spacing: tuple[float, float]
    shape: tuple[int, int]

    @property
    def key(self) -> float:
        return round(self.z, POSITION_DECIMALS)


def read_header(path: Path) -> SliceHeader:
    """Position, spacing and size of a CT slice; a clear :class:`UserError` naming ``path`` otherwise."""
    ds = dcmread(path, header_only=True)
    modality = ds.get("Modality")
    if modality is not None and modality != "CT":
        raise UserError(f"modality is {modality!r}, not a CT image", field=str(path))
    for tag in ("Rows", "Columns", "PixelSpacing"):
        if tag not in ds:
            raise UserError(f"no {tag}: not a CT image slice", field=str(path))
    if "ImagePositionPatient" in ds and len(ds.ImagePositionPatient) == 3:
        z = float(ds.ImagePositionPatient[2])
    elif "SliceLocation" in ds:
        z = float(ds.SliceLocation)
    else:
        raise UserError("neither ImagePositionPatient nor SliceLocation: the slice cannot be paired", field=str(path))
    spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    return SliceHeader(Path(path), z, spacing, (int(ds.Rows), int(ds.Columns)))


def dicom_files(folder: Path) -> list[Path]:
    """Candidate DICOM files under ``folder`` (any depth), sorted; hidden files, DICOMDIR and obvious
    non-DICOM documents are ignored."""
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.name.upper() == "DICOMDIR":
            continue
        if p.suffix.lower() in _NOT_DICOM:
            continue
        out.append(p)
    return out


def index_series(folder: Path) -> list[SliceHeader]:
    """Headers of every slice in one condition folder, sorted by position. Duplicate positions, or a
    pixel spacing / image size that differs from the rest of the series, are errors naming the file."""
    headers = sorted((read_header(p) for p in dicom_files(folder)), key=lambda h: h.z)
    if headers:  # one series: one pixel spacing and one image size
        spacings = [h.spacing for h in headers]
        common = max(set(spacings), key=spacings.count)
        for h in headers:
            if not np.allclose(h.spacing, common, rtol=1e-3, atol=1e-4):
                raise UserError(f"pixel spacing {h.spacing} mm differs from the rest of its series ({common} mm)",
                                field=str(h.path))
            if h.shape != headers[0].shape:
                raise UserError(f"image size {h.shape} differs from the rest of its series ({headers[0].shape})",
                                field=str(h.path))
    seen: dict[float, Path] = {}
    for h in headers:
        if h.key in seen:
            raise UserError(f"two slices at z = {h.z:.2f} mm: {seen[h.key].name} and {h.path.name}", field=str(folder))
        seen[h.key] = h.path
    return headers


@dataclass
class PatientPairs:
    """Pairing of one patient's condition series with its reference series."""

    patient: str
    condition: str
    pairs: list[tuple[SliceHeader, SliceHeader]]  # (input, reference), by position
    unpaired: list[SliceHeader] = field(default_factory=list)  # slices of either series without partner


def pair_series(patient: str, condition: str, inputs: list[SliceHeader], refs: list[SliceHeader]) -> PatientPairs:
    """Pair by rounded z position; check spacing and size agree within each pair."""
    by_key = {h.key: h for h in refs}
    pairs, unpaired = [], []
    used = set()
    for h in inputs:
        ref = by_key.get(h.key)
        if ref is None:
            unpaired.append(h)
            continue
        if ref.shape != h.shape:
            raise UserError(f"image size {h.shape} differs from its reference {ref.path} {ref.shape}", field=str(h.path))
        if not np.allclose(ref.spacing, h.spacing, rtol=1e-3, atol=1e-4):
            raise UserError(
                f"pixel spacing {h.spacing} mm differs from its reference {ref.path} ({ref.spacing} mm)", field=str(h.path)
            )
        used.add(h.key)
        pairs.append((h, ref))
    unpaired += [r for r in refs if r.key not in used]
    return PatientPairs(patient, condition, pairs, unpaired)


class PairedDicomOptions(DatasetOptions):
    """Options shared by the DICOM datasets."""

    root: Path
    test_patients: list[str] | None = None
    val_patients: list[str] | None = None
    skip_unpaired: bool = False

    @field_validator("root")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()  # whether it exists is this machine's matter: PairedDicomDataset


class PairedDicomDataset(Dataset):
    """Base of the DICOM datasets: subclasses name the condition folders (:meth:`condition_folders`)."""

    options: PairedDicomOptions
    label: ClassVar[str] = "dicom"

    def __init__(self, options: DatasetOptions) -> None:
        super().__init__(options)
        root = self.options.root
        if not root.is_dir():  # the data is not on this machine (validate: a warning; run: exit 2)
            raise MissingResource(f"folder {str(root)!r} does not exist (expected <root>/<patient>/<condition>/…)",
                                  field="dataset.options.root")  # fmt: skip

    # --- layout -------------------------------------------------------------------------------
    def reference_folder(self) -> str:
        raise NotImplementedError

    def condition_folders(self) -> dict[str, str]:
        """Condition name → folder name inside each patient folder (reference excluded)."""
        raise NotImplementedError

    def real_conditions(self) -> list[str]:
        return list(self.condition_folders())

    def conditions(self) -> list[str]:
        return self.real_conditions()

    def patients(self) -> list[str]:
        root = self.options.root
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        found = [p for p in found if (root / p / self.reference_folder()).is_dir()]
        if not found:
            raise UserError(
                f"no patient folder with a {self.reference_folder()!r} sub-folder under {root}", field="dataset.options.root"
            )
        return found

    def split_patients(self) -> dict[str, list[str]]:
        """Test patients from the options (default: the last ~20 % in sorted order), validation likewise
        (default: one patient before the test set), the rest train."""
        pats = self.patients()
        test = self.options.test_patients or pats[-max(1, len(pats) // 5) :]
        rest = [p for p in pats if p not in test]
        val = self.options.val_patients if self.options.val_patients is not None else rest[-1:]
        for name, chosen in (("test_patients", test), ("val_patients", val)):
            missing = [p for p in chosen if p not in pats]
            if missing:
                raise UserError(f"{', '.join(missing)} not found; patients under the root: {', '.join(pats)}",
                                field=f"dataset.options.{name}")
        train = [p for p in pats if p not in test and p not in val]
        if not train:
            raise UserError(f"no training patients left after test {test} and validation {val}", field="dataset.options")
        return {"train": train, "val": list(val), "test": list(test)}

    # --- indexing -----------------------------------------------------------------------------
    def index(self) -> list[PatientPairs]:
        """Pair every patient's condition series with its reference (headers only: fast)."""
        out = []
        for patient in self.patients():
            pdir = self.options.root / patient
            refs = index_series(pdir / self.reference_folder())
            for cond, folder in self.condition_folders().items():
                if not (pdir / folder).is_dir():
                    out.append(PatientPairs(patient, cond, [], list(refs)))
                    continue
                out.append(pair_series(patient, cond, index_series(pdir / folder), refs))
        return out

    def _signature(self) -> list[tuple[str, int, int]]:
        root = self.options.root
        sig = []
        for patient in self.patients():
            for folder in [self.reference_folder(), *self.condition_folders().values()]:
                d = root / patient / folder
                if d.is_dir():
                    sig += [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in dicom_files(d)]
        return sig

    def _hash_payload(self) -> dict[str, Any]:
        return {"version": GENERATOR_VERSION, "options": self.options.model_dump(mode="json"), "files": self._signature()}

    @functools.cached_property
    def cache_folder(self) -> Path:
        """Computed once per instance (it stats every file): data changed later needs a new instance."""
        return cache.cache_dir(self.kind, self.label, self._hash_payload())

    # --- building -----------------------------------------------------------------------------
    def prepare(self, *, progress: bool = True) -> None:
        folder = self.cache_folder
        if not cache.is_built(folder):
            cache.ensure_built(folder, lambda tmp: self._build(tmp, progress))

    def _build(self, tmp: Path, progress: bool) -> dict[str, Any]:
        index = self.index()
        unpaired = [(pp.patient, pp.condition, h) for pp in index for h in pp.unpaired]
        if unpaired and not self.options.skip_unpaired:
            lines = [f"  {p} / {c}: {h.path} (z = {h.z:.2f} mm)" for p, c, h in unpaired[:50]]
            more = f"\n  … and {len(unpaired) - 50} more" if len(unpaired) > 50 else ""
            raise UserError(
                f"{len(unpaired)} slice(s) without a full/low-dose partner (set skip_unpaired: true to leave them out):\n"
                + "\n".join(lines) + more,
                field="dataset.options.skip_unpaired",
            )
        splits = self.split_patients()
        self._check_not_empty(index, splits)
        total = sum(len(pp.pairs) for pp in index)
        bar = tqdm(total=total, desc=f"{self.kind}: reading DICOM pairs", unit="slice", disable=not progress)
        meta_counts: dict[str, dict[str, int]] = {}
        for split, members in splits.items():
            for cond in self.real_conditions():
                chosen = [pp for pp in index if pp.condition == cond and pp.patient in members]
                pairs = [(pp.patient, a, b) for pp in chosen for a, b in pp.pairs]
                self._write_condition(tmp / split / cond, pairs, bar)
                meta_counts.setdefault(split, {})[cond] = len(pairs)
        bar.close()
        self._build_extra(tmp, splits, progress)
        return {
            "kind": self.kind,
            "generator_version": GENERATOR_VERSION,
            "root": str(self.options.root),
            "splits": splits,
            "slices": meta_counts,
            "unpaired": [f"{p}/{c}: {h.path}" for p, c, h in unpaired],
        }

    def _check_not_empty(self, index: list[PatientPairs], splits: dict[str, list[str]]) -> None:
        """Every split has paired slices under every real condition; otherwise a :class:`UserError` naming
        the split, the condition and the folders that hold no DICOM file (an empty dataset would train on
        nothing and fail far from its cause)."""
        root = self.options.root
        for split, members in splits.items():
            for cond, folder in self.condition_folders().items():
                if any(pp.pairs for pp in index if pp.condition == cond and pp.patient in members):
                    continue
                folders = [root / p / f for p in members for f in (self.reference_folder(), folder)]
                empty = [str(d) for d in folders if not d.is_dir() or not dicom_files(d)]
                what = (f"these folders hold no DICOM file: {', '.join(empty)}" if empty
                        else f"none of the slices in {', '.join(map(str, folders))} has a partner at the same position")
                raise UserError(f"no paired slices in the {split} split ({', '.join(members)}) for condition "
                                f"{cond!r}: {what}", field="dataset.options.root")  # fmt: skip

    def _build_extra(self, tmp: Path, splits: dict[str, list[str]], progress: bool) -> None:
        """Hook for derived conditions (simulated doses); default none."""

    def _write_condition(self, d: Path, pairs: list[tuple[str, SliceHeader, SliceHeader]], bar: tqdm) -> None:
        d.mkdir(parents=True, exist_ok=True)
        shapes = {ref.shape for _, _, ref in pairs}
        if len(shapes) > 1:
            raise UserError(
                f"images of different sizes in one split ({sorted(shapes)}); resample them to one size first",
                field=str(d.name),
            )
        h, w = shapes.pop() if shapes else (0, 0)
        inputs = cache.new_array(d / "inputs.npy", (len(pairs), h, w))
        targets = cache.new_array(d / "targets.npy", (len(pairs), h, w))
        for i, (_, inp, ref) in enumerate(pairs):
            inputs[i] = read_hu(inp.path)
            targets[i] = read_hu(ref.path)
            bar.update(1)
        inputs.flush()
        targets.flush()
        np.save(d / "patients.npy", np.array([p for p, _, _ in pairs], dtype=str))
        np.save(d / "slice_ids.npy", np.array([f"{p}/{ref.z:.2f}" for p, _, ref in pairs], dtype=str))
        np.save(d / "spacing.npy", np.array([ref.spacing[0] for _, _, ref in pairs], dtype=np.float64))

    # --- loading ------------------------------------------------------------------------------
    def load(self, split: Split, condition: str, *, epoch: int | None = None, seed: int | None = None) -> PairedSlices:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}", field="split")
        if condition not in self.conditions():
            raise UserError(f"unknown condition {condition!r}; valid: {', '.join(self.conditions())}", field="doses")
        self.prepare(progress=True)
        d = self.cache_folder / split / condition
        spacing = np.load(d / "spacing.npy")
        slice_ids = np.load(d / "slice_ids.npy")
        return PairedSlices(
            inputs=cache.open_array(d / "inputs.npy"),
            targets=cache.open_array(d / "targets.npy"),
            patients=np.load(d / "patients.npy"),
            slice_ids=slice_ids,
            condition=condition,
            split=split,
            pixel_spacing_mm=float(np.median(spacing)) if spacing.size else 1.0,
            extra={"pixel_spacing_mm": spacing, "reference": self.reference_folder()},
            positions_mm=np.array([float(s.rsplit("/", 1)[1]) for s in slice_ids.tolist()], dtype=np.float64),
        )

    def image_shape(self) -> tuple[int, int] | None:
        """The size of the first reference slice of the first patient (a header read; every paired series
        must have one size, which building checks)."""
        for patient in self.patients():
            files = dicom_files(self.options.root / patient / self.reference_folder())
            if files:
                return read_header(files[0]).shape
        return None

    def fingerprint(self) -> str:
        """The cache folder (its hash covers the options and every file's path, size and modification time)
        and when it was built (:func:`benchmark.data.cache.fingerprint`)."""
        return cache.fingerprint(self.cache_folder)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(conditions=self.conditions(), reference=self.reference_folder(), cache=str(self.cache_folder))
        return out


class DicomPairsOptions(PairedDicomOptions):
    """``root``: ``<root>/<patient>/<condition>/…``; ``reference``: the condition folder name of the
    normal-dose images (every other sub-folder is a low-dose condition); ``test_patients`` /
    ``val_patients``: default the last ~20 % of patients (sorted) and one before them."""

    reference: str = Field(default="full", min_length=1)


class DicomPairsDataset(PairedDicomDataset):
    """Generic paired DICOM folders (TCIA LDCT-and-Projection-data, in-house data)."""

    kind: ClassVar[str] = "dicom_pairs"
    Options: ClassVar[type[DatasetOptions]] = DicomPairsOptions
    label: ClassVar[str] = "pairs"
    options: DicomPairsOptions

    def reference_folder(self) -> str:
        return self.options.reference

    def condition_folders(self) -> dict[str, str]:
        names: set[str] = set()
        for patient in self.patients():
            names |= {p.name for p in (self.options.root / patient).iterdir() if p.is_dir() and not p.name.startswith(".")}
        names.discard(self.options.reference)
        if not names:
            raise UserError(f"no low-dose condition folder next to {self.options.reference!r}", field="dataset.options.root")
        return {n: n for n in sorted(names)}
