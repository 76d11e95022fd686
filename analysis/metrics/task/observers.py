"""Linear model observers for a signal-known-exactly, background-known-statistically detection task:
ROIs, features, templates and decision variables.

A linear observer computes a decision variable ``t = wᵀ·g`` from an ROI ``g`` (or from features of it)
and a template ``w``; its detectability is ``d′ = Δt̄ / σ_t`` (:mod:`analysis.metrics.task.detectability`).
Definitions (Barrett & Myers, *Foundations of Image Science*, 2004, ch. 13; ICRU Report 54, 1996;
AAPM TG-233: Samei et al., Med. Phys. 46(11), e735, 2019):

* **ROIs** (:func:`signal_rois`): the ``n × n`` squares centred on the known signal location (the centre
  pixel is ``n // 2`` on both axes, as in :mod:`analysis.metrics.task.channels`), each minus its own
  mean (:func:`analysis.metrics.nps.detrend_rois`, the NPS module's detrending). The mean removal takes
  the same constant out of both classes; it removes the signal's own mean from the template's view too,
  which costs little for a signal much smaller than the ROI.
* **Hotelling** (:func:`hotelling_template`): ``w = K⁻¹·Δḡ``, ``Δḡ`` the mean signal-present minus
  mean signal-absent features, ``K = ½(K_s + K_n)`` the average of the two class covariances (sample
  covariances, ``ddof = 1``). On channel outputs ``v = Uᵀg`` (:func:`channel_outputs`) it is the
  **CHO**; on the pixels of a small ROI, the full-rank Hotelling observer (HO), the ideal linear
  observer, whose ``d′² = Δḡᵀ K⁻¹ Δḡ`` (:func:`hotelling_dprime`) no invertible linear processing
  of the images can raise or lower (``K → HKHᵀ``, ``Δḡ → HΔḡ``); it needs more realisations than
  pixels (``n_s + n_n − 2 > P``), or ``K`` is singular.
* **NPW** (non-prewhitening matched filter, :func:`npw_template`): ``w = Δḡ``. In stationary noise of
  spectrum ``NPS`` its ``d′² = (Σ|S|²)² / Σ|S|²·NPS`` against the HO's ``Σ|S|²/NPS`` (``S`` the
  signal's DFT), the two equal only in white noise.
* **Radial NPW template** (:func:`radial_npw_template`): the NPW's ``Δḡ`` averaged over 1 px wide rings
  about the known centre, inside the ROI's inscribed circle (0 in its corners), for a rotationally
  symmetric signal (a disk, a lesion) at a known location.
  A held-out NPW trained on ``m`` images per class adds the noise of ``Δḡ`` (variance ``2σ²/m`` per pixel)
  to its template, and over an ``n × n`` ROI of a low-contrast signal that noise dominates: on the CCT189
  inserts at 100 training images per class and a 21 × 21 ROI (10 mm, 3 HU, 50 % dose, 360 views), the
  pixel template's held-out d′ was 0.45 where the template of the noiseless signal gave 0.97. Averaging
  over rings keeps the template's signal (symmetric about the centre) and divides its noise variance by
  the ring's pixel count, so the template's noise energy falls from ``P·2σ²/m`` (``P`` pixels) to
  ``R·2σ²/m`` (``R`` rings, about ``n/2``): 0.87 there (``tests/test_task_observers.py`` shows the same in white noise
  against the closed form). The observer still learns the signal's profile from the data (a
  denoiser's blur of it included); it is told only that the profile is radial, as the SKE task says.
* **NPWE** (NPW with an eye filter, Burgess, JOSA A 11(4), 1237, 1994; Eckstein et al.; TG-233): the
  ROIs are filtered by the eye's contrast sensitivity ``E`` (:class:`EyeFilter`, applied on the ROI's DFT
  grid, :func:`eye_filter_rois`) and the NPW is applied to them; the equivalent template on the raw
  ROIs is ``F⁻¹{E²·F{Δḡ}}`` (:func:`npwe_template`), the image-domain form of TG-233's
  ``d′² = (∫|W|²E²)² / ∫|W|²E⁴·NPS`` (:mod:`analysis.metrics.task.fourier`).

**Eye filter.** ``E(ρ) = ρⁿ·exp(−c·ρᵃ)`` with ``ρ`` the radial frequency in cycles per degree of
visual angle, scaled to a peak of 1 (the scale cancels in d′). From object frequency ``f`` (cycles/mm)
on a display that shows 1 mm of the object as ``m`` mm (``magnification``) viewed from ``D`` mm:
``ρ = (f / m)·D·π/180`` (one degree spans ``D·tan 1° ≈ D·π/180`` mm of screen). Defaults ``n = 1.5``,
``c = 0.98``, ``a = 0.68``, ``D = 500`` mm, ``m = 1`` (peak at ``(n/(c·a))^(1/a)`` = 3.3 cycles/degree,
0.38 cycles/mm at these viewing defaults). **Source** (checked for issue #22 §4, as TG-233's text was not
at hand): an independent Python implementation of TG-233's NPWE d′ (function ``hvrf``, "human visual
response function", of a TG-233 d′ module in the public code index) has exactly this form, these three
parameters, ``ρ = f·FOV·D·π/(display·180)`` (our ``m`` = display size / FOV) and ``D = 500`` mm, with
TG-233's internal noise ``α·D²·σ²``, ``α = 5`` (``D`` in m); actilib (``davide84/actilib``,
``src/actilib/analysis/detectability.py``, ``get_eye_filter``, after imQuest) uses the same ``n``, ``a`` and
frequency conversion with ``c = 3.22`` (its comment: only ``c`` varies, "in one paper"), which would put the
peak at 0.57 cycles/degree, below the 2–5 cycles/degree where human contrast sensitivity peaks; we keep
0.98. ``a = 2`` gives Burgess's ``ρⁿ·exp(−cρ²)`` form (e.g. ``n = 1.3`` with the peak ``√(n/2c)`` at 4
cycles/degree: ``c = 0.0406``). Relative comparisons at fixed parameters do not depend on the choice;
absolute NPWE d′ do.

**Internal noise** (Burgess & Colborne, JOSA A 5(4), 617, 1988, "induced internal noise"; TG-233's
NPWE adds an internal-noise term): in the image domain it is added to the decision variable, with a
variance ``α`` times the external one (``internal_noise=α`` in
:func:`analysis.metrics.task.detectability.heldout_dprime`), so ``d′ → d′ / √(1 + α)``; in the
Fourier domain (:func:`analysis.metrics.task.fourier.fourier_dprime`) as a white internal-noise
spectrum ``N_i`` added after the eye filter, ``+ N_i·∫|W|²TTF²E²`` in the denominator.

Why by hand: each template is one line of linear algebra; no maintained Python package provides CT
model observers with these conventions (the FDA LCD-CT and VICTRE observers are MATLAB or research code).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import linalg

from analysis.metrics.nps import detrend_rois

Observer = Literal["hotelling", "npw", "npw_radial"]
Trainer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def signal_rois(images: np.ndarray, centre: tuple[int, int], size: int) -> np.ndarray:
    """The ``(N, size, size)`` float64 squares of ``images`` ``(N, H, W)`` (or one ``(H, W)``) whose centre
    pixel ``size // 2`` is ``centre`` (row, col), each minus its own mean."""
    imgs = np.asarray(images, dtype=np.float64)
    imgs = imgs[None] if imgs.ndim == 2 else imgs
    r0, c0 = int(centre[0]) - size // 2, int(centre[1]) - size // 2
    h, w = imgs.shape[-2:]
    if r0 < 0 or c0 < 0 or r0 + size > h or c0 + size > w:
        raise ValueError(f"a {size}×{size} ROI centred on {tuple(centre)} leaves the {h}×{w} image")
    return detrend_rois(imgs[:, r0 : r0 + size, c0 : c0 + size], "mean")


