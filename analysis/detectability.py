"""Task-based image quality in ``ldct-bench analyze`` (issue #22 §4): model-observer detectability (d′, AUC)
and the task transfer function (TTF) of every cell's denoiser, of the LDCT input and of the NDCT reference,
on simulated signal-present / signal-absent realisations (:mod:`benchmark.data.task_sets`), with the
estimators of :mod:`analysis.metrics.task`. Off unless the matrix sets ``evaluation.task``
(:class:`benchmark.config.TaskConfig`); ``synth`` datasets only.

**What is computed.** For every analysed cell at its final epoch (``epochs: final``) or at every epoch
``analyze`` scores (``epochs: scored``), the cell's generator denoises the ``n`` signal-present and ``n``
signal-absent realisations of each test object at the cell's dose condition
(:func:`benchmark.evaluate.denoise`, batched, the scoring's device and batch size). The same
analysis runs on the realisations themselves ("LDCT input", no denoising) at **every** dose of the dataset
at each view count of the matrix (``10, 25, 50, 100 % × views``: the curve the dose-equivalent is read
from) and on the NDCT reference (``100_720``, no denoising). Per insert of ``cct189`` / ``lesions``:

* **ROI**: the ``r × r`` square centred on the insert's pixel, ``r = max(9, 2⌈1.5·D/Δ⌉ + 1)`` (``D`` the
  diameter, ``Δ`` the pixel), each ROI minus its own mean (:func:`analysis.metrics.task.signal_rois`).
* **Observers** (``observers:``): ``lg_cho`` (5 Laguerre–Gauss channels of width ``a`` chosen by
  :func:`analysis.metrics.task.lg_width` on the noiseless NDCT signal of that insert), ``gabor_cho`` (Gabor
  channels: the octaves ``[1/8, 1/4], [1/16, 1/8], …`` cycles/px whose envelope FWHM fits in the ROI,
  orientations 0/45/90/135°, even and odd phase), ``npw`` (the ROI pixels), ``npwe`` (the ROI pixels filtered
  by the eye filter :class:`analysis.metrics.task.EyeFilter` at its defaults); the NPW and NPWE templates
  are ring averages of the mean difference about the insert's centre
  (:func:`analysis.metrics.task.observers.radial_npw_template`: a pixel template trained on 100 images per
  class was dominated by its own noise, d′ 0.45 against 0.87) and ``ho`` (the Hotelling
  observer on the raw pixels of the central ``s × s`` square, ``s`` even and ``s² ≤ (n − 2)/2`` so its
  held-out template has twice as many degrees of freedom as pixels).
* **Estimators** (:data:`ESTIMATORS`): ``dprime_heldout`` (50 seeded resplits, mean ± sd over splits),
  ``snr2_unbiased`` and ``dprime_unbiased`` (Hotelling-type observers only: the unbiased SNR² with its
  noncentral-F interval, and its square root), ``auc`` (Mann–Whitney AUC of two-fold cross-validated
  decision variables: each half scored by the template trained on the other half, standardised by that
  training half's decision variables and pooled; percentile bootstrap over images, 2000 resamples), and, when ``rods`` is analysed too, ``dprime_fourier``: the
  TG-233 d′ from the TTF of the rod closest in contrast and the NPS of the signal-absent images' noise
  (each realisation minus the mean of the realisations, in the insert's ROI), PW for the Hotelling-type
  observers, NPW and NPWE for those, and for NPW/NPWE ``dprime_model``: the image-domain d′ of the
  Fourier model's own template (:func:`analysis.metrics.task.model_template`, the disk through that TTF)
  applied unchanged to all the images. ``flag`` is True when ``dprime_model`` and the Fourier d′ disagree
  by more than ±25 % (the linear, stationary model does not describe the output), or a CHO/HO's held-out
  d′ exceeds the PW d′ (its bound) by more than 25 % (:func:`analysis.metrics.task.compare_dprime`). The
  held-out NPW is not compared: its template is learnt from 100 noisy images per class, which costs it
  10–25 % of d′ near d′ = 1 and more below, and that bias would be flagged as a model failure.

Per rod of ``rods``: the TG-233 TTF of the mean of the ``n`` signal-present realisations
(:func:`analysis.metrics.task.task_transfer_function`, known centre, on a window of half-side
``⌈2R/Δ⌉ + 2``), with ``f50``, ``f10`` and the measured contrast as rows (observer ``ttf``), the curves in
``ttf.parquet``. The same seeds (resplits, folds, bootstrap) are used for every source, so the sources are
compared on the same splits; an identity denoiser gives the input's numbers exactly.

**Crops.** A network's output at a pixel depends on the input within its receptive field only (for the
convolutional architectures), so the analysis denoises a crop around the analysed pixels: the union of the
ROIs and rod windows, widened by the measured influence radius + 4 px (:func:`influence_radius`: how far
the output changes when one input pixel is changed by 1000 HU) and aligned to 16 px (the pooling grid of
down-sampling networks). Each crop is checked on the object's first realisation: the crop's and the whole
image's outputs must agree within :data:`CROP_TOLERANCE_HU` at every analysed pixel, else (global
operators: attention, instance norm) the whole images are denoised. ``tests/test_detectability.py`` shows
DnCNN and RED-CNN crops agree with whole images to that tolerance.

**Outputs** (``<out>/analysis/``, file names: :mod:`benchmark.layout`): ``detectability.parquet``
(:data:`COLUMNS`; input and NDCT rows have empty ``cell``/``loss``/``architecture``, ``seed`` and ``epoch``
−1 and ``dose`` = their condition), ``ttf.parquet`` (:data:`TTF_COLUMNS`) and ``detectability_settings.json``
(ROIs, channel widths, observers, eye filter).

**Cache.** One pair of parquet files per checkpoint (``cache/_task/<cell>/epoch_<NNN>.parquet`` and
``.ttf.parquet``) and per reference condition (``cache/_task/_reference/<condition>.parquet``), stamped with
a key: the checkpoint file's sha256 (``reference`` for the input), the task-set folders used (their names
hash the dataset, object, condition and ``n``), the settings and :data:`VERSION`. A rerun computes nothing
whose key is unchanged; each file is written atomically as soon as it is computed, so an interrupted
analysis keeps what it finished. With ``--jobs N`` worker processes fill the caches, sharded by cell like
the scoring (:mod:`analysis.shards`), the reference conditions spread over the same workers; this process
then reads every value from the caches, so the tables equal a ``--jobs 1`` run's.

**Cost** (one 256² RED-CNN cell, ``redcnn-c32`` of ``small.yaml``, at ``25_360``; 200 + 200 realisations;
``cct189`` + ``rods``; ``lg_cho``, ``npw``, ``npwe``; 2 threads of a 2-core Xeon shared with other jobs, load
5–9; ``/work/exp/taskiq/task_cost.py``): the 10 task sets (2 objects × the 4 input doses at 360 views + the
NDCT; built once per dataset, cached across runs) 348 s CPU; the checkpoint 60.5 s CPU (313 s wall under that
load), almost all of it denoising the 600 crops (112×128 px for ``cct189``, 160×160 px for ``rods``, which
equalled the whole images' outputs bit for bit at the analysed pixels); the input and NDCT conditions about 1.2
s CPU each (no network); a rerun 0.1 s.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from tqdm.auto import tqdm

from analysis.metrics.nps import estimate_nps
from analysis.metrics.task import (
    EyeFilter,
    auc_mann_whitney,
    compare_dprime,
    decision_variables,
    eye_filter_rois,
    fourier_dprime,
    gabor,
    heldout_dprime,
    laguerre_gauss,
    lg_width,
    model_template,
    signal_rois,
    snr2_unbiased,
    task_transfer_function,
)
from analysis.metrics.task.detectability import N_SPLITS, dprime_of
from analysis.metrics.task.observers import hotelling_template, radial_npw_template
from analysis.scoring_plan import cells_to_analyse, epochs_to_score, skip_checkpoint
from analysis.shards import assign_shards, call_in_worker, check_jobs, parse_devices, run_in_workers
from benchmark.checkpoint import CheckpointError, load_checkpoint, load_model
from benchmark.config import TaskConfig
from benchmark.core.device import assign_devices, resolve_device
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write, atomic_write_text
from benchmark.core.kernels import apply_kernels
from benchmark.data import open_dataset
from benchmark.data.synth import DOSES_PERCENT, SynthDataset, condition_name, parse_condition
from benchmark.data.task_sets import TaskSet, task_folder, task_set
from benchmark.evaluate import denoise
from benchmark.layout import DETECTABILITY, DETECTABILITY_SETTINGS, TTF_CURVES, CellInfo, RunLayout
from models import spatial_dims

VERSION = "task-iq-3"  # bump when anything that changes the cached numbers changes
NDCT_CONDITION = "100_720"
SOURCE_MODEL, SOURCE_INPUT, SOURCE_NDCT = "model", "input", "ndct"
DETECTION_OBJECTS = ("cct189", "lesions")
TTF_OBJECT = "rods"
HOTELLING_OBSERVERS = ("lg_cho", "gabor_cho", "ho")
OBSERVERS: dict[str, str] = {  # what each name of evaluation.task.observers computes (module docstring)
    "lg_cho": "CHO, 5 Laguerre–Gauss channels (width a from the noiseless NDCT signal)",
    "gabor_cho": "CHO, Gabor channels (octaves up to 1/4 cycles/px that fit the ROI, 4 orientations, 2 phases)",
    "npw": "non-prewhitening matched filter on the ROI pixels",
    "npwe": "NPW on the eye-filtered ROI pixels",
    "ho": "Hotelling observer on the raw pixels of the central s × s square",
}
FOURIER_OBSERVER = {"lg_cho": "pw", "gabor_cho": "pw", "ho": "pw", "npw": "npw", "npwe": "npwe"}
ESTIMATORS: dict[str, str] = {
    "dprime_heldout": "held-out d′: template trained on a random half of each class, d′ of the other half; "
                      f"mean ± sd over {N_SPLITS} seeded resplits (biased low by the template's estimation noise: "
                      "Hotelling templates, and NPW/NPWE templates of many pixels)",
    "snr2_unbiased": "unbiased Hotelling SNR² with estimated class means (Fukunaga; cf. Wunderlich & Noo 2009), "
                     "exact sd and 95 % noncentral-F interval",
    "dprime_unbiased": "√max(SNR²_unbiased, 0) with the square roots of the SNR² interval (not itself unbiased)",
    "auc": "Mann–Whitney AUC of two-fold cross-validated decision variables (each half scored by the template of "
           "the other, standardised by its training half), 95 % percentile bootstrap over images",
    "dprime_fourier": "TG-233 d′ from the TTF (rod closest in contrast) and the NPS of the signal-absent noise; "
                      "flag: NPW/NPWE: dprime_model differs from it by more than ±25 %; CHO/HO: the held-out d′ "
                      "exceeds it (the PW d′, their bound) by more than 25 %",
    "dprime_model": "NPW/NPWE with rods: d′ of the Fourier model's own template (the disk through the TTF, ·E² for "
                    "NPWE) applied unchanged to all images; no template-estimation bias",
    "f50": "TTF f50 (cycles/mm)", "f10": "TTF f10 (cycles/mm)", "contrast_hu": "measured rod contrast (HU)",
}  # fmt: skip
N_BOOT = 2000
SEED = 0
MIN_ROI = 9
CROP_ALIGN = 16
CROP_SAFETY_PX = 4
CROP_TOLERANCE_HU = 0.01
POKE_HU = 1000.0
GABOR_TOP = 0.25  # cycles/px: the highest Gabor band is [1/8, 1/4]

KEY_COLUMNS = ["cell", "loss", "architecture", "dose", "seed", "epoch", "source", "condition"]
VALUE_COLUMNS = ["object", "insert", "diameter_mm", "contrast_hu", "observer", "estimator", "value", "sd",
                 "ci_low", "ci_high", "n_per_class", "flag"]  # fmt: skip
COLUMNS = [*KEY_COLUMNS, *VALUE_COLUMNS]
TTF_VALUE_COLUMNS = ["object", "insert", "contrast_hu", "f", "ttf"]
TTF_COLUMNS = [*KEY_COLUMNS, *TTF_VALUE_COLUMNS]


# ----------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class InsertPlan:
    """One detection insert: its centre pixel ``(row, col)`` on the full image, the ROI side, the LG channel
    width (px), the Hotelling square's side and the Gabor bands that fit the ROI."""

    name: str
    diameter_mm: float
    contrast_hu: float
    row: int
    col: int
    roi: int
    lg_width_px: float
    ho_side: int
    gabor_bands: tuple[tuple[float, float], ...]

    def top_left(self, side: int) -> tuple[int, int]:
        """Top-left pixel of the ``side × side`` square whose centre pixel ``side // 2`` is the insert's."""
        return self.row - side // 2, self.col - side // 2


