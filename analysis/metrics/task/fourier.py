"""Detectability in the Fourier domain from the TTF and the NPS (AAPM TG-233: Samei et al., Med. Phys.
46(11), e735, 2019, sec. 5; Richard & Samei, Med. Phys. 39(7), 4115, 2012; ICRU Report 54, 1996), and a
check of it against image-domain observers.

For a task function ``W`` (the Fourier transform of the signal: a disk of diameter ``D`` and contrast
``C`` HU, ``W(f) = C·πR²·2J₁(2πRf)/(2πRf)``, ``R = D/2``, in HU·mm², :func:`disk_task`), a TTF ``T``
(radial, interpolated onto the grid, or 2-D) and a 2-D NPS ``N`` (HU²·mm², on the grid ``fy × fx``
mm⁻¹ of :class:`analysis.metrics.nps.NPSResult`), with ``∫∫`` the sum over the grid times
``Δfx·Δfy``::

    d′²_PW   = ∫∫ |W|²T² / N                                   (prewhitening = Hotelling, stationary noise)
    d′²_NPW  = [∫∫ |W|²T²]² / ∫∫ |W|²T²·N
    d′²_NPWE = [∫∫ |W|²T²E²]² / (∫∫ |W|²T²E⁴·N + N_i·∫∫ |W|²T²E²)

``E`` is the eye filter of :class:`analysis.metrics.task.observers.EyeFilter` and ``N_i``
(``internal_noise``, HU²·mm²) a white internal noise added after the eye filter (the observers module
docstring; 0 by default). On the ``n × n`` DFT grid of an ROI with pixel ``Δ`` these are exactly the
image-domain d′ of the same observers for stationary (circulant) noise: with ``W = Δ²·DFT(s)``,
``N = Δ²·λ_k`` (``λ_k`` the covariance's eigenvalues) and ``Δf = 1/(nΔ)``, the Δ's cancel and
``d′²_PW = (1/n²)Σ|S_k|²/λ_k = sᵀK⁻¹s``, ``d′²_NPW = (sᵀs)²/(sᵀKs)`` (``tests/test_task_observers.py``).

**The DC bin.** The NPS estimator removes each ROI's mean, which zeroes the zero-frequency bin
(:mod:`analysis.metrics.nps`) exactly where ``|W|`` peaks. A zero DC bin (at most 1e-12 of the largest
bin: the mean removal leaves rounding residue of order 1e-29 there, which a prewhitening d′ would divide
by) is replaced by :func:`analysis.metrics.nps.dc_estimate` (the linear extrapolation along the axes)
before integrating; a larger one is used as given. The grid is the NPS's own: its step ``1/(nΔ)`` must resolve ``W``,
whose main lobe has a radius of ``1.22/D``, so the NPS ROI should be several lesion diameters wide
(25 mm ROIs and a 5 mm lesion: the lobe spans about six bins).

**Agreement** (:func:`compare_dprime`): the Fourier d′ assumes stationary noise and a linear system at
the task's contrast (the TTF); the image-domain d′ of the same observer does not. The image-domain d′
compared is that of the model's own template (:func:`model_template`, ``F⁻¹{W·T}``, ``·E²`` for NPWE)
applied as a fixed template to the images, so the comparison holds no template-estimation bias (a
held-out NPW d′ trained on 100 images per class is 10–25 % low at d′ ≈ 1, more below). Their ratio is flagged when it leaves ``1 ± tolerance`` (default 0.25: the sampling sd of a held-out d′ at
``MIN_REALISATIONS`` is about 9 %, so a larger gap than about 2.5 such sd is a model difference, not
noise). A CHO or HO is compared with the PW d′ as a bound (``upper_bound``): a channelized observer
reaches only part of the ideal observer's d′, so only a CHO *above* ``1 + tolerance`` times the PW d′
(impossible for a linear system in stationary noise) is flagged. A held-out d′ is biased low at small
d′ (its template is trained on noisy images), so a flag at d′ below about 0.5 says little.

Why by hand: the integrals are sums over the NPS grid; no maintained Python package has TG-233's d′.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import j1

from analysis.metrics.nps import NPSResult, dc_estimate
from analysis.metrics.task.observers import EyeFilter

FourierObserver = Literal["pw", "npw", "npwe"]
AGREEMENT_TOLERANCE = 0.25


def disk_task(f_mm: np.ndarray, diameter_mm: float, contrast_hu: float) -> np.ndarray:
    """``W(f) = C·πR²·2J₁(2πRf)/(2πRf)`` (HU·mm²) of a disk of diameter ``diameter_mm`` and contrast
    ``contrast_hu`` at radial frequencies ``f_mm`` (mm⁻¹); ``C·πR²`` at ``f = 0``."""
    radius = diameter_mm / 2
    x = 2 * np.pi * radius * np.abs(np.asarray(f_mm, dtype=np.float64))
    safe = np.where(x > 0, x, 1.0)
    jinc = np.where(x > 0, 2 * j1(safe) / safe, 1.0)
    return contrast_hu * np.pi * radius**2 * jinc


def ttf_on_grid(ttf: tuple[np.ndarray, np.ndarray] | np.ndarray | None, f_radial: np.ndarray) -> np.ndarray:
    """The TTF on a grid of radial frequencies ``f_radial``: 1 for ``None``, a radial ``(f, ttf)`` pair
    linearly interpolated (the last value beyond its range), or a 2-D array of the grid's shape."""
    if ttf is None:
        return np.ones_like(f_radial)
    if isinstance(ttf, tuple):
        f, t = (np.asarray(x, dtype=np.float64) for x in ttf)
        return np.interp(f_radial, f, t)
    arr = np.asarray(ttf, dtype=np.float64)
    if arr.shape != f_radial.shape:
        raise ValueError(f"2-D TTF of shape {arr.shape} on an NPS grid of shape {f_radial.shape}")
    return arr


