"""Test objects for task-based image quality: known signals in HU on a :class:`~benchmark.data.phantoms.Grid`.

Model observers (detectability, AUC) and the task transfer function need images whose signals are known
exactly: where they are, how large, and how much contrast they have. This module makes the *objects*;
:mod:`benchmark.data.task_sets` projects them with the synth physics and draws the noise. Every signal
is part of the object on the fine forward grid, so it passes through projection, noise and FBP like
anatomy does (it is never pasted into a reconstruction).

* :func:`cct189`: the low-contrast module of the MITA CCT189 body phantom (The Phantom Laboratory,
  "Catphan MITA"; used for the NEMA XR 29 / MITA CT image-quality low-contrast-detectability
  assessment), laid out as the FDA's digital replica in the LCD-CT toolbox does (Vaishnav et al.,
  "Objective assessment of image quality and dose reduction in CT iterative reconstruction", Med.
  Phys. 41(7) 071904, 2014; the FDA/DIDSR LCD-CT regulatory-science tool, 2023): a 200 mm water disk
  with four rods of 3, 5, 7, 10 mm diameter and +14, +7, +5, +3 HU contrast, centred 40 mm from the
  centre at 45°, 135°, 225° and 315° (counter-clockwise from +x, y up; in that order of size).
  **Background 0 HU** (water): the digital replica uses water, and the physical module's background
  is a water-equivalent plastic; the contrasts are defined relative to the background, so only the
  noise level (set by the attenuation of the disk) would change with a few HU more or less.
* :func:`rod_phantom`: a 200 mm water disk with four 25 mm rods for the contrast-dependent task transfer
  function (TTF) of AAPM TG-233 (Samei et al., "Performance evaluation of computed tomography systems:
  the report of AAPM Task Group 233", Med. Phys. 46(11), 2019), which measures the TTF from the edge
  of circular rods of several contrasts because nonlinear denoisers sharpen high-contrast edges and
  blur low-contrast ones. Contrasts: +15 HU (a low-contrast soft-tissue lesion), −35 HU (polystyrene,
  a TTF rod material of TG-233-style phantoms, and a negative contrast), +120 HU (acrylic) and +300 HU
  (bone / iodine-like high contrast), at 60 mm from the centre (≥ 60 mm between rod edges and 27.5 mm
  to the disk edge, so each edge profile sees only water out to twice the rod radius).
* :func:`insert_lesions`: low-contrast disks inside uniform parenchyma (liver, spleen) of an
  anthropomorphic slice (:mod:`benchmark.data.phantoms`), so the background has texture, at seeded
  positions found from the image itself.

Disks are rasterised with their **exact area coverage** of each pixel (:func:`disk_coverage`: the
closed-form area of a circle intersected with a rectangle), so a 3 mm rod on a 0.78 mm or 2.1 mm grid has
exactly the area π r² and its partial-volume edge pixels are right. Signals are additive (a disk adds its
contrast to whatever lies beneath, texture included), so ``present − absent`` is the signal alone.
Objects are rounded to the ``HU_QUANTUM`` grid like :func:`benchmark.data.phantoms.patient_slices`
(the same bytes on every CPU) and returned as float32, exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from benchmark.data.phantoms import HU, Grid
from benchmark.data.simulate import quantize_hu

PHANTOM_DIAMETER_MM = 200.0
BACKGROUND_HU = HU["water"]  # 0 HU; see the module docstring

# CCT189 low-contrast module: (diameter mm, contrast HU, angle deg), 40 mm from the centre.
CCT189_RADIUS_MM = 40.0
CCT189_INSERTS: tuple[tuple[float, float, float], ...] = ((3.0, 14.0, 45.0), (5.0, 7.0, 135.0),
                                                          (7.0, 5.0, 225.0), (10.0, 3.0, 315.0))
# TTF rods (TG-233): 25 mm, 60 mm from the centre; (contrast HU, angle deg).
ROD_DIAMETER_MM = 25.0
ROD_RADIUS_MM = 60.0
RODS: tuple[tuple[float, float], ...] = ((15.0, 45.0), (-35.0, 135.0), (120.0, 225.0), (300.0, 315.0))
# Lesions in parenchyma: hypodense like liver metastases, low contrast.
LESION_DIAMETERS_MM: tuple[float, ...] = (5.0, 7.0, 10.0)
LESION_CONTRASTS_HU: tuple[float, ...] = (-20.0, -15.0, -10.0)
LESION_TISSUE_HU = (80.0, 125.0)  # smoothed HU of liver (100) and spleen (110) parenchyma
LESION_STREAM = 22  # tag of the placement generator's key [seed, index, LESION_STREAM]


@dataclass(frozen=True)
class Insert:
    """One disk signal: centre ``(x_mm, y_mm)`` (origin at the grid centre, y up), ``diameter_mm``,
    ``contrast_hu`` over its local background, and the centre ``(row, col)`` in (fractional) pixels of
    the grid it was described for (:meth:`on` re-expresses it for another grid)."""

    name: str
    x_mm: float
    y_mm: float
    diameter_mm: float
    contrast_hu: float
    row: float
    col: float

    @classmethod
    def at(cls, name: str, x_mm: float, y_mm: float, diameter_mm: float, contrast_hu: float, grid: Grid) -> Insert:
        row, col = pixel_of(grid, x_mm, y_mm)
        return cls(name, float(x_mm), float(y_mm), float(diameter_mm), float(contrast_hu), row, col)

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2

    def on(self, grid: Grid) -> Insert:
        """The same insert with ``row``/``col`` in pixels of ``grid``."""
        row, col = pixel_of(grid, self.x_mm, self.y_mm)
        return replace(self, row=row, col=col)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskObject:
    """A test object on ``grid``: ``present`` and ``absent`` ``(H, W)`` float32 HU and its ``inserts``."""

    name: str
    grid: Grid
    present: np.ndarray
    absent: np.ndarray
    inserts: tuple[Insert, ...]


def pixel_of(grid: Grid, x_mm: float, y_mm: float) -> tuple[float, float]:
    """``(row, col)`` (fractional) of the point ``(x_mm, y_mm)`` on ``grid`` (the inverse of ``Grid.coords``)."""
    half = (grid.size - 1) / 2
    return half - y_mm / grid.pixel_mm, x_mm / grid.pixel_mm + half


def _disk_quadrant_area(a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """Area of the disk of radius ``r`` at the origin that lies in ``{x ≤ a, y ≤ b}`` (elementwise).

    Integrates the chord below ``y = b`` over ``x ≤ a`` with the primitive
    ``H(x) = (x h(x) + r² asin(x/r)) / 2`` of the half-chord ``h(x) = √(r² − x²)``.
    """

    def prim(x: np.ndarray) -> np.ndarray:
        return 0.5 * (x * np.sqrt(np.maximum(r * r - x * x, 0.0)) + r * r * np.arcsin(np.clip(x / r, -1.0, 1.0)))

    xa = np.clip(a, -r, r)
    yb = np.clip(b, -r, r)
    c = np.sqrt(np.maximum(r * r - yb * yb, 0.0))  # |x| < c: the chord crosses y = b
    xc = np.clip(xa, -c, c)
    inner = prim(xc) - prim(-c)  # ∫ h over [−c, min(a, c)]
    length = xc + c
    left = 2.0 * (prim(xa) - prim(np.full_like(xa, -r)))  # the whole disk left of x = a
    return np.where(yb >= 0, left - inner + yb * length, inner + yb * length)


def disk_coverage(grid: Grid, cx: float, cy: float, radius: float) -> np.ndarray:
    """Fraction of each pixel of ``grid`` covered by the disk ``(cx, cy, radius)`` (mm), ``(H, W)`` float64.

    Exact (closed form, inclusion–exclusion over the pixel corners), so ``sum · pixel²`` is ``π r²`` to
    rounding whatever the disk's size relative to the pixels.
    """
    n, p = grid.size, grid.pixel_mm
    xe = (np.arange(n + 1, dtype=np.float64) - n / 2) * p - cx  # left edges of the columns, then the last right edge
    ye = (n / 2 - np.arange(n + 1, dtype=np.float64)) * p - cy  # top edges of the rows (y up), then the last bottom
    f = _disk_quadrant_area(xe[None, :], ye[:, None], radius)
    area = f[:-1, 1:] - f[:-1, :-1] - f[1:, 1:] + f[1:, :-1]
    return np.clip(area / (p * p), 0.0, 1.0)


def _water_disk(grid: Grid) -> np.ndarray:
    """The 200 mm water disk in air, float64 HU (partial-volume edge)."""
    cov = disk_coverage(grid, 0.0, 0.0, PHANTOM_DIAMETER_MM / 2)
    return HU["air"] + cov * (BACKGROUND_HU - HU["air"])


def _with_inserts(name: str, grid: Grid, background: np.ndarray, inserts: Sequence[Insert]) -> TaskObject:
    """Add each insert's coverage × contrast to ``background`` (float64 HU); both images quantised."""
    absent = quantize_hu(np.asarray(background, dtype=np.float64)) + 0.0  # + 0.0: no −0.0 bytes
    present = absent.copy()
    for ins in inserts:
        present += ins.contrast_hu * disk_coverage(grid, ins.x_mm, ins.y_mm, ins.radius_mm)
    present = quantize_hu(present) + 0.0
    return TaskObject(name, grid, present.astype(np.float32), absent.astype(np.float32), tuple(inserts))


