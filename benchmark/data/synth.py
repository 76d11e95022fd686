"""``synth``: the embedded, offline LDCT dataset simulated from procedural phantoms.

Each *patient* (:mod:`benchmark.data.phantoms`) yields ``slices_per_patient`` neighbouring axial
slices; patients are split into train / val / test (the last ``n_test`` patients are the test set,
the ``n_val`` before them validation). Per slice the simulator

1. rasterises the phantom on a 2× finer grid (``2N``, pixel ``p/2``) and converts HU to μ;
2. forward-projects it at 720 views (fan beam, clinical-like geometry, or parallel beam);
3. for every condition ``<dose>_<views>`` (dose ∈ {10, 25, 50, 100} % × views ∈ {180, 360, 720})
   keeps every ``720/views``-th view, draws photon counts (:mod:`benchmark.data.simulate`, Zeng et
   al. 2015) and reconstructs with Hann-apodised FBP on the ``N × N`` output grid, in HU.

**Dose is per view.** ``I0`` counts photons per ray *per view*; ``dose`` scales it. At fixed dose
fraction, 360 views carry half the total (patient) dose of 720 views and 180 views a quarter, so
the FBP noise variance scales like ``1 / (dose · views)``: ``25_720`` and ``50_360`` have about the
same noise, but ``50_360`` adds view-aliasing streaks.

**Targets.** ``target: fbp`` (default) is the noiseless 720-view FBP of the same sinogram: it has the
same resolution (detector, interpolation, Hann apodisation) as the inputs, so a denoiser is asked to
remove noise and streaks only. ``target: phantom`` is the phantom itself (2×2 block mean of the fine
grid), which also asks for deblurring. Both are stored; ``PairedSlices.extra`` carries the other.
``target: ndct`` is a *noisy* normal-dose reference like real NDCT: the 720-view FBP of an independent
100 %-dose noise realisation of the same sinogram (noise from the dataset's seeded generator, stream
``[seed, patient, 100, 720, NDCT_STREAM]``, independent of every input's). It is built only into the
``ndct`` cache (``ndct.npy``; the hash payload gets ``"target": "ndct"``, so the ``fbp``/``phantom``
cache and every existing array are unchanged); ``extra["other_target"]`` is then the noiseless FBP.

Cache (:mod:`benchmark.data.cache`): ``<cache_root>/synth/<size>-<hash>/<split>/`` with
``<condition>.npy`` inputs, ``target_fbp.npy``, ``phantom.npy``, ``clean_<views>.npy`` (noiseless
FBP at each view count, for noise measurements), ``roi.npy`` (uniform-region mask), ``patients.npy``,
``slice_ids.npy``, ``regions.npy``, and for the training split ``sino_clean.npy`` (720-view line
integrals) so training noise can be redrawn per epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, model_validator
from tqdm.auto import tqdm

from benchmark.core.device import resolve_device
from benchmark.core.errors import UserError
from benchmark.data import cache
from benchmark.data.base import SPLITS, Dataset, DatasetOptions, PairedSlices, Split
from benchmark.data.measure import difference_noise_std, uniform_roi
from benchmark.data.phantoms import Grid, downsample2, patient_kind, patient_slices
from benchmark.data.projector import Geometry, clinical_geometry
from benchmark.data.simulate import HU_QUANTUM, NoiseModel, add_noise, project_hu, reconstruct_hu

# Bump when anything that changes the arrays changes (phantoms, physics, projector, layout).
GENERATOR_VERSION = "synth-3"  # 3: float64 phantoms, projection and FBP; HU stored on a 1/16 HU grid
NDCT_STREAM = 2  # noise-stream tag of the ndct target (inputs have none, redrawn training noise 1)

DOSES_PERCENT: tuple[int, ...] = (10, 25, 50, 100)
VIEWS: tuple[int, ...] = (180, 360, 720)
FULL_VIEWS = 720
FOV_MM = 400.0
GROUP_SLICES = 32  # slices reconstructed together (one batched FBP call per condition)
SLICE_MM = 3.0

SizeName = Literal["tiny", "small", "full"]


def condition_name(dose_percent: int, views: int) -> str:
    return f"{dose_percent}_{views}"


CONDITIONS: tuple[str, ...] = tuple(condition_name(d, v) for d in DOSES_PERCENT for v in VIEWS)


def parse_condition(name: str) -> tuple[int, int]:
    """``"25_360"`` → ``(25, 360)``; anything else is a :class:`UserError` listing the valid names."""
    if name not in CONDITIONS:
        raise UserError(
            f"unknown synth condition {name!r}; valid: {', '.join(CONDITIONS)} (<dose %>_<views>)",
            field="doses",
        )
    d, v = name.split("_")
    return int(d), int(v)


# size → (image side N, patients, slices per patient, (n_val, n_test))
SIZES: dict[str, tuple[int, int, int, tuple[int, int]]] = {
    "tiny": (96, 8, 4, (1, 2)),
    "small": (256, 24, 8, (4, 4)),
    "full": (512, 40, 16, (5, 5)),
}
# Photons per ray per view at 100 % dose (Zeng et al. 2015 use 1e5–5e5). The same for every size, so
# all sizes share the photon-count regime (and the √(1/dose) noise scaling); the noise in HU grows
# with the image size because pixels get smaller (measured in uniform soft tissue at 100 %, 720 views:
# ≈ 3.3 HU for tiny, ≈ 12 HU for small; 10 % dose: ≈ 11 and ≈ 41 HU).
DEFAULT_I0 = 2.0e5
# Largest per-pixel difference (HU) between a CUDA and a CPU build of the same options. Only the FBP
# runs on the build device (forward projection and noise are on the CPU, see SynthOptions). FBP runs in
# float64 (cuFFT vs pocketfft/MKL, a sparse back-projection summing ~720 views): the two differ by
# ~1e-10 HU, then both round to the HU_QUANTUM grid, so a pixel differs only where it lies within that
# distance of a grid midpoint, and then by exactly one grid step.
BUILD_TOLERANCE_HU = HU_QUANTUM


class SynthOptions(DatasetOptions):
    """Options of ``synth`` (all optional).

    ``size``: tiny (96², 8 patients × 4 slices, CI, seconds), small (256², 24 × 8, CPU default),
    full (512², 40 × 16, GPU box). ``patients`` / ``slices_per_patient`` override the size's counts
    (≥ 3 patients: one each for train, val, test). ``i0``: photons per ray per view at 100 % dose
    (default ``DEFAULT_I0`` = 2e5 for every size).
    ``val_patients`` / ``test_patients`` override how many patients go to the validation and test splits
    (the rest train; patient-level tests need several test patients: with 2, a two-sided Wilcoxon test
    can never reach p < 0.05).
    ``redraw_train_noise``: training inputs get fresh noise per ``(seed, epoch)`` of ``load``.
    ``build_device``: where the FBP runs while building (``auto`` = the current CUDA device if
    present, i.e. the cell's ``cuda:N`` in a run). The build device is **not** part of the cache key:
    the forward projection that feeds the noise always runs on the CPU and the noise is drawn on the
    CPU from the seeded numpy generators, so phantoms, clean sinograms, ROIs and the noise
    realisation are bit-identical everywhere; only the (linear, deterministic) FBP runs on the build
    device, and a CUDA build equals a CPU build within ``BUILD_TOLERANCE_HU`` per pixel (one grid
    step where a float64 difference straddles a rounding point; see its comment). Rebuilding on the
    same device is bit-identical.
    """

    size: SizeName = "small"
    target: Literal["fbp", "phantom", "ndct"] = "fbp"
    geometry: Literal["fan", "parallel"] = "fan"
    redraw_train_noise: bool = False
    seed: int = 0
    patients: int | None = Field(default=None, ge=3)
    slices_per_patient: int | None = Field(default=None, ge=1)
    val_patients: int | None = Field(default=None, ge=1)
    test_patients: int | None = Field(default=None, ge=1)
    i0: PositiveFloat | None = None
    electronic_noise_var: NonNegativeFloat = 10.0
    filter: Literal["hann", "ramp"] = "hann"
    build_device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _cuda_present(self) -> SynthOptions:
        if self.build_device == "cuda" and not torch.cuda.is_available():
            raise ValueError("build_device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        return self


def _split_counts(n_patients: int, val_test: tuple[int, int]) -> tuple[int, int, int]:
    n_val, n_test = val_test
    if n_patients < n_val + n_test + 1:  # scale down, keeping at least one patient per split
        n_val = max(1, round(n_patients * n_val / (n_val + n_test + 4)))
        n_test = max(1, round(n_patients * n_test / (n_val + n_test + 4)))
    n_train = n_patients - n_val - n_test
    if n_train < 1:
        raise UserError(f"{n_patients} patients cannot be split into train/val/test", field="dataset.options.patients")
    return n_train, n_val, n_test


class SynthDataset(Dataset):
    """Simulated LDCT from seeded anthropomorphic phantoms (see the module docstring)."""

    kind: ClassVar[str] = "synth"
    Options: ClassVar[type[DatasetOptions]] = SynthOptions

    options: SynthOptions

    # --- sizes and geometry -------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return SIZES[self.options.size][0]

    @property
    def pixel_mm(self) -> float:
        return FOV_MM / self.image_size

    @property
    def n_patients(self) -> int:
        return self.options.patients or SIZES[self.options.size][1]

    @property
    def n_slices(self) -> int:
        return self.options.slices_per_patient or SIZES[self.options.size][2]

    @property
    def i0(self) -> float:
        return float(self.options.i0 or DEFAULT_I0)

    def split_patients(self) -> dict[str, list[int]]:
        default_val, default_test = SIZES[self.options.size][3]
        counts = (self.options.val_patients or default_val, self.options.test_patients or default_test)
        if self.options.val_patients or self.options.test_patients:
            if sum(counts) >= self.n_patients:
                raise UserError(
                    f"{counts[0]} validation + {counts[1]} test patients leave none of {self.n_patients} for training",
                    field="dataset.options.test_patients",
                )
        n_train, n_val, _ = _split_counts(self.n_patients, counts)
        idx = list(range(self.n_patients))
        return {"train": idx[:n_train], "val": idx[n_train : n_train + n_val], "test": idx[n_train + n_val :]}

    def geometry(self, views: int = FULL_VIEWS, *, fine: bool = False) -> Geometry:
        """The scanner seeing the output grid (``fine=False``) or the 2× finer forward grid."""
        geom = clinical_geometry(self.options.geometry, self.image_size, FOV_MM, views)
        return geom.with_image(2 * self.image_size, self.pixel_mm / 2) if fine else geom

    def noise_model(self) -> NoiseModel:
        return NoiseModel(i0=self.i0, electronic_var=self.options.electronic_noise_var)

    def _hash_payload(self) -> dict[str, Any]:
        o = self.options
        return {
            "version": GENERATOR_VERSION,
            "hu_quantum": HU_QUANTUM,
            "size": o.size,
            "geometry": o.geometry,
            "seed": o.seed,
            "patients": self.n_patients,
            "slices": self.n_slices,
            "split": [len(v) for v in self.split_patients().values()],
            "i0": self.i0,
            "electronic_noise_var": o.electronic_noise_var,
            "filter": o.filter,
            # no build device: CPU and CUDA builds agree within BUILD_TOLERANCE_HU (see SynthOptions)
            # only the ndct target adds an array: fbp/phantom keep their (unchanged) cache
            **({"target": "ndct"} if o.target == "ndct" else {}),
        }

    @property
    def cache_folder(self) -> Path:
        return cache.cache_dir("synth", self.options.size, self._hash_payload())

    def _device(self) -> torch.device:
        """Where the FBP runs: ``cpu``, or the *current* CUDA device for ``cuda`` / ``auto`` with a GPU
        (``benchmark.runner.setup_process`` makes the cell's ``cuda:N`` current), not always cuda:0."""
        dev = resolve_device(self.options.build_device, field="dataset.options.build_device")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return dev

    # --- Dataset interface --------------------------------------------------------------------
    def conditions(self) -> list[str]:
        return list(CONDITIONS)

    def image_shape(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    def fingerprint(self) -> str:
        """The cache folder's name (options + generator version) and when its ``meta.json`` was written,
        so a rebuilt cache counts as other data (:meth:`Dataset.fingerprint`)."""
        return cache.fingerprint(self.cache_folder)

    def prepare(self, *, progress: bool = True) -> None:
        cache.ensure_built(self.cache_folder, lambda tmp: self._build(tmp, progress))

    def load(self, split: Split, condition: str, *, epoch: int | None = None, seed: int | None = None) -> PairedSlices:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}", field="split")
        dose, views = parse_condition(condition)
        self.prepare(progress=True)
        d = self.cache_folder / split
        target_fbp, phantom = cache.open_array(d / "target_fbp.npy"), cache.open_array(d / "phantom.npy")
        clean = target_fbp if views == FULL_VIEWS else cache.open_array(d / f"clean_{views}.npy")
        if split == "train" and self.options.redraw_train_noise and epoch is not None:
            inputs = self._redraw(d, dose, views, epoch, seed if seed is not None else 0)
        else:
            inputs = cache.open_array(d / f"{condition}.npy")
        if self.options.target == "ndct":
            targets, other = cache.open_array(d / "ndct.npy"), target_fbp
        else:
            targets, other = (target_fbp, phantom) if self.options.target == "fbp" else (phantom, target_fbp)
        patients = np.load(d / "patients.npy")
        return PairedSlices(
            inputs=inputs,
            targets=targets,
            patients=patients,
            slice_ids=np.load(d / "slice_ids.npy"),
            condition=condition,
            split=split,
            pixel_spacing_mm=self.pixel_mm,
            positions_mm=self.slice_positions_mm(len(patients)),
            extra={
                "dose": dose / 100,
                "views": views,
                "target_kind": self.options.target,
                "other_target": other,
                "clean_fbp": clean,
                "roi": cache.open_array(d / "roi.npy"),
                "regions": np.load(d / "regions.npy"),
            },
        )

    def slice_positions_mm(self, rows: int) -> np.ndarray:
        """Table positions of ``rows`` stored slices: each patient's ``slices_per_patient`` rows are its
        neighbouring slices in order, ``SLICE_MM`` apart and centred on 0 (:func:`patient_slices`)."""
        k = self.n_slices
        return np.tile((np.arange(k) - (k - 1) / 2) * SLICE_MM, rows // k)

    def describe(self) -> dict[str, Any]:
        g = self.geometry()
        out = super().describe()
        out.update(
            image_size=self.image_size,
            pixel_mm=self.pixel_mm,
            patients=self.n_patients,
            slices_per_patient=self.n_slices,
            split_patients={k: len(v) for k, v in self.split_patients().items()},
            conditions=list(CONDITIONS),
            i0_per_ray_per_view=self.i0,
            geometry={"kind": g.kind, "channels": g.channels, "sid_mm": g.sid_mm, "sdd_mm": g.sdd_mm,
                      "fov_mm": FOV_MM, "full_views": FULL_VIEWS},
            cache=str(self.cache_folder),
            built=cache.is_built(self.cache_folder),
        )
        return out

    # --- building -----------------------------------------------------------------------------
    def _noise_rng(self, patient: int, dose: int, views: int, epoch: int | None = None, seed: int = 0):
        key = [self.options.seed, patient, dose, views] + ([] if epoch is None else [1, seed, epoch])
        return np.random.default_rng(key)

    def _project_all(self, indices: list[int], progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """Phantoms ``(S, N, N)`` (output grid) and 720-view line integrals ``(S, V, C)`` of all slices
        of patients ``indices``, in that order. All slices go through one projector call, so the
        projection matrix (built block by block when it is too large to cache) is built once."""
        k = self.n_slices
        grid = Grid(2 * self.image_size, self.pixel_mm / 2)
        fine = np.empty((len(indices) * k, grid.size, grid.size), dtype=np.float32)
        for j, i in enumerate(tqdm(indices, desc=f"synth {self.options.size}: phantoms", unit="patient",
                                   disable=not progress)):
            fine[j * k : (j + 1) * k] = patient_slices(self.options.seed, i, k, grid, slice_mm=SLICE_MM)
        if progress:
            tqdm.write(f"synth {self.options.size}: projecting {len(fine)} slices at {FULL_VIEWS} views …")
        # on the CPU wherever the build runs: the Poisson draws depend on these values (a rounding
        # difference could change a rejection-sampling step and with it the whole noise stream)
        sino = project_hu(fine, self.geometry(fine=True), device="cpu")
        return downsample2(fine), sino

    def _simulate_group(self, indices: list[int], phantom: np.ndarray, sino: np.ndarray,
                        device: torch.device) -> dict[str, np.ndarray]:
        """All arrays of the slices of patients ``indices`` (their phantoms and clean sinograms given),
        concatenated in that order. The slices of several patients share each FBP call; the noise
        of each patient and condition comes from its own seed, so grouping never changes the arrays.
        """
        k = self.n_slices
        out: dict[str, np.ndarray] = {"phantom": phantom, "sino_clean": sino}
        model = self.noise_model()
        for views in VIEWS:
            sub = np.ascontiguousarray(sino[:, :: FULL_VIEWS // views])
            g = self.geometry(views)
            noisy = [sub]  # the clean sinogram first, then one per dose
            for dose in DOSES_PERCENT:
                noisy.append(np.concatenate([
                    add_noise(sub[j * k : (j + 1) * k], g, model, dose / 100, self._noise_rng(i, dose, views))
                    for j, i in enumerate(indices)
                ]))
            recon = reconstruct_hu(np.concatenate(noisy), g, filter_name=self.options.filter, device=device)
            s = len(indices) * k
            out["target_fbp" if views == FULL_VIEWS else f"clean_{views}"] = recon[:s]
            for m, dose in enumerate(DOSES_PERCENT, start=1):
                out[condition_name(dose, views)] = recon[m * s : (m + 1) * s]
        if self.options.target == "ndct":  # its own FBP call: the other arrays stay bit-identical
            g = self.geometry(FULL_VIEWS)
            ndct = np.concatenate([
                add_noise(sino[j * k : (j + 1) * k], g, model, 1.0, self._ndct_rng(i)) for j, i in enumerate(indices)
            ])  # fmt: skip
            out["ndct"] = reconstruct_hu(ndct, g, filter_name=self.options.filter, device=device)
        out["roi"] = np.stack([uniform_roi(p, self.pixel_mm) for p in out["phantom"]])
        return out

    def _ndct_rng(self, patient: int) -> np.random.Generator:
        """The ndct target's noise: 100 % dose, 720 views, a stream of its own (``NDCT_STREAM``)."""
        return np.random.default_rng([self.options.seed, patient, 100, FULL_VIEWS, NDCT_STREAM])

    def _redraw(self, d: Path, dose: int, views: int, epoch: int, seed: int) -> np.ndarray:
        """Fresh training noise for ``(seed, epoch)``: re-simulate counts from the stored sinograms."""
        sino = cache.open_array(d / "sino_clean.npy")
        patients = np.load(d / "patients.npy")
        g = self.geometry(views)
        out = np.empty((sino.shape[0], self.image_size, self.image_size), dtype=np.float32)
        model = self.noise_model()
        for name in dict.fromkeys(patients.tolist()):
            rows = np.flatnonzero(patients == name)
            sub = np.ascontiguousarray(sino[rows][:, :: FULL_VIEWS // views])
            noisy = add_noise(sub, g, model, dose / 100, self._noise_rng(int(name[1:]), dose, views, epoch, seed))
            out[rows] = reconstruct_hu(noisy, g, filter_name=self.options.filter, device=self._device())
        return out

    def _build(self, tmp: Path, progress: bool) -> dict[str, Any]:
        device = self._device()
        n = self.image_size
        splits = self.split_patients()
        arrays: dict[str, dict[str, np.memmap]] = {}
        names = ["phantom", "target_fbp", "roi", *(f"clean_{v}" for v in VIEWS if v != FULL_VIEWS), *CONDITIONS]
        if self.options.target == "ndct":
            names.append("ndct")
        for split, members in splits.items():
            s = len(members) * self.n_slices
            arrays[split] = {k: cache.new_array(tmp / split / f"{k}.npy", (s, n, n), np.bool_ if k == "roi" else np.float32)
                             for k in names}
            if split == "train":
                g = self.geometry(fine=True)
                arrays[split]["sino_clean"] = cache.new_array(tmp / split / "sino_clean.npy", (s, g.views, g.channels))
            pats = [f"P{i:03d}" for i in members for _ in range(self.n_slices)]
            np.save(tmp / split / "patients.npy", np.array(pats))
            np.save(tmp / split / "slice_ids.npy", np.array([f"P{i:03d}/{k:03d}" for i in members for k in range(self.n_slices)]))
            np.save(tmp / split / "regions.npy", np.array([patient_kind(i) for i in members for _ in range(self.n_slices)]))
        per_group = max(1, GROUP_SLICES // self.n_slices)
        groups = [
            (split, pos, members[pos : pos + per_group])
            for split, members in splits.items()
            for pos in range(0, len(members), per_group)
        ]
        everyone = [i for members in splits.values() for i in members]
        phantoms, sinos = self._project_all(everyone, progress)
        row_of = {i: j * self.n_slices for j, i in enumerate(everyone)}
        bar = tqdm(total=self.n_patients, desc=f"synth {self.options.size}: noise and FBP", unit="patient",
                   disable=not progress)
        for split, pos, idx in groups:
            rows_all = np.concatenate([np.arange(row_of[i], row_of[i] + self.n_slices) for i in idx])
            sim = self._simulate_group(idx, phantoms[rows_all], sinos[rows_all], device)
            rows = slice(pos * self.n_slices, (pos + len(idx)) * self.n_slices)
            for key, arr in arrays[split].items():
                arr[rows] = sim[key]
            bar.update(len(idx))
        bar.close()
        for per_split in arrays.values():
            for arr in per_split.values():
                arr.flush()
        del arrays
        g = self.geometry()
        return {
            "kind": "synth",
            "generator_version": GENERATOR_VERSION,
            "hash_payload": self._hash_payload(),
            "image_size": n,
            "pixel_mm": self.pixel_mm,
            "splits": {k: [f"P{i:03d}" for i in v] for k, v in splits.items()},
            "conditions": list(CONDITIONS),
            "geometry": {"kind": g.kind, "channels": g.channels, "fan_spacing_rad": g.fan_spacing_rad,
                         "channel_mm": g.channel_mm, "sid_mm": g.sid_mm, "sdd_mm": g.sdd_mm, "fov_mm": FOV_MM},
            "i0_per_ray_per_view": self.i0,
            "dose_is_per_view": True,
        }


def noise_std_hu(pairs: PairedSlices) -> float:
    """Noise standard deviation in HU: std of ``input − clean FBP`` (same views) over the uniform ROI."""
    return difference_noise_std(pairs.inputs, pairs.extra["clean_fbp"], pairs.extra["roi"])


__all__ = ["CONDITIONS", "DOSES_PERCENT", "GENERATOR_VERSION", "SIZES", "VIEWS", "SynthDataset", "SynthOptions",
           "noise_std_hu"]
