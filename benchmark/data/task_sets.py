"""Signal-present / signal-absent realisations of the task objects, simulated like the ``synth`` dataset.

For a test object (:mod:`benchmark.data.task_phantoms`: ``cct189``, ``rods``, or ``lesions`` in an
abdomen slice) and a condition ``<dose>_<views>`` of a :class:`~benchmark.data.synth.SynthDataset`, a
*task set* holds ``n`` signal-present and ``n`` signal-absent images with independent noise, made with
the dataset's own physics and pixel grid: the object is rasterised on the 2× finer grid, projected once
per class at 720 views on the CPU (``SynthDataset.geometry(fine=True)``, ``simulate.project_hu``); every
realisation then only redraws the photon counts (``simulate.add_noise`` with the dataset's
``noise_model()``, at the condition's dose and every ``720/views``-th view) and is reconstructed with
``simulate.reconstruct_hu`` (the dataset's filter and build device) on the output grid, HU on the
``HU_QUANTUM`` grid. The noiseless FBP of each class (``mean_present``, ``mean_absent``: the mean images
up to the small bias of the log of Poisson counts) and the 2×2-averaged objects are stored with them.
The default ``REALISATIONS = 200`` per class is what the observers need (fewer leave a channelised
Hotelling template and its AUC too noisy to use).

**Noise streams.** Realisation ``i`` of class ``c`` (0 present, 1 absent) uses the generator keyed
``[seed, TASK_STREAM, object, dose, views, c, i]`` (``seed`` the dataset's, ``object`` the index in
``OBJECTS``); the dataset's own keys begin ``[seed, patient, …]`` with patient indices far below
``TASK_STREAM``, so no task stream is a dataset stream. A realisation depends only on its key, so the
first ``k`` images of a set of ``n > k`` are the set of ``k``.

**Cache** (:mod:`benchmark.data.cache`, next to the synth cache):
``<cache_root>/synth_tasks/<size>-<object>-<condition>-n<n>-<hash>/`` with ``present.npy`` and
``absent.npy`` ``(n, H, W)`` float32 HU, ``mean_present.npy``, ``mean_absent.npy``,
``object_present.npy``, ``object_absent.npy`` ``(H, W)`` and ``meta.json`` (inserts on the output grid,
the hash payload); no pickle. The hash covers ``TASK_VERSION``, the synth cache folder's name (the
dataset's options and ``GENERATOR_VERSION``), the object, condition and ``n``.

**Cost** (``size: small`` = 256², ``cct189``, ``25_360``, 200 + 200 realisations, built on the CPU with
one thread, a 2-core Intel Xeon shared with another job): 19.7 s and 28.7 s in two runs (~5 s projecting
the two classes at 720 views, ~3.5 s drawing the counts, the rest the 402 FBPs), about 52 MB per
class on disk. Printed by::

    LDCT_BENCH_CACHE=$(mktemp -d) OMP_NUM_THREADS=1 python -c "import time; \\
    from benchmark.data import open_dataset; from benchmark.data.task_sets import task_set; \\
    ds = open_dataset('synth', {'size': 'small', 'build_device': 'cpu'}); t = time.perf_counter(); \\
    task_set(ds, 'cct189', '25_360'); print(f'{time.perf_counter() - t:.1f} s')"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from benchmark.core.errors import UserError
from benchmark.data import cache
from benchmark.data.phantoms import Grid, downsample2, patient_kind, patient_slices
from benchmark.data.simulate import HU_QUANTUM, add_noise, project_hu, reconstruct_hu
from benchmark.data.synth import FULL_VIEWS, SLICE_MM, SynthDataset, parse_condition
from benchmark.data.task_phantoms import Insert, TaskObject, cct189, insert_lesions, rod_phantom

TASK_VERSION = "task-sets-1"  # bump when anything that changes the arrays changes
OBJECTS: tuple[str, ...] = ("cct189", "rods", "lesions")
CLASSES: tuple[str, ...] = ("present", "absent")
REALISATIONS = 200
TASK_STREAM = 2_000_022  # second word of every task noise key; larger than any patient index
_CHUNK = 32  # realisations reconstructed per FBP call


@dataclass(frozen=True)
class TaskSet:
    """``n`` signal-present and ``n`` signal-absent images ``(n, H, W)`` float32 HU (read-only memory maps),
    the noiseless FBP of each class ``(H, W)``, the inserts (centres in pixels of the output grid), the
    pixel size, the condition and the object's name."""

    present: np.ndarray
    absent: np.ndarray
    mean_present: np.ndarray
    mean_absent: np.ndarray
    inserts: tuple[Insert, ...]
    pixel_mm: float
    condition: str
    obj: str

    @property
    def n(self) -> int:
        return int(self.present.shape[0])


def _check_object(obj: str) -> None:
    if obj not in OBJECTS:
        raise UserError(f"unknown task object {obj!r}; valid: {', '.join(OBJECTS)}", field="object")


def lesion_patient(dataset: SynthDataset) -> int:
    """The patient whose slice carries the lesions: the first of the test split (an unseen anatomy)."""
    return dataset.split_patients()["test"][0]