def as_features(x: np.ndarray) -> np.ndarray:
    """``(N, p)`` float64 features: a 1-D array is one feature per row, more dimensions are flattened
    row-major (``(N, n, n)`` ROIs give ``(N, n²)`` pixel features)."""
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x.reshape(len(x), -1)


def channel_outputs(rois: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Channel outputs ``v = Uᵀg``: ``(N, p)`` from ``(N, n, n)`` ROIs and a ``(n², p)`` channel matrix."""
    feats = as_features(rois)
    if feats.shape[1] != channels.shape[0]:
        raise ValueError(f"ROIs of {feats.shape[1]} pixels, channels over {channels.shape[0]}")
    return feats @ channels


def average_covariance(feat_s: np.ndarray, feat_n: np.ndarray) -> np.ndarray:
    """``K = ½(K_s + K_n)``, the average of the two classes' sample covariances (``ddof = 1``), ``(p, p)``."""
    s, n = as_features(feat_s), as_features(feat_n)
    return 0.5 * (np.atleast_2d(np.cov(s, rowvar=False)) + np.atleast_2d(np.cov(n, rowvar=False)))


def mean_difference(feat_s: np.ndarray, feat_n: np.ndarray) -> np.ndarray:
    """``Δḡ``: mean signal-present minus mean signal-absent features, ``(p,)``."""
    return as_features(feat_s).mean(axis=0) - as_features(feat_n).mean(axis=0)


def hotelling_template(feat_s: np.ndarray, feat_n: np.ndarray) -> np.ndarray:
    """``w = K⁻¹Δḡ`` with ``K`` the average class covariance: the CHO on channel outputs, the full-rank
    HO on pixel features. Raises when the covariance cannot be full rank (too few realisations)."""
    s, n = as_features(feat_s), as_features(feat_n)
    p, dof = s.shape[1], len(s) + len(n) - 2
    if dof <= p:
        raise ValueError(f"Hotelling template from {len(s)} + {len(n)} realisations and {p} features: the "
                         f"covariance has {dof} degrees of freedom and needs more than {p}")  # fmt: skip
    return linalg.solve(average_covariance(s, n), mean_difference(s, n), assume_a="pos")


def npw_template(feat_s: np.ndarray, feat_n: np.ndarray) -> np.ndarray:
    """``w = Δḡ``: the non-prewhitening matched filter (NPW; NPWE on eye-filtered ROIs)."""
    return mean_difference(feat_s, feat_n)


RADIAL_BIN_PX = 1.0


def radial_profile_image(image: np.ndarray, bin_px: float = RADIAL_BIN_PX) -> np.ndarray:
    """``image`` ``(n, n)`` replaced by its mean over rings about the centre pixel ``(n // 2, n // 2)``:
    pixel ``(i, j)`` gets the mean of every pixel whose distance to the centre falls in the same
    ``bin_px``-wide ring inside the inscribed circle; pixels beyond the inscribed circle (distance > ``n // 2``) get 0."""
    image = np.asarray(image, dtype=np.float64)
    n = image.shape[-1]
    if image.shape != (n, n):
        raise ValueError(f"a radial profile needs a square image, got shape {image.shape}")
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n // 2, xx - n // 2)
    inside = r <= n // 2
    ring = np.floor(r / bin_px).astype(np.int64)
    sums = np.bincount(ring[inside], weights=image[inside], minlength=ring.max() + 1)
    counts = np.bincount(ring[inside], minlength=ring.max() + 1)
    return np.where(inside, sums[ring] / np.maximum(counts[ring], 1), 0.0)


def radial_npw_template(feat_s: np.ndarray, feat_n: np.ndarray) -> np.ndarray:
    """``w`` = the ring average of ``Δḡ`` (:func:`radial_profile_image`): the NPW template of a rotationally
    symmetric signal at the centre of square ROIs flattened to ``(N, n²)`` features, ``(n²,)``."""
    delta = mean_difference(feat_s, feat_n)
    n = math.isqrt(delta.size)
    if n * n != delta.size:
        raise ValueError(f"a radial NPW template needs features of a square ROI, got {delta.size} features")
    return radial_profile_image(delta.reshape(n, n)).ravel()


TRAINERS: dict[str, Trainer] = {"hotelling": hotelling_template, "npw": npw_template,
                                "npw_radial": radial_npw_template}


def trainer(observer: Observer | Trainer) -> Trainer:
    """The template function of an observer name (``"hotelling"``, ``"npw"``) or a callable itself."""
    if callable(observer):
        return observer
    if observer not in TRAINERS:
        raise ValueError(f"unknown observer {observer!r}: one of {sorted(TRAINERS)} or a callable")
    return TRAINERS[observer]


def decision_variables(features: np.ndarray, template: np.ndarray) -> np.ndarray:
    """``t = wᵀg`` for each row of ``features`` ``(N, p)``: ``(N,)``."""
    return as_features(features) @ np.asarray(template, dtype=np.float64).ravel()


def hotelling_dprime(delta: np.ndarray, cov: np.ndarray) -> float:
    """Hotelling ``d′ = √(Δᵀ K⁻¹ Δ)`` with known mean difference and covariance (Cholesky solve)."""
    d = np.asarray(delta, dtype=np.float64).ravel()
    return float(np.sqrt(d @ linalg.cho_solve(linalg.cho_factor(cov), d)))


def linear_dprime(template: np.ndarray, delta: np.ndarray, cov: np.ndarray) -> float:
    """``d′ = wᵀΔ / √(wᵀKw)`` of a fixed template ``w`` with known mean difference and covariance."""
    w = np.asarray(template, dtype=np.float64).ravel()
    return float(w @ np.asarray(delta).ravel() / np.sqrt(w @ cov @ w))


@dataclass(frozen=True)
class EyeFilter:
    """``E(ρ) = ρⁿ·exp(−c·ρᵃ)``, ``ρ = (f / magnification)·viewing_distance_mm·π/180`` cycles/degree for an
    object frequency ``f`` in cycles/mm, scaled to a peak of 1 (module docstring for the defaults)."""

    n: float = 1.5
    c: float = 0.98
    a: float = 0.68
    viewing_distance_mm: float = 500.0
    magnification: float = 1.0  # display mm per object mm

    def cycles_per_degree(self, f_mm: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(f_mm, dtype=np.float64)) / self.magnification * self.viewing_distance_mm * np.pi / 180

    @property
    def peak_cycles_per_degree(self) -> float:
        """``ρ_peak = (n / (c·a))^(1/a)``, where ``dE/dρ = 0``."""
        return float((self.n / (self.c * self.a)) ** (1 / self.a))

    def __call__(self, f_mm: np.ndarray) -> np.ndarray:
        rho = self.cycles_per_degree(f_mm)
        peak = self.peak_cycles_per_degree
        return (rho / peak) ** self.n * np.exp(-self.c * (rho**self.a - peak**self.a))


def _radial_frequency(shape: tuple[int, int], pixel_mm: float) -> np.ndarray:
    fy, fx = np.fft.fftfreq(shape[0], d=pixel_mm), np.fft.fftfreq(shape[1], d=pixel_mm)
    return np.hypot(fy[:, None], fx[None, :])


def eye_filter_rois(rois: np.ndarray, pixel_mm: float, eye: EyeFilter | None = None, power: int = 1) -> np.ndarray:
    """ROIs ``(N, n, n)`` filtered by ``E^power`` on their DFT grid (circular; ``E`` is real and even, so
    the result is real), frequencies from ``pixel_mm``."""
    rois = np.asarray(rois, dtype=np.float64)
    e = (eye or EyeFilter())(_radial_frequency(rois.shape[-2:], pixel_mm)) ** power
    return np.fft.ifft2(np.fft.fft2(rois) * e).real


def npwe_template(rois_s: np.ndarray, rois_n: np.ndarray, pixel_mm: float, eye: EyeFilter | None = None) -> np.ndarray:
    """The NPWE template on raw ROIs, ``F⁻¹{E²·F{Δḡ}}`` ``(n, n)``: its decision variable on a raw ROI equals
    the NPW's on the eye-filtered ROI."""
    delta = np.asarray(rois_s, dtype=np.float64).mean(axis=0) - np.asarray(rois_n, dtype=np.float64).mean(axis=0)
    return eye_filter_rois(delta[None], pixel_mm, eye, power=2)[0]