@dataclass(frozen=True)
class RodPlan:
    """One TTF rod: nominal contrast, fractional centre ``(row, col)``, radius (px), window half-side (px)."""

    name: str
    diameter_mm: float
    contrast_hu: float
    row: float
    col: float
    radius_px: float
    half: int

    @property
    def top_left(self) -> tuple[int, int]:
        return round(self.row) - self.half, round(self.col) - self.half


@dataclass(frozen=True)
class ObjectPlan:
    """What is analysed in one object's images (``shape`` the full image)."""

    obj: str
    pixel_mm: float
    shape: tuple[int, int]
    inserts: tuple[InsertPlan, ...] = ()
    rods: tuple[RodPlan, ...] = ()

    def region(self) -> tuple[int, int, int, int]:
        """``(r0, r1, c0, c1)``: the smallest box holding every analysed pixel (ROIs, rod windows)."""
        boxes = [(*ins.top_left(ins.roi), ins.roi) for ins in self.inserts]
        boxes += [(*rod.top_left, 2 * rod.half + 1) for rod in self.rods]
        r0, c0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        r1, c1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[2] for b in boxes)
        return r0, r1, c0, c1


def roi_side(diameter_mm: float, pixel_mm: float) -> int:
    """``max(MIN_ROI, 2⌈1.5·D/Δ⌉ + 1)``: odd, about three diameters."""
    return max(MIN_ROI, 2 * math.ceil(1.5 * diameter_mm / pixel_mm) + 1)