def task_object(dataset: SynthDataset, obj: str) -> TaskObject:
    """Test object ``obj`` on the dataset's fine forward grid (``2N`` pixels of ``pixel_mm / 2``).

    ``lesions``: the central slice of :func:`lesion_patient` painted as an abdomen (the same bytes as
    that test slice when the patient is an abdomen; anatomy seeded by the dataset's seed), lesions
    placed with :func:`~benchmark.data.task_phantoms.insert_lesions` and the dataset's seed.
    """
    _check_object(obj)
    grid = Grid(2 * dataset.image_size, dataset.pixel_mm / 2)
    if obj == "cct189":
        return cct189(grid)
    if obj == "rods":
        return rod_phantom(grid)
    k, seed = dataset.n_slices, dataset.options.seed
    background = patient_slices(seed, lesion_patient(dataset), k, grid, slice_mm=SLICE_MM, kind="abdomen")[k // 2]
    return insert_lesions(background, grid, seed=seed)


def task_rng(seed: int, obj: str, condition: str, cls: str, index: int) -> np.random.Generator:
    """The noise generator of realisation ``index`` of class ``cls`` (see the module docstring)."""
    dose, views = parse_condition(condition)
    return np.random.default_rng([seed, TASK_STREAM, OBJECTS.index(obj), dose, views, CLASSES.index(cls), index])


def _hash_payload(dataset: SynthDataset, obj: str, condition: str, n: int) -> dict[str, Any]:
    return {"version": TASK_VERSION, "synth": dataset.cache_folder.name, "object": obj, "condition": condition,
            "n": n, "hu_quantum": HU_QUANTUM}


def task_folder(dataset: SynthDataset, obj: str, condition: str, n: int = REALISATIONS) -> Path:
    """The cache folder of a task set (built or not)."""
    label = f"{dataset.options.size}-{obj}-{condition}-n{n}"
    return cache.cache_dir("synth_tasks", label, _hash_payload(dataset, obj, condition, n))


def _build(dataset: SynthDataset, obj: str, condition: str, n: int, tmp: Path, progress: bool) -> dict[str, Any]:
    dose, views = parse_condition(condition)
    thing = task_object(dataset, obj)
    # the clean line integrals on the CPU wherever the FBP runs, as the dataset does (the Poisson draws
    # depend on them); one projection per class, the noise is redrawn per realisation
    sino = project_hu(np.stack([thing.present, thing.absent]), dataset.geometry(fine=True), device="cpu")
    sub = np.ascontiguousarray(sino[:, :: FULL_VIEWS // views])
    geom, model, device = dataset.geometry(views), dataset.noise_model(), dataset._device()
    means = reconstruct_hu(sub, geom, filter_name=dataset.options.filter, device=device)
    size = dataset.image_size
    bar = tqdm(total=2 * n, desc=f"task set {obj} {condition}", unit="image", disable=not progress)
    for c, cls in enumerate(CLASSES):
        out = cache.new_array(tmp / f"{cls}.npy", (n, size, size))
        for i0 in range(0, n, _CHUNK):
            idx = range(i0, min(i0 + _CHUNK, n))
            noisy = np.concatenate([
                add_noise(sub[c : c + 1], geom, model, dose / 100, task_rng(dataset.options.seed, obj, condition, cls, i))
                for i in idx
            ])  # fmt: skip
            out[idx.start : idx.stop] = reconstruct_hu(noisy, geom, filter_name=dataset.options.filter, device=device)
            bar.update(len(idx))
        out.flush()
        del out
        np.save(tmp / f"mean_{cls}.npy", means[c])
        np.save(tmp / f"object_{cls}.npy", downsample2(thing.present if c == 0 else thing.absent))
    bar.close()
    out_grid = Grid(size, dataset.pixel_mm)
    return {
        "kind": "synth_tasks",
        "task_version": TASK_VERSION,
        "hash_payload": _hash_payload(dataset, obj, condition, n),
        "synth_cache": dataset.cache_folder.name,
        "object": obj,
        "condition": condition,
        "dose_percent": dose,
        "views": views,
        "n": n,
        "image_size": size,
        "pixel_mm": dataset.pixel_mm,
        "inserts": [ins.on(out_grid).to_json() for ins in thing.inserts],
        "noise_key": "[seed, TASK_STREAM, object index, dose, views, class index, realisation]",
        "seed": dataset.options.seed,
        "task_stream": TASK_STREAM,
        **({"lesion_patient": lesion_patient(dataset), "lesion_patient_kind": patient_kind(lesion_patient(dataset))}
           if obj == "lesions" else {}),
    }


def task_set(dataset: SynthDataset, obj: str, condition: str, n: int = REALISATIONS, *,
             progress: bool = False) -> TaskSet:
    """The task set of ``obj`` at ``condition`` with ``n`` realisations per class, built into the cache on
    first use (atomically, under a file lock) and memory-mapped from it afterwards."""
    _check_object(obj)
    parse_condition(condition)
    if n < 1:
        raise UserError(f"a task set needs at least one realisation per class, got {n}", field="n")
    folder = task_folder(dataset, obj, condition, n)
    meta = cache.ensure_built(folder, lambda tmp: _build(dataset, obj, condition, n, tmp, progress))
    return TaskSet(
        present=cache.open_array(folder / "present.npy"),
        absent=cache.open_array(folder / "absent.npy"),
        mean_present=cache.open_array(folder / "mean_present.npy"),
        mean_absent=cache.open_array(folder / "mean_absent.npy"),
        inserts=tuple(Insert(**ins) for ins in meta["inserts"]),
        pixel_mm=float(meta["pixel_mm"]),
        condition=condition,
        obj=obj,
    )


__all__ = ["CLASSES", "OBJECTS", "REALISATIONS", "TASK_VERSION", "TaskSet", "lesion_patient", "task_folder",
           "task_object", "task_rng", "task_set"]
