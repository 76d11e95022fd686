"""Lower-dose simulation from an existing full-dose CT image by projection-domain noise insertion.

Yu L, Shiung M, Jondal D, McCollough CH, "Development and validation of a practical lower-dose-
simulation tool for optimizing computed tomography scan protocols", J Comput Assist Tomogr 36(4),
477–487 (2012). For a dose fraction ``a`` of the original scan, each log-domain projection sample
``p`` gets zero-mean Gaussian noise of variance

    σ²(p) = (1 − a)/a · e^p / I0 · (1 + (1 + a)/a · σe² · e^p / I0)

so that the sum with the noise already in the scan has the variance of an ``a``-dose scan
(quantum term) including the electronic noise ``σe²`` (second term). Raw projections of the real
scan are not available here, so ``p`` is the re-projection of the full-dose image (fan beam,
clinical geometry, :mod:`benchmark.data.projector`); the noise sinogram is reconstructed by FBP
and added to the original image, which keeps the scan's own resolution and noise texture.

``I0`` (photons per ray per view at the original dose, bowtie included) is the one free parameter;
:func:`calibrate_i0` fits it so that the simulated quarter dose matches a real quarter-dose scan of
the same patient (``ldct-bench data calibrate``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.core.errors import UserError
from benchmark.data.measure import difference_noise_std, uniform_roi
from benchmark.data.projector import Geometry, clinical_geometry, fbp
from benchmark.data.simulate import MU_WATER_PER_MM, NoiseModel, project_hu

INSERTION_VIEWS = 720


def insertion_geometry(image_size: int, pixel_mm: float, views: int = INSERTION_VIEWS) -> Geometry:
    """Clinical-like fan beam over the image's field of view."""
    fov = image_size * pixel_mm
    if fov / 2 >= 590:
        raise UserError(f"field of view {fov:.0f} mm is too large for the clinical fan geometry", field="pixel_spacing")
    return clinical_geometry("fan", image_size, fov, views)


def yu_variance(p: np.ndarray, dose: float, i0: np.ndarray | float, electronic_var: float) -> np.ndarray:
    """Variance to add to log projections ``p`` to go from dose 1 to ``dose`` (Yu et al. 2012)."""
    if not 0 < dose < 1:
        raise UserError(f"a simulated dose fraction must be in (0, 1), got {dose}", field="dose")
    e = np.exp(p.astype(np.float64)) / i0
    return (1 - dose) / dose * e * (1 + (1 + dose) / dose * electronic_var * e)


def reproject(full_hu: np.ndarray, pixel_mm: float, *, device: str | torch.device = "cpu") -> tuple[Geometry, np.ndarray]:
    """The insertion geometry and the line integrals ``(S, V, C)`` of full-dose images ``(S, H, W)``."""
    h, w = full_hu.shape[-2:]
    if h != w:
        raise UserError(f"noise insertion needs square images, got {h}×{w}", field="images")
    geom = insertion_geometry(h, pixel_mm)
    return geom, project_hu(full_hu, geom, device=device)


def noise_image(sino: np.ndarray, geom: Geometry, dose: float, i0: float, rng: np.random.Generator, *,
                electronic_var: float = 10.0, filter_name: str = "hann",
                device: str | torch.device = "cpu") -> np.ndarray:
    """FBP (in HU) of Yu-model noise drawn for the line integrals ``sino`` ``(S, V, C)``."""
    b = NoiseModel(i0=i0).bowtie(geom)[None, None, :]
    var = yu_variance(sino, dose, i0 * b, electronic_var)
    noise = (rng.standard_normal(sino.shape) * np.sqrt(var)).astype(np.float32)
    out = np.empty((sino.shape[0], geom.image_size, geom.image_size), dtype=np.float32)
    for b0 in range(0, len(out), 64):
        mu = fbp(torch.from_numpy(noise[b0 : b0 + 64]).to(device), geom, filter_name)  # type: ignore[arg-type]
        out[b0 : b0 + 64] = mu.cpu().numpy() * (1000.0 / MU_WATER_PER_MM)
    return out


def insert_noise(
    full_hu: np.ndarray,
    pixel_mm: float,
    dose: float,
    i0: float,
    rng: np.random.Generator,
    *,
    electronic_var: float = 10.0,
    filter_name: str = "hann",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Simulated ``dose``-fraction images ``(S, H, W)`` float32 HU from full-dose ``full_hu`` ``(S, H, W)``."""
    geom, sino = reproject(full_hu, pixel_mm, device=device)
    noise = noise_image(sino, geom, dose, i0, rng, electronic_var=electronic_var, filter_name=filter_name, device=device)
    return (full_hu + noise).astype(np.float32)


@dataclass
class Calibration:
    """Result of :func:`calibrate_i0`: fitted ``i0`` and the noise figures it matches (HU)."""

    i0: float
    dose: float
    real_std_hu: float  # std of (low − full) in the uniform ROI
    simulated_std_hu: float  # std of (simulated − full) there, with the fitted I0
    target_std_hu: float  # what the inserted noise must reach
    iterations: int
    roi_pixels: int


def calibrate_i0(
    full_hu: np.ndarray,
    low_hu: np.ndarray,
    pixel_mm: float,
    *,
    dose: float = 0.25,
    electronic_var: float = 10.0,
    seed: int = 0,
    start_i0: float = 2.0e5,
    iterations: int = 4,
    device: str | torch.device = "cpu",
) -> Calibration:
    """Fit ``I0`` so that inserted noise at ``dose`` matches the real low-dose scan.

    With quantum-limited noise, ``var(low − full) = σ²(1/a + 1)`` while the inserted noise must have
    ``σ²(1/a − 1)``, so its target std is ``std(low − full) · sqrt((1 − a)/(1 + a))`` (√0.6 for
    quarter dose), measured in uniform soft-tissue regions of the full-dose image. The inserted std
    scales like ``I0^(−1/2)`` (plus the electronic term), so a few fixed-point steps converge.
    """
    if full_hu.shape != low_hu.shape or full_hu.ndim != 3:
        raise UserError(f"full {full_hu.shape} and low-dose {low_hu.shape} stacks must match (S, H, W)", field="images")
    roi = np.stack([uniform_roi(f, pixel_mm, max_std_hu=20.0, smooth_mm=1.5) for f in full_hu])
    if roi.sum() < 100:
        raise UserError("too few uniform soft-tissue pixels to measure noise (need ≥ 100)", field="images")
    real = difference_noise_std(low_hu, full_hu, roi)
    target = real * math.sqrt((1 - dose) / (1 + dose))
    geom, sino = reproject(full_hu, pixel_mm, device=device)  # I0 does not change the projections

    def inserted_std(i0: float) -> float:
        noise = noise_image(sino, geom, dose, i0, np.random.default_rng(seed), electronic_var=electronic_var,
                            device=device)
        return float(noise[roi].std())

    i0 = start_i0
    for _ in range(iterations):
        i0 *= (inserted_std(i0) / target) ** 2
    return Calibration(i0, dose, real, inserted_std(i0), target, iterations, int(roi.sum()))