def ho_side(n_per_class: int, roi: int) -> int:
    """The Hotelling square's side: even, ``s² ≤ (n − 2)/2``, at most the ROI (module docstring)."""
    s = 2 * int(math.sqrt((n_per_class - 2) / 2) // 2)
    return max(2, min(s, roi - roi % 2))


def gabor_bands(roi: int) -> tuple[tuple[float, float], ...]:
    """The octaves ``[f/2, f]``, ``f = 1/4, 1/8, …`` cycles/px whose envelope FWHM ``4 ln2 / (π·(f − f/2))``
    fits in the ROI (at least the highest)."""
    bands: list[tuple[float, float]] = []
    hi = GABOR_TOP
    while not bands or 4 * math.log(2) / (math.pi * hi / 2) <= roi:
        bands.append((hi / 2, hi))
        hi /= 2
    return tuple(bands)


def _check_inside(name: str, top: int, left: int, side: int, shape: tuple[int, int]) -> None:
    if top < 0 or left < 0 or top + side > shape[0] or left + side > shape[1]:
        raise UserError(f"the {side}×{side} px region of {name} leaves the {shape[0]}×{shape[1]} image; the task "
                        "objects need a larger image (dataset size)", field="evaluation.task")  # fmt: skip


def object_plan(obj: str, reference: TaskSet, n_per_class: int) -> ObjectPlan:
    """The plan of ``obj`` from its NDCT task set (inserts, pixel size; the LG widths from its noiseless
    mean images), for ``n_per_class`` realisations."""
    px = reference.pixel_mm
    shape = tuple(int(x) for x in reference.present.shape[1:])
    assert len(shape) == 2
    if obj == TTF_OBJECT:
        rods = []
        for ins in reference.inserts:
            radius = ins.radius_mm / px
            rod = RodPlan(ins.name, ins.diameter_mm, ins.contrast_hu, ins.row, ins.col, radius, math.ceil(2 * radius) + 2)
            _check_inside(rod.name, *rod.top_left, 2 * rod.half + 1, shape)
            rods.append(rod)
        return ObjectPlan(obj, px, shape, rods=tuple(rods))  # type: ignore[arg-type]
    signal = np.asarray(reference.mean_present, np.float64) - np.asarray(reference.mean_absent, np.float64)
    inserts = []
    for ins in reference.inserts:
        row, col, roi = round(ins.row), round(ins.col), roi_side(ins.diameter_mm, px)
        plan = InsertPlan(ins.name, ins.diameter_mm, ins.contrast_hu, row, col, roi, 0.0, ho_side(n_per_class, roi),
                          gabor_bands(roi))  # fmt: skip
        top, left = plan.top_left(roi)
        _check_inside(ins.name, top, left, roi, shape)  # type: ignore[arg-type]
        sig = signal_rois(signal[top : top + roi, left : left + roi], (roi // 2, roi // 2), roi)[0]
        inserts.append(replace(plan, lg_width_px=round(lg_width(sig, bounds=(0.5, roi / 2)), 4)))
    return ObjectPlan(obj, px, shape, inserts=tuple(inserts))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ image analysis


@dataclass(frozen=True)
class Images:
    """Realisations of one object as analysed: ``present`` / ``absent`` ``(n, h, w)`` HU (``absent`` None for
    the rods) holding the full image's pixels from ``origin = (row, col)`` on."""

    present: np.ndarray
    absent: np.ndarray | None
    origin: tuple[int, int] = (0, 0)

    def window(self, which: str, top: int, left: int, side: int) -> np.ndarray:
        """The ``(n, side, side)`` float64 square of the full image at ``(top, left)``."""
        arr = self.present if which == "present" else self.absent
        assert arr is not None
        r, c = top - self.origin[0], left - self.origin[1]
        if r < 0 or c < 0 or r + side > arr.shape[1] or c + side > arr.shape[2]:
            raise ValueError(f"square ({top}, {left}, {side}) outside the analysed region at {self.origin}")
        return np.asarray(arr[:, r : r + side, c : c + side], dtype=np.float64)


def _row(ins: InsertPlan | RodPlan, obj: str, observer: str, estimator: str, value: float, *, n: int,
         sd: float = np.nan, ci: tuple[float, float] = (np.nan, np.nan), flag: bool = False) -> dict[str, Any]:  # fmt: skip
    return {"object": obj, "insert": ins.name, "diameter_mm": ins.diameter_mm, "contrast_hu": ins.contrast_hu,
            "observer": observer, "estimator": estimator, "value": float(value), "sd": float(sd),
            "ci_low": float(ci[0]), "ci_high": float(ci[1]), "n_per_class": int(n), "flag": bool(flag)}  # fmt: skip


def ttf_rows(images: Images, plan: ObjectPlan) -> tuple[list[dict[str, Any]], list[pd.DataFrame], dict[float, tuple]]:
    """TTF of every rod (module docstring): rows (``f50``, ``f10``, ``contrast_hu``), curves and
    ``{nominal contrast: (f, ttf)}`` for the Fourier d′."""
    rows, curves, ttfs = [], [], {}
    n = len(images.present)
    for rod in plan.rods:
        top, left = rod.top_left
        win = images.window("present", top, left, 2 * rod.half + 1)
        res = task_transfer_function(win, rod.radius_px, plan.pixel_mm, centre=(rod.row - top, rod.col - left))
        rows += [_row(rod, plan.obj, "ttf", "f50", res.f50, n=n), _row(rod, plan.obj, "ttf", "f10", res.f10, n=n),
                 _row(rod, plan.obj, "ttf", "contrast_hu", res.contrast_hu, n=n)]  # fmt: skip
        curves.append(pd.DataFrame({"object": plan.obj, "insert": rod.name, "contrast_hu": rod.contrast_hu,
                                    "f": res.f, "ttf": res.ttf}))  # fmt: skip
        ttfs[rod.contrast_hu] = (res.f, res.ttf)
    return rows, curves, ttfs


def crossval_decision_variables(feat_s: np.ndarray, feat_n: np.ndarray, train: Callable, seed: int
                                ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Two-fold cross-validated decision variables: each class split in two random halves; the images of
    each half scored by the template trained on the other half, in the units of that training half (minus
    the midpoint of its two classes' mean decision variables, over their pooled sd), so that the two folds'
    variables can be pooled; returned pooled ``(t_s, t_n)``. Standardised this way they do not change when
    the features go through an invertible affine map (a Hotelling template follows the map)."""
    rng = np.random.default_rng(seed)
    ps, pn = rng.permutation(len(feat_s)), rng.permutation(len(feat_n))
    folds = [(ps[: len(ps) // 2], pn[: len(pn) // 2]), (ps[len(ps) // 2 :], pn[len(pn) // 2 :])]
    t_s, t_n = [], []
    for (train_s, train_n), (test_s, test_n) in (folds, folds[::-1]):
        w = train(feat_s[train_s], feat_n[train_n])
        ts, tn = decision_variables(feat_s[train_s], w), decision_variables(feat_n[train_n], w)
        mid, scale = 0.5 * (ts.mean() + tn.mean()), np.sqrt(0.5 * (ts.var(ddof=1) + tn.var(ddof=1)))
        t_s.append((decision_variables(feat_s[test_s], w) - mid) / scale)
        t_n.append((decision_variables(feat_n[test_n], w) - mid) / scale)
    return np.concatenate(t_s), np.concatenate(t_n)


def _features(observer: str, ins: InsertPlan, images: Images, rois: tuple[np.ndarray, np.ndarray],
              pixel_mm: float, eye: EyeFilter) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(features of the present, of the absent)`` of one observer at one insert."""
    if observer == "ho":
        top, left = ins.top_left(ins.ho_side)
        return tuple(images.window(k, top, left, ins.ho_side).reshape(-1, ins.ho_side**2)
                     for k in ("present", "absent"))  # type: ignore[return-value]
    if observer == "lg_cho":
        u = laguerre_gauss(ins.roi, ins.lg_width_px)
        return rois[0].reshape(len(rois[0]), -1) @ u, rois[1].reshape(len(rois[1]), -1) @ u
    if observer == "gabor_cho":
        u = gabor(ins.roi, bands=ins.gabor_bands, phases=("even", "odd"))
        return rois[0].reshape(len(rois[0]), -1) @ u, rois[1].reshape(len(rois[1]), -1) @ u
    if observer == "npwe":
        return tuple(eye_filter_rois(r, pixel_mm, eye).reshape(len(r), -1) for r in rois)  # type: ignore[return-value]
    if observer == "npw":
        return rois[0].reshape(len(rois[0]), -1), rois[1].reshape(len(rois[1]), -1)
    raise ValueError(f"unknown observer {observer!r}: one of {', '.join(OBSERVERS)}")


def detection_rows(images: Images, plan: ObjectPlan, observers: Sequence[str],
                   ttfs: dict[float, tuple] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every estimator of every observer at every insert of a detection object (module docstring);
    ``ttfs`` (the same source's rods) adds the Fourier d′ cross-check."""
    assert images.absent is not None
    eye = EyeFilter()
    rows: list[dict[str, Any]] = []
    n = min(len(images.present), len(images.absent))
    for ins in plan.inserts:
        top, left = ins.top_left(ins.roi)
        raw = [images.window(k, top, left, ins.roi) for k in ("present", "absent")]
        rois = (signal_rois(raw[0], (ins.roi // 2, ins.roi // 2), ins.roi),
                signal_rois(raw[1], (ins.roi // 2, ins.roi // 2), ins.roi))  # fmt: skip
        nps = None
        if ttfs:
            nps = estimate_nps(raw[1] - raw[1].mean(axis=0), plan.pixel_mm)
            nearest = min(ttfs, key=lambda c: (abs(c - ins.contrast_hu), c))
        for obs in observers:
            fs, fn = _features(obs, ins, images, rois, plan.pixel_mm, eye)
            train = hotelling_template if obs in HOTELLING_OBSERVERS else radial_npw_template
            held = heldout_dprime(fs, fn, observer=train, n_splits=N_SPLITS, seed=SEED)
            rows.append(_row(ins, plan.obj, obs, "dprime_heldout", held.mean, sd=held.sd, n=n))
            if obs in HOTELLING_OBSERVERS:
                snr = snr2_unbiased(fs, fn)
                rows.append(_row(ins, plan.obj, obs, "snr2_unbiased", snr.snr2, sd=snr.sd, ci=(snr.ci_low, snr.ci_high), n=n))
                rows.append(_row(ins, plan.obj, obs, "dprime_unbiased", snr.dprime, ci=snr.dprime_ci, n=n))
            t_s, t_n = crossval_decision_variables(fs, fn, train, SEED)
            auc = auc_mann_whitney(t_s, t_n, n_boot=N_BOOT, seed=SEED)
            rows.append(_row(ins, plan.obj, obs, "auc", auc.auc, ci=(auc.ci_low, auc.ci_high), n=n))
            if nps is not None and ttfs:
                try:
                    fd = fourier_dprime(nps, observer=FOURIER_OBSERVER[obs], diameter_mm=ins.diameter_mm,  # type: ignore[arg-type]
                                        contrast_hu=ins.contrast_hu, ttf=ttfs[nearest], eye=eye)  # fmt: skip
                except ValueError:  # a PW d′ where the NPS estimate has a zero bin: not defined
                    fd = float("nan")
                if obs in HOTELLING_OBSERVERS:  # the CHO/HO against the PW d′, its bound
                    agree = compare_dprime(held.mean, fd, upper_bound=True)
                else:  # the model's own template on the images against the model's d′
                    w = model_template(ins.roi, plan.pixel_mm, diameter_mm=ins.diameter_mm, contrast_hu=ins.contrast_hu,
                                       ttf=ttfs[nearest], observer=FOURIER_OBSERVER[obs], eye=eye)  # type: ignore[arg-type]
                    fixed = dprime_of(decision_variables(rois[0].reshape(len(rois[0]), -1), w.ravel()),
                                      decision_variables(rois[1].reshape(len(rois[1]), -1), w.ravel()))  # fmt: skip
                    rows.append(_row(ins, plan.obj, obs, "dprime_model", fixed, n=n))
                    agree = compare_dprime(fixed, fd)
                rows.append(_row(ins, plan.obj, obs, "dprime_fourier", fd, n=n, flag=agree.flagged))
    return rows


def analyse_source(get_images: Callable[[str, ObjectPlan], Images], plans: dict[str, ObjectPlan],
                   observers: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Rows (:data:`VALUE_COLUMNS`) and TTF curves (:data:`TTF_VALUE_COLUMNS`) of one source (a denoiser,
    the input at one condition) for every object of ``plans``: ``get_images(obj, plan)`` gives its images.
    The rods first, so that the detection objects get the Fourier cross-check."""
    rows: list[dict[str, Any]] = []
    curves: list[pd.DataFrame] = []
    ttfs: dict[float, tuple] | None = None
    for obj in sorted(plans, key=lambda o: o != TTF_OBJECT):
        plan = plans[obj]
        images = get_images(obj, plan)
        if obj == TTF_OBJECT:
            r, c, ttfs = ttf_rows(images, plan)
            rows += r
            curves += c
        else:
            rows += detection_rows(images, plan, observers, ttfs)
    table = pd.DataFrame(rows, columns=VALUE_COLUMNS)
    ttf = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=TTF_VALUE_COLUMNS)
    return table, ttf


# ------------------------------------------------------------------------------------------ denoising


def _denoise(model: nn.Module, stack: np.ndarray, *, batch_size: int, device: str) -> np.ndarray:
    """:func:`benchmark.evaluate.denoise` of ``(S, H, W)`` HU slices, as a numpy array."""
    out = denoise(model, stack, batch_size=batch_size, device=device)
    assert isinstance(out, np.ndarray)
    return out


@torch.no_grad()
def influence_radius(model: nn.Module, image: np.ndarray, *, device: str, batch_size: int = 1) -> int:
    """How far (Chebyshev distance, px) the output changes when the central input pixel of ``image``
    ``(H, W)`` HU is raised by :data:`POKE_HU`: the receptive-field radius where every unit along the way is
    active, at most the image's half-side (global operators reach everywhere)."""
    h, w = image.shape
    base = np.array(image, dtype=np.float32)
    poked = base.copy()
    poked[h // 2, w // 2] += POKE_HU
    out = _denoise(model, np.stack([base, poked]), batch_size=batch_size, device=device)
    changed = np.argwhere(out[0] != out[1])
    if not len(changed):
        return 0
    return int(np.abs(changed - np.array([h // 2, w // 2])).max())


def crop_box(model: nn.Module, image: np.ndarray, plan: ObjectPlan, *, device: str,
             batch_size: int = 1) -> tuple[tuple[int, int, int, int] | None, str]:  # fmt: skip
    """The crop ``(r0, r1, c0, c1)`` to denoise instead of the whole image, or None, and why (module
    docstring): the analysed region widened by :func:`influence_radius` + :data:`CROP_SAFETY_PX`, aligned to
    :data:`CROP_ALIGN`, kept only if it saves a fifth of the pixels and agrees with the whole image within
    :data:`CROP_TOLERANCE_HU` at the analysed pixels of ``image``."""
    h, w = plan.shape
    r0, r1, c0, c1 = plan.region()
    margin = influence_radius(model, image, device=device, batch_size=batch_size) + CROP_SAFETY_PX
    a = CROP_ALIGN
    b0, b1 = max(0, (r0 - margin) // a * a), min(h, -(-(r1 + margin) // a) * a)
    d0, d1 = max(0, (c0 - margin) // a * a), min(w, -(-(c1 + margin) // a) * a)
    if (b1 - b0) * (d1 - d0) > 0.8 * h * w:
        return None, f"whole images (the crop would keep {(b1 - b0) * (d1 - d0) / (h * w):.0%} of the pixels)"
    img = np.asarray(image, dtype=np.float32)[None]
    try:
        part = _denoise(model, np.ascontiguousarray(img[:, b0:b1, d0:d1]), batch_size=1, device=device)
    except RuntimeError as exc:  # e.g. a size the network does not accept
        return None, f"whole images (the crop failed: {str(exc).splitlines()[0]})"
    whole = _denoise(model, img, batch_size=1, device=device)
    diff = float(np.abs(whole[0, r0:r1, c0:c1] - part[0, r0 - b0 : r1 - b0, c0 - d0 : c1 - d0]).max())
    if not diff <= CROP_TOLERANCE_HU:
        return None, f"whole images (a crop differs by {diff:.3g} HU at the analysed pixels)"
    return (b0, b1, d0, d1), f"crop {b1 - b0}×{d1 - d0} px (influence radius {margin - CROP_SAFETY_PX} px, max difference {diff:.2g} HU)"


def denoised_images(model: nn.Module, ts: TaskSet, plan: ObjectPlan, *, device: str, batch_size: int,
                    crop: bool = True) -> tuple[Images, str]:  # fmt: skip
    """The denoised realisations of ``ts`` (only the signal-present ones for the rods), of a crop where
    :func:`crop_box` finds one (``crop``), and how they were made."""
    box, how = crop_box(model, ts.present[0], plan, device=device, batch_size=batch_size) if crop else (None, "whole images")
    h, w = plan.shape
    r0, r1, c0, c1 = box or (0, h, 0, w)

    def run(stack: np.ndarray) -> np.ndarray:
        return _denoise(model, stack[:, r0:r1, c0:c1], batch_size=batch_size, device=device)

    absent = None if plan.obj == TTF_OBJECT else run(ts.absent)
    return Images(run(ts.present), absent, (r0, c0)), how


# -------------------------------------------------------------------------------------------- caching


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(identity: str, folders: Sequence[str], cfg: TaskConfig) -> str:
    """The stamp of a cache file: ``identity`` (a checkpoint's sha256, or ``reference``), the task-set
    folders used, the settings and :data:`VERSION`."""
    return json.dumps({"version": VERSION, "identity": identity, "task_sets": sorted(folders),
                       "objects": sorted(cfg.objects), "observers": list(cfg.observers), "n": cfg.realisations,
                       "n_splits": N_SPLITS, "n_boot": N_BOOT, "seed": SEED, "eye": asdict(EyeFilter())},
                      sort_keys=True)  # fmt: skip


def _ttf_path(path: Path) -> Path:
    return path.with_name(path.stem + ".ttf.parquet")


def read_cached(path: Path, key: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The cached rows and TTF curves at ``path`` if both files carry ``key``; else None."""
    out = []
    for p in (path, _ttf_path(path)):
        try:
            table = pq.read_table(p)
        except Exception:  # absent, truncated or foreign: recompute
            return None
        if (table.schema.metadata or {}).get(b"key", b"").decode() != key:
            return None
        out.append(table.to_pandas())
    return out[0], out[1]


def write_cached(path: Path, key: str, rows: pd.DataFrame, ttf: pd.DataFrame) -> None:
    """Both files, each atomically, the TTF curves first (the rows file completes the pair)."""
    for p, df, cols in ((_ttf_path(path), ttf, TTF_VALUE_COLUMNS), (path, rows, VALUE_COLUMNS)):
        table = pa.Table.from_pandas(df[cols].reset_index(drop=True), preserve_index=False)
        _write_parquet(p, table.replace_schema_metadata({"key": key}))


def _write_parquet(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


# ---------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class TaskShard:
    """One worker's share: the ids of its ``cells`` and the reference ``conditions`` it computes."""

    cells: frozenset[str]
    conditions: frozenset[str]
    index: int = 0


@dataclass
class TaskOptions:
    """How :func:`task_run` runs; ``None`` fields take the matrix's (``every``, ``batch_size``, ``device``)."""

    every: int | None = None
    batch_size: int | None = None
    device: str | None = None
    include_partial: bool = False
    progress: bool = True
    jobs: int = 1
    devices: list[str] | None = None
    crop: bool = True
    shard: TaskShard | None = None


@dataclass
class TaskSummary:
    """What one :func:`task_run` did: checkpoints analysed / computed, reference conditions, the skipped
    cells (id → reason) and checkpoints, how each computed object was denoised, seconds."""

    checkpoints: int = 0
    checkpoints_computed: int = 0
    references: int = 0
    references_computed: int = 0
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)
    bad_checkpoints: dict[str, str] = field(default_factory=dict)
    denoised: dict[str, str] = field(default_factory=dict)


def input_conditions(doses: Sequence[str]) -> list[str]:
    """Every dose of the synth dataset at each view count of ``doses`` (the LDCT input's curve)."""
    views = list(dict.fromkeys(parse_condition(d)[1] for d in doses))
    return [condition_name(d, v) for v in views for d in DOSES_PERCENT]


def reference_conditions(doses: Sequence[str]) -> list[str]:
    """:func:`input_conditions`, then the NDCT condition (once)."""
    return list(dict.fromkeys([*input_conditions(doses), NDCT_CONDITION]))


def task_plan(layout: RunLayout, cells: Sequence[CellInfo], cfg: TaskConfig, every: int) -> list[tuple[CellInfo, int, Path]]:
    """``(cell, epoch, checkpoint)`` to analyse: each cell's last kept epoch (``epochs: final``) or the epochs
    the scoring scores (``scored``)."""
    plan = []
    for c in cells:
        kept = layout.checkpoints(c.cell_id)
        epochs = [max(kept)] if cfg.epochs == "final" else epochs_to_score(kept, every)
        plan += [(c, e, kept[e]) for e in epochs]
    return plan


class _NotAnalysable(Exception):
    """A checkpoint this analysis cannot use (a 3-D model); the cell is skipped with the reason."""


def task_run(out: Path | str, opts: TaskOptions | None = None) -> TaskSummary | None:
    """Compute (incrementally) and write the task-based image quality of the run (module docstring);
    None when the matrix has no ``evaluation.task``."""
    t0 = time.perf_counter()
    opts = opts or TaskOptions()
    layout = RunLayout(out)
    matrix = layout.matrix()
    cfg = matrix.evaluation.task
    if cfg is None:
        return None
    rep = matrix.reproducibility  # score with the kernels and threads the run trained with
    apply_kernels(rep.kernels, rep.threads, field=f"{out}: matrix.resolved.yaml reproducibility.kernels")
    dataset = open_dataset(matrix.dataset.kind, matrix.dataset.options)
    if not isinstance(dataset, SynthDataset):
        raise UserError(f"needs the synth dataset, this run's is {matrix.dataset.kind!r}", field="evaluation.task")
    every = opts.every or matrix.evaluation.every
    batch_size = opts.batch_size or matrix.evaluation.batch_size
    if opts.devices:
        device = (parse_devices(opts.devices, field="devices") or [""])[0]
    else:
        device = str(resolve_device(opts.device or matrix.device))
    summary = TaskSummary()
    cells = cells_to_analyse(layout, opts.include_partial, summary.skipped)
    plan = task_plan(layout, cells, cfg, every)
    conditions = reference_conditions(matrix.doses)
    inputs = set(input_conditions(matrix.doses))
    n = cfg.realisations
    shard = opts.shard
    sets: dict[tuple[str, str], TaskSet] = {}
    for cond in conditions:  # built once here (cached); workers and reruns read them
        for obj in cfg.objects:
            sets[(obj, cond)] = task_set(dataset, obj, cond, n, progress=opts.progress and shard is None)
    plans = {obj: object_plan(obj, sets[(obj, NDCT_CONDITION)], n) for obj in cfg.objects}
    ndct_folders = [task_folder(dataset, obj, NDCT_CONDITION, n).name for obj in cfg.objects]

    def folders(cond: str) -> list[str]:
        return [task_folder(dataset, obj, cond, n).name for obj in cfg.objects] + ndct_folders

    if opts.jobs != 1 and shard is None:
        for part in _run_in_shards(out, opts, plan, conditions, device):
            summary.checkpoints_computed += part.checkpoints_computed
            summary.references_computed += part.references_computed
            summary.denoised.update(part.denoised)
    if shard is not None:
        plan = [x for x in plan if x[0].cell_id in shard.cells]
        conditions = [c for c in conditions if c in shard.conditions]
    summary.checkpoints, summary.references = len(plan), len(conditions)
    bar = tqdm(total=len(plan) + len(conditions), desc="task-based image quality", unit="source",
               disable=not opts.progress)  # fmt: skip
    frames: list[pd.DataFrame] = []
    curves: list[pd.DataFrame] = []
    for cond in conditions:
        bar.set_postfix_str(f"LDCT input {cond}")
        path, key = layout.task_reference_cache(cond), cache_key("reference", folders(cond), cfg)
        found = read_cached(path, key)
        if found is None:
            found = analyse_source(partial(_as_simulated, sets, cond), plans, cfg.observers)
            write_cached(path, key, *found)
            summary.references_computed += 1
        for source in [SOURCE_INPUT] * (cond in inputs) + [SOURCE_NDCT] * (cond == NDCT_CONDITION):
            ident = {"cell": "", "loss": "", "architecture": "", "dose": cond, "seed": -1, "epoch": -1,
                     "source": source, "condition": cond}  # fmt: skip
            frames.append(found[0].assign(**ident))
            curves.append(found[1].assign(**ident))
        bar.update(1)
    configs = {c.cell_id: layout.cell_config(c.cell_id) or {} for c in cells}
    for cell, epoch, path in plan:
        bar.set_postfix_str(f"{cell.cell_id} epoch {epoch}")
        identity: dict[str, Any] = {"cell_id": cell.cell_id, "config": configs[cell.cell_id]}
        try:
            load_checkpoint(path, mmap=True, **identity)  # the cell's own checkpoint, before any cache is trusted
            cpath, key = layout.task_cache(cell.cell_id, epoch), cache_key(file_sha256(path), folders(cell.dose), cfg)
            found = read_cached(cpath, key)
            if found is None:
                found = _analyse_checkpoint(path, identity, sets, plans, cfg, cell.dose, device=device,
                                            batch_size=batch_size, crop=opts.crop, summary=summary)  # fmt: skip
                write_cached(cpath, key, *found)
                summary.checkpoints_computed += 1
        except (CheckpointError, FileNotFoundError) as exc:
            skip_checkpoint(summary.bad_checkpoints, path, exc, by="the task analysis")
            bar.update(1)
            continue
        except _NotAnalysable as exc:
            summary.skipped[cell.cell_id] = str(exc)
            bar.update(1)
            continue
        ident = {"cell": cell.cell_id, "loss": cell.loss, "architecture": cell.architecture, "dose": cell.dose,
                 "seed": cell.seed, "epoch": epoch, "source": SOURCE_MODEL, "condition": cell.dose}  # fmt: skip
        frames.append(found[0].assign(**ident))
        curves.append(found[1].assign(**ident))
        bar.update(1)
    bar.close()
    if shard is None:
        _write_outputs(layout, frames, curves, plans, cfg, conditions, summary)
    summary.seconds = time.perf_counter() - t0
    return summary


def _as_simulated(sets: dict[tuple[str, str], TaskSet], condition: str, obj: str, _plan: ObjectPlan) -> Images:
    """The realisations of ``obj`` at ``condition`` as simulated (the LDCT input, or the NDCT)."""
    return Images(sets[(obj, condition)].present, sets[(obj, condition)].absent)


def _analyse_checkpoint(path: Path, identity: dict[str, Any], sets: dict[tuple[str, str], TaskSet],
                        plans: dict[str, ObjectPlan], cfg: TaskConfig, condition: str, *, device: str,
                        batch_size: int, crop: bool, summary: TaskSummary) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    model = load_model(path, device=device, **identity)
    if spatial_dims(model) != 2:
        raise _NotAnalysable("a 3-D model: the task objects are single slices")

    def images(obj: str, plan: ObjectPlan) -> Images:
        imgs, how = denoised_images(model, sets[(obj, condition)], plan, device=device, batch_size=batch_size, crop=crop)
        summary.denoised[f"{path} {obj}"] = how
        return imgs

    return analyse_source(images, plans, cfg.observers)


def _write_outputs(layout: RunLayout, frames: list[pd.DataFrame], curves: list[pd.DataFrame],
                   plans: dict[str, ObjectPlan], cfg: TaskConfig, conditions: Sequence[str],
                   summary: TaskSummary) -> None:  # fmt: skip
    """``detectability.parquet``, ``ttf.parquet`` and ``detectability_settings.json``, each atomically."""
    parts = [f[COLUMNS] for f in frames if len(f)]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    table = table.astype({"seed": "int64", "epoch": "int64", "value": "float64", "n_per_class": "int64", "flag": bool})
    atomic_write(layout.analysis_file(DETECTABILITY), lambda tmp: table.to_parquet(tmp, index=False))
    parts = [c[TTF_COLUMNS] for c in curves if len(c)]
    ttf = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TTF_COLUMNS)
    ttf = ttf.astype({"seed": "int64", "epoch": "int64", "f": "float64", "ttf": "float64"})
    atomic_write(layout.analysis_file(TTF_CURVES), lambda tmp: ttf.to_parquet(tmp, index=False))
    settings = {
        "version": VERSION, **cfg.model_dump(mode="json"), "n_splits": N_SPLITS, "n_boot": N_BOOT, "seed": SEED,
        "eye_filter": asdict(EyeFilter()), "reference_conditions": list(conditions), "ndct_condition": NDCT_CONDITION,
        "crop_tolerance_hu": CROP_TOLERANCE_HU,
        "pixel_mm": next(iter(plans.values())).pixel_mm if plans else None,
        "inserts": [{"object": p.obj, **asdict(i)} for p in plans.values() for i in p.inserts],
        "rods": [{"object": p.obj, **asdict(r)} for p in plans.values() for r in p.rods],
        "skipped": summary.skipped,
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    atomic_write_text(layout.analysis_file(DETECTABILITY_SETTINGS), json.dumps(settings, indent=1))


# -------------------------------------------------------------------------------------------- shards


def assign_task_shards(plan: Sequence[tuple[CellInfo, int, Path]], conditions: Sequence[str], jobs: int
                       ) -> list[tuple[list[str], list[str]]]:  # fmt: skip
    """``[(cell ids, reference conditions)]``: the cells as the scoring shards them
    (:func:`analysis.shards.assign_shards`), then each reference condition to the least-loaded shard (a
    checkpoint and a condition count one each). Deterministic; at most ``jobs`` shards."""
    shards: list[tuple[list[str], list[str]]] = [(cells, []) for cells, _ in assign_shards(plan, jobs)]
    if not shards:
        shards = [([], []) for _ in range(min(jobs, len(conditions)))]
    per_cell: dict[str, int] = {}
    for cell, _, _ in plan:
        per_cell[cell.cell_id] = per_cell.get(cell.cell_id, 0) + 1
    load = [sum(per_cell[c] for c in cells) for cells, _ in shards]
    for cond in conditions:
        i = load.index(min(load))
        shards[i][1].append(cond)
        load[i] += 1
    return [s for s in shards if s[0] or s[1]]


def _run_in_shards(out: Path | str, opts: TaskOptions, plan: Sequence[tuple[CellInfo, int, Path]],
                   conditions: Sequence[str], device: str) -> list[TaskSummary]:  # fmt: skip
    """Fill the task caches with ``opts.jobs`` spawned workers, each a :func:`task_run` of its shard
    (:func:`analysis.shards.run_in_workers`, the scoring's scheme)."""
    check_jobs(opts.jobs, field="jobs")
    devices = parse_devices(opts.devices, field="devices") or [device]
    shards = assign_task_shards(plan, conditions, opts.jobs)
    if not shards:
        return []
    tasks = [replace(opts, jobs=1, devices=None, device=dev, progress=False,
                     shard=TaskShard(frozenset(cells), frozenset(conds), i))
             for i, ((cells, conds), dev) in enumerate(zip(shards, assign_devices(devices, len(shards))))]  # fmt: skip
    return run_in_workers(partial(call_in_worker, task_run), out, tasks, progress=opts.progress,
                          desc=f"task analysis in {len(tasks)} processes")  # fmt: skip


# ------------------------------------------------------------------------------------------ reading


def load_detectability(out: Path | str) -> pd.DataFrame | None:
    """``detectability.parquet`` (:data:`COLUMNS`), or None when the run has none."""
    path = RunLayout(out, must_exist=False).analysis_file(DETECTABILITY)
    return pd.read_parquet(path) if path.is_file() else None


def load_ttf(out: Path | str) -> pd.DataFrame | None:
    path = RunLayout(out, must_exist=False).analysis_file(TTF_CURVES)
    return pd.read_parquet(path) if path.is_file() else None


def load_task_settings(out: Path | str) -> dict[str, Any]:
    path = RunLayout(out, must_exist=False).analysis_file(DETECTABILITY_SETTINGS)
    return json.loads(path.read_text()) if path.is_file() else {}


# ------------------------------------------------------------------------------------ dose equivalent


def total_dose(condition: str) -> float:
    """A condition's total dose in % of the NDCT's (``dose · views / 720``): noise variance ∝ 1 / it."""
    dose, views = parse_condition(condition)
    return dose * views / 720


@dataclass(frozen=True)
class DoseEquivalent:
    """The dose (% per view, at the cell's view count) at which the unprocessed input has the denoiser's
    d′; NaN with ``note`` "beyond the range (…)" outside the input's measured doses."""

    dose: float
    note: str = ""

    def text(self, own_dose: float | None = None) -> str:
        if not np.isfinite(self.dose):
            return self.note
        ratio = f" (×{self.dose / own_dose:.2g})" if own_dose else ""
        return f"{self.dose:.3g} %{ratio}"


def dose_equivalent(doses: Sequence[float], dprimes: Sequence[float], target: float) -> DoseEquivalent:
    """Where the input's d′ against dose (``doses`` % per view, one view count) reaches ``target``: d′
    made non-decreasing in dose (running maximum: estimates are noisy, the true curve rises), then linear
    interpolation in log dose between the two measured doses around ``target``; "beyond the range" below
    the lowest or above the highest measured d′."""
    order = np.argsort(np.asarray(doses, dtype=float))
    x = np.log(np.asarray(doses, dtype=float)[order])
    y = np.maximum.accumulate(np.asarray(dprimes, dtype=float)[order])
    lo, hi = float(np.exp(x[0])), float(np.exp(x[-1]))
    if not np.isfinite(target) or not len(x):
        return DoseEquivalent(float("nan"), "–")
    if target < y[0]:
        return DoseEquivalent(float("nan"), f"beyond the range (< {lo:g} %)")
    if target > y[-1]:
        return DoseEquivalent(float("nan"), f"beyond the range (> {hi:g} %)")
    k = int(np.argmax(y >= target))
    if k == 0 or y[k] == y[k - 1]:
        return DoseEquivalent(float(np.exp(x[k])))
    t = (target - y[k - 1]) / (y[k] - y[k - 1])
    return DoseEquivalent(float(np.exp(x[k - 1] + t * (x[k] - x[k - 1]))))


# ------------------------------------------------------------------------------ summaries for the report


def primary_observer(observers: Sequence[str]) -> str:
    """The observer the tables lead with: the first channelized/Hotelling one configured (``lg_cho``,
    ``gabor_cho``, ``ho``), else the first configured."""
    return next((o for o in HOTELLING_OBSERVERS if o in observers), observers[0])


def summarise(det: pd.DataFrame, observer: str, estimator: str) -> pd.DataFrame:
    """One row per source × condition × insert of ``estimator`` of ``observer``: the denoisers at each cell's
    last analysed epoch, averaged over seeds (``sd``: with one seed the estimator's own, e.g. over resplits;
    with several, the sd over seeds; ``ci_*`` only with one seed), the input and NDCT rows as they are."""
    rows = det[(det["observer"] == observer) & (det["estimator"] == estimator)]
    model = rows[rows["source"] == SOURCE_MODEL]
    if len(model):
        last = model.groupby("cell")["epoch"].transform("max")
        model = model[model["epoch"] == last]
    keys = ["source", "loss", "architecture", "dose", "condition", "object", "insert", "diameter_mm", "contrast_hu"]
    g = model.groupby(keys, sort=False, observed=True)
    agg = g.agg(value=("value", "mean"), sd_seeds=("value", "std"), sd_one=("sd", "first"), ci_low=("ci_low", "first"),
                ci_high=("ci_high", "first"), n_seeds=("seed", "nunique"), n_per_class=("n_per_class", "first"))
    agg = agg.reset_index()
    many = agg["n_seeds"] > 1
    agg["sd"] = np.where(many, agg["sd_seeds"], agg["sd_one"])
    agg.loc[many, ["ci_low", "ci_high"]] = np.nan
    ref = rows[rows["source"] != SOURCE_MODEL].assign(n_seeds=1)
    cols = [*keys, "value", "sd", "ci_low", "ci_high", "n_seeds", "n_per_class"]
    return pd.concat([agg[cols], ref[cols]], ignore_index=True)


def with_dose_equivalent(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` (a d′ of :func:`summarise`) with ``dose_eq`` (% per view) and ``dose_eq_text`` for the
    denoisers: :func:`dose_equivalent` on the input's d′ of the same object and insert at every dose of the
    cell's view count."""
    out = summary.assign(dose_eq=np.nan, dose_eq_text="")
    inputs = summary[summary["source"] == SOURCE_INPUT]
    for i, r in summary[summary["source"] == SOURCE_MODEL].iterrows():
        dose, views = parse_condition(str(r["condition"]))
        curve = inputs[(inputs["object"] == r["object"]) & (inputs["insert"] == r["insert"])
                       & (inputs["condition"].map(lambda c: parse_condition(str(c))[1]) == views)]  # fmt: skip
        if curve.empty:
            out.loc[i, "dose_eq_text"] = "–"
            continue
        eq = dose_equivalent([parse_condition(str(c))[0] for c in curve["condition"]], curve["value"].to_numpy(), r["value"])
        out.loc[i, "dose_eq"] = eq.dose
        out.loc[i, "dose_eq_text"] = eq.text(dose)
    return out


__all__ = ["COLUMNS", "ESTIMATORS", "OBSERVERS", "TTF_COLUMNS", "DoseEquivalent", "TaskOptions", "TaskSummary",
           "dose_equivalent", "load_detectability", "load_task_settings", "load_ttf", "primary_observer", "summarise",
           "task_run", "with_dose_equivalent"]