def _grid(nps: NPSResult | np.ndarray, fy: np.ndarray | None, fx: np.ndarray | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    if isinstance(nps, NPSResult):
        return nps.nps, nps.fy, nps.fx
    if fy is None or fx is None:
        raise ValueError("a 2-D NPS array needs its frequency axes fy and fx (mm⁻¹, zero centred)")
    return np.asarray(nps, dtype=np.float64), np.asarray(fy, dtype=np.float64), np.asarray(fx, dtype=np.float64)


def fourier_dprime(nps: NPSResult | np.ndarray, fy: np.ndarray | None = None, fx: np.ndarray | None = None, *,
                   observer: FourierObserver = "npw", diameter_mm: float | None = None,
                   contrast_hu: float | None = None, task: np.ndarray | None = None,
                   ttf: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None, eye: EyeFilter | None = None,
                   internal_noise: float = 0.0) -> float:  # fmt: skip
    """TG-233 d′ (module docstring) of ``observer`` (``"pw"``, ``"npw"``, ``"npwe"``) from a centred 2-D
    NPS (an :class:`~analysis.metrics.nps.NPSResult`, or an array with ``fy``, ``fx`` in mm⁻¹), the task
    ``task`` (``W`` on the grid, HU·mm²) or a disk (``diameter_mm``, ``contrast_hu``), and ``ttf``."""
    n2d, fy_, fx_ = _grid(nps, fy, fx)
    f_r = np.hypot(fy_[:, None], fx_[None, :])
    if n2d.shape != f_r.shape:
        raise ValueError(f"NPS of shape {n2d.shape} and axes of {len(fy_)} × {len(fx_)}")
    iy, ix = np.nonzero(f_r == 0)
    if len(iy) and n2d[iy[0], ix[0]] <= 1e-12 * np.abs(n2d).max():  # zeroed by the mean removal (to rounding)
        n2d = n2d.copy()
        n2d[iy[0], ix[0]] = dc_estimate(n2d)
    if task is None:
        if diameter_mm is None or contrast_hu is None:
            raise ValueError("give the task W, or the disk's diameter_mm and contrast_hu")
        task = disk_task(f_r, diameter_mm, contrast_hu)
    signal = np.abs(np.asarray(task)) ** 2 * ttf_on_grid(ttf, f_r) ** 2
    area = abs(fy_[1] - fy_[0]) * abs(fx_[1] - fx_[0])
    if observer == "pw":
        keep = signal > 0
        if np.any(n2d[keep] <= 0):
            raise ValueError("the prewhitening d′ needs a positive NPS wherever the task has power")
        return float(np.sqrt(np.sum(signal[keep] / n2d[keep]) * area))
    if observer == "npw":
        return float(np.sum(signal) * area / np.sqrt(np.sum(signal * n2d) * area))
    if observer == "npwe":
        e2 = (eye or EyeFilter())(f_r) ** 2
        num = np.sum(signal * e2) * area
        den = np.sum(signal * e2 * e2 * n2d) * area + internal_noise * num
        return float(num / np.sqrt(den))
    raise ValueError(f"unknown Fourier observer {observer!r}: 'pw', 'npw' or 'npwe'")


def model_template(size: int, pixel_mm: float, *, diameter_mm: float, contrast_hu: float,
                   ttf: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None, observer: FourierObserver = "npw",
                   eye: EyeFilter | None = None) -> np.ndarray:  # fmt: skip
    """The template the Fourier d′ assumes, in the image domain on a ``size × size`` ROI of pixel
    ``pixel_mm``, centred on pixel ``size // 2``: ``F⁻¹{W·T}`` (the disk through the TTF: the signal a
    linear system with that TTF would give) for ``"npw"``, ``F⁻¹{W·T·E²}`` for ``"npwe"``, on the ROI's DFT
    grid. Applied as a fixed template to the ROIs, its image-domain d′ equals :func:`fourier_dprime` of the
    same observer on that grid exactly when the noise is stationary (circulant) with that NPS and the
    signal is ``F⁻¹{W·T}`` (module docstring); a gap is the model's failure (a nonlinear or non-stationary
    output), with no template-estimation bias in it."""
    f = np.fft.fftfreq(size, d=pixel_mm)
    f_r = np.hypot(f[:, None], f[None, :])
    spectrum = disk_task(f_r, diameter_mm, contrast_hu) * ttf_on_grid(ttf, f_r)
    if observer == "npwe":
        spectrum = spectrum * (eye or EyeFilter())(f_r) ** 2
    elif observer != "npw":
        raise ValueError(f"a model template is defined for 'npw' and 'npwe', not {observer!r}")
    image = np.fft.ifft2(spectrum).real / pixel_mm**2
    return np.roll(image, (size // 2, size // 2), axis=(0, 1))


@dataclass(frozen=True)
class Agreement:
    """Image-domain against Fourier d′: ``ratio`` = image / Fourier, ``flagged`` when outside ``1 ± tolerance``."""

    image_dprime: float
    fourier_dprime: float
    ratio: float
    tolerance: float
    flagged: bool

    def __str__(self) -> str:
        verdict = "DISAGREE" if self.flagged else "agree"
        return (f"image-domain d′ {self.image_dprime:.3g} vs Fourier d′ {self.fourier_dprime:.3g}: ratio "
                f"{self.ratio:.3f}, {verdict} (tolerance ±{self.tolerance:.0%})")  # fmt: skip


def compare_dprime(image_dprime: float, fourier_dprime: float, tolerance: float = AGREEMENT_TOLERANCE, *,
                   upper_bound: bool = False) -> Agreement:
    """Flag an image-domain d′ whose ratio to the Fourier d′ leaves ``1 ± tolerance`` (the same observer:
    NPW against ``"npw"``, NPWE against ``"npwe"``); with ``upper_bound`` (a CHO against ``"pw"``, the
    ideal linear observer, which a CHO of a few channels can only approach) only a ratio above
    ``1 + tolerance`` is flagged. A non-finite or non-positive Fourier d′ is flagged."""
    ratio = image_dprime / fourier_dprime if np.isfinite(fourier_dprime) and fourier_dprime > 0 else float("nan")
    gap = ratio - 1 if upper_bound else abs(ratio - 1)
    flagged = not np.isfinite(ratio) or gap > tolerance
    return Agreement(image_dprime=float(image_dprime), fourier_dprime=float(fourier_dprime), ratio=float(ratio),
                     tolerance=tolerance, flagged=bool(flagged))  # fmt: skip