def _polar(radius_mm: float, angle_deg: float) -> tuple[float, float]:
    t = math.radians(angle_deg)
    return radius_mm * math.cos(t), radius_mm * math.sin(t)


def cct189(grid: Grid) -> TaskObject:
    """The CCT189 low-contrast module (see the module docstring) on ``grid``."""
    inserts = [
        Insert.at(f"{d:g}mm_{c:+g}HU", *_polar(CCT189_RADIUS_MM, ang), d, c, grid) for d, c, ang in CCT189_INSERTS
    ]
    return _with_inserts("cct189", grid, _water_disk(grid), inserts)


def rod_phantom(grid: Grid) -> TaskObject:
    """The TTF rod phantom (TG-233; see the module docstring) on ``grid``."""
    inserts = [
        Insert.at(f"rod_{c:+g}HU", *_polar(ROD_RADIUS_MM, ang), ROD_DIAMETER_MM, c, grid) for c, ang in RODS
    ]
    return _with_inserts("rods", grid, _water_disk(grid), inserts)


def insert_lesions(
    patient_image_hu: np.ndarray,
    grid: Grid,
    *,
    diameters_mm: Sequence[float] = LESION_DIAMETERS_MM,
    contrasts_hu: Sequence[float] = LESION_CONTRASTS_HU,
    tissue_hu: tuple[float, float] = LESION_TISSUE_HU,
    margin_mm: float = 5.0,
    gap_mm: float = 10.0,
    seed: int = 0,
) -> TaskObject:
    """Disks of ``diameters_mm`` / ``contrasts_hu`` placed in uniform soft tissue of ``patient_image_hu``.

    The tissue is where the image, smoothed with a 2 mm Gaussian (so texture does not punch holes),
    lies within ``tissue_hu`` (default liver and spleen parenchyma, not vessels, kidney or muscle);
    each lesion's centre is drawn uniformly (generator ``[seed, LESION_STREAM]``) among the pixel
    centres whose distance to the tissue's border is at least its radius + ``margin_mm`` and whose
    distance to an earlier lesion's edge is at least its radius + ``gap_mm``; the largest lesions are
    placed first. Raises ``ValueError`` when one does not fit. ``absent`` is the image (quantised),
    ``present`` adds the disks to it, texture kept.
    """
    if len(diameters_mm) != len(contrasts_hu):
        raise ValueError(f"{len(diameters_mm)} diameters but {len(contrasts_hu)} contrasts")
    img = np.asarray(patient_image_hu, dtype=np.float64)
    if img.shape != (grid.size, grid.size):
        raise ValueError(f"image {img.shape} does not match the grid ({grid.size}, {grid.size})")
    smooth = ndimage.gaussian_filter(img, 2.0 / grid.pixel_mm)
    tissue = (smooth >= tissue_hu[0]) & (smooth <= tissue_hu[1])
    depth = ndimage.distance_transform_edt(tissue) * grid.pixel_mm
    x, y = grid.coords()
    rng = np.random.default_rng([seed, LESION_STREAM])
    placed: dict[int, Insert] = {}
    for k in sorted(range(len(diameters_mm)), key=lambda i: -diameters_mm[i]):
        d, c = float(diameters_mm[k]), float(contrasts_hu[k])
        ok = depth >= d / 2 + margin_mm
        for other in placed.values():
            ok &= np.hypot(x - other.x_mm, y - other.y_mm) >= d / 2 + other.radius_mm + gap_mm
        where = np.flatnonzero(ok)
        if where.size == 0:
            raise ValueError(f"no room for a {d:g} mm lesion in tissue of {tissue_hu[0]:g}–{tissue_hu[1]:g} HU")
        j = where[rng.integers(where.size)]
        placed[k] = Insert.at(f"lesion_{d:g}mm_{c:+g}HU", x.flat[j], y.flat[j], d, c, grid)
    return _with_inserts("lesions", grid, img, [placed[k] for k in range(len(diameters_mm))])


__all__ = ["CCT189_INSERTS", "RODS", "Insert", "TaskObject", "cct189", "disk_coverage", "insert_lesions",
           "pixel_of", "rod_phantom"]
