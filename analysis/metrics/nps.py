"""The noise power spectrum (NPS) of the residual, the CT-native noise-texture measure, and its metrics
``nps_noise_hu``, ``nps_favg`` and ``nps_fpeak``.

Definitions (ICRU Report 87, 2012, sec. 4; AAPM TG-233: Samei et al., Med. Phys. 46(11), e735, 2019;
Boedeker, Cooper & McNitt-Gray, Phys. Med. Biol. 52, 4027, 2007; Solomon, Christianson & Samei, Med. Phys.
39(10), 6048, 2012):

* **Residual**: ``r = output − reference`` in HU. With a noiseless reference (``synth`` ``target: fbp``)
  it is the noise left by the denoiser (plus any bias); with a noisy reference (``target: ndct``,
  DICOM) the reference's own noise adds its NPS.
* **ROIs**: square ``n × n`` regions placed on a grid with stride ``n / 2`` (half-overlapping, as in
  TG-233's multi-ROI estimate) wherever the square lies entirely inside the uniform-region mask
  (``synth``: the stored ``roi`` mask; otherwise :func:`benchmark.data.measure.uniform_roi` on the
  Gaussian-smoothed reference, the one threshold of the data layer). ``n`` (:func:`roi_side_px`) is the
  power of two nearest to ``ROI_MM`` = 25 mm / Δx, clamped to [8, 64] pixels: 32 px at 512² (0.78 mm)
  and on Mayo data (0.66–0.74 mm), 16 px at 256², 8 px at 96². A fixed physical size keeps the frequency
  sampling (Δf = 1 / (n·Δx) ≈ 0.04 mm⁻¹) the same across data sets; 25 mm squares fit inside liver,
  muscle and fat regions, where 64 px (50 mm at 0.78 mm) squares mostly do not.
* **Detrending**: each ROI minus its own mean (``detrend="mean"``, the default: the residual has no
  low-frequency background to remove, output and reference share it); ``detrend="poly2"`` also removes a
  least-squares 2-D second-order polynomial (ICRU 87 / TG-233 for raw images with cupping; it also
  suppresses the bins next to DC, so the DC estimate below is then low). No window.
* **2-D NPS**: ``NPS(fx, fy) = (Δx·Δy / (Nx·Ny)) · ⟨|DFT(ROI)|²⟩_ROIs`` in HU²·mm², frequencies in mm⁻¹
  (``numpy.fft.fftfreq`` / Δ, zero frequency centred). The mean removal zeroes exactly the DC bin (the
  power of the ROI means) and no other. By Parseval ``∫∫ NPS dfx dfy`` = the mean ROI variance, so
  ``noise_hu = sqrt(Σ NPS · Δfx·Δfy)`` equals the pooled ROI standard deviation (a built-in self-check,
  :attr:`NPSResult.roi_std_hu`): the noise within ROIs, without the ROI means' power (1/n² of the
  variance for white noise, more for low-pass noise).
* **Radial NPS** (1-D), on the grid ``f_k = k·Δf``, ``k = 0 … M``, ``Δf = 1 / (n·Δx)`` (the coarser axis
  when the pixels or ROIs are not square), ``M = ⌊f_Nyq / Δf⌋`` with ``f_Nyq`` = 1 / (2Δx) of the axis
  with the lower Nyquist frequency; for an even square ROI ``M = n/2`` and ``f_M = f_Nyq`` exactly. For
  ``k ≥ 1``, ``NPS_r(f_k)`` is the mean of the 2-D bins of the annulus ``|f| ∈ [(k − ½)·Δf, (k + ½)·Δf)``,
  assigned to its centre ``f_k``; the corners beyond ``(M + ½)·Δf`` are left out (the 1-D NPS ends at
  Nyquist). For ``k = 0`` the annulus is the DC bin alone, zeroed by the detrending, an artefact of the
  estimator, not a property of the noise; it is estimated from its neighbours (:func:`dc_estimate`):
  ``NPS_r(0) = 2·N(Δf) − N(2Δf)``, the linear extrapolation along each frequency axis (``N`` = the mean
  of the axis's bins at ``±Δf``, ``±2Δf``), averaged over the two axes and clipped at 0. It is exact for
  white noise and for the ``∝ |f|`` (ramp) rise of FBP noise at low frequency; for a smooth low-pass
  spectrum ``N₀ + b·f²`` it is ``2|b|·Δf²`` high. The mean of the adjacent bins (``N(Δf)``) and the
  even-quadratic extrapolation ``(4·N(Δf) − N(2Δf)) / 3`` gave larger f_avg errors against the closed
  forms below (at 16 px, Gaussian noise of σ 1.5 px: +14.7 % and +8.9 % against −1.0 %; FBP-like noise:
  −7.7 % and −6.7 % against −4.5 %; at 64 px all three agree within about 1 point).
* **f_avg** = ``∫₀^{f_M} f·NPS_r(f) df / ∫₀^{f_M} NPS_r(f) df`` (:func:`average_frequency`), the average
  frequency of the **1-D radial** NPS as TG-233 defines it (after Solomon et al.), not the 2-D mean
  ``∫∫ |f|·NPS d²f / ∫∫ NPS d²f``, which weights each radius by its circumference (white noise:
  ``2/3·f_Nyq`` over the Nyquist disc instead of ``f_Nyq / 2``). Both integrals by the trapezoid rule on
  ``f_k`` (weights ½ at ``k = 0`` and ``k = M``), exact for a linear integrand: white noise gives
  ``f_Nyq / 2`` exactly. **f_peak** = the ``f_k`` of the largest ``NPS_r(f_k)``, ``k = 0`` included
  (low-pass noise: 0), resolution ``Δf`` (:func:`peak_frequency`). Both in mm⁻¹.
* **Smallest ROI** (``SPECTRUM_MIN_PX`` = 16 px): an ``n``-pixel ROI sees the NPS through the lag window
  ``(1 − |τx|/n)·(1 − |τy|/n)`` (the expected periodogram is the NPS convolved with the Fejér kernel),
  which moves power out of peaks into dips, a bias of the order of the noise correlation length over
  ``n`` that no DC handling removes. Errors of f_avg against the continuous radial spectra (exact
  expectations, ``tests/test_nps.py``) at 8 / 16 / 32 / 64 px: white noise 0 / 0 / 0 / 0 %; Gaussian-
  filtered, σ 1.5 px: +11.5 / −1.0 / +2.3 / +2.2 %, σ 2 px: +40 / −1.0 / +1.9 / +2.6 %; white + low-pass
  (0.2 + the σ 1.5 px spectrum): +19 / +4.9 / +2.8 / +1.7 %; FBP-like (``|f|·cos⁴(πf·Δx)``): −18 / −4.5 / −1.6 / −0.8 %, and at 8 px its
  peak (0.15 cycles/px) comes out 0. From 16 px on, f_avg is within 6.5 % and f_peak within one step
  ``Δf``; below, f_avg and f_peak are NaN (``noise_hu`` is still given: Parseval holds at any size). So,
  per data set: ``synth`` full (512², 0.78 mm) and Mayo data: 32 px, within 3 %; ``synth`` small (256²,
  1.56 mm: ``small.yaml`` and the ``*-cpu`` presets): 16 px, within 6.5 % (on the simulator's own FBP
  noise, input − noiseless FBP, within 1 % of 32 and 64 px ROIs); ``synth`` tiny (96², 4.17 mm): 8 px,
  NaN (there 8 px ROIs put f_avg of the FBP noise 9 % below 32 px ROIs and f_peak at 0 instead of
  0.04–0.05 mm⁻¹; 16 px squares, 67 mm, fit on few of its slices). With the 4–15 ROIs of one 256² slice
  the statistical error of one image's f_avg (about 5–13 % at 16 px) exceeds these biases; patient
  means average it down.
* **Before issue #20 §2** the zeroed DC bin was the radial NPS at ``k = 0`` and f_avg a plain sum
  ``Σ f_k·NPS_r / Σ NPS_r``; f_peak skipped ``k = 0``. White noise gave ``f_Nyq/2 + Δf/2`` (+25 / +12.5 /
  +6.2 / +3.1 % at 8 / 16 / 32 / 64 px), Gaussian-filtered noise of σ 1.5 px +147 / +58 / +25 / +12 %,
  and f_peak was never 0.

Why by hand (numpy): no maintained Python library computes a CT NPS with ROI placement from a region
mask and these normalisations (scikit-image, scipy.signal and pyiqa have periodograms of whole signals,
not ICRU 87 multi-ROI estimates in HU²·mm²); the estimator is about sixty lines of numpy FFT and is
checked in ``tests/test_nps.py`` against white and linearly filtered noise of known spectrum (closed
forms, ``scipy.integrate.quad``, and the exact expected periodogram of the ROI size).

An image with no uniform square of side ``n`` gives NaN (no estimate), never a value from non-uniform
regions; f_avg and f_peak are also NaN for ROIs below ``SPECTRUM_MIN_PX``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from analysis.metrics.base import RegionScorer
from benchmark.data.measure import uniform_roi

ROI_MM = 25.0  # physical ROI side the pixel side is derived from (roi_side_px)
REF_SMOOTH_MM = 2.0  # Gaussian σ applied to the reference before the uniform-region threshold
Detrend = Literal["mean", "poly2"]
Quantity = Literal["noise_hu", "favg", "fpeak"]
SPECTRUM_MIN_PX = 16  # smallest ROI side whose f_avg / f_peak are reported (module docstring)


def roi_side_px(pixel_mm: float) -> int:
    """ROI side in pixels: the power of two nearest (in log) to ``ROI_MM / pixel_mm``, clamped to [8, 64]."""
    return int(np.clip(2 ** round(np.log2(ROI_MM / pixel_mm)), 8, 64))


def _spacing(pixel_mm: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(pixel_mm, tuple):
        return float(pixel_mm[0]), float(pixel_mm[1])
    return float(pixel_mm), float(pixel_mm)


def roi_corners(mask: np.ndarray, n: int, stride: int | None = None) -> np.ndarray:
    """Top-left corners ``(K, 2)`` (row, col) of the ``n × n`` squares on a grid of step ``stride``
    (default ``n // 2``) that lie entirely inside the bool ``mask`` ``(H, W)``."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    step = stride or max(1, n // 2)
    if h < n or w < n:
        return np.zeros((0, 2), dtype=int)
    s = np.zeros((h + 1, w + 1), dtype=np.int64)
    s[1:, 1:] = mask.cumsum(0).cumsum(1)  # integral image: pixels inside per square in O(1)
    rows, cols = np.arange(0, h - n + 1, step), np.arange(0, w - n + 1, step)
    r0, c0 = np.ix_(rows, cols)
    grid = (s[r0 + n, c0 + n] - s[r0, c0 + n] - s[r0 + n, c0] + s[r0, c0]) == n * n
    r, c = np.nonzero(grid)
    return np.stack([rows[r], cols[c]], axis=1) if len(r) else np.zeros((0, 2), dtype=int)


def extract_rois(image: np.ndarray, corners: np.ndarray, n: int) -> np.ndarray:
    """The ``(K, n, n)`` float64 squares of ``image`` ``(H, W)`` at ``corners`` ``(K, 2)``."""
    img = np.asarray(image, dtype=np.float64)
    return np.stack([img[r : r + n, c : c + n] for r, c in corners]) if len(corners) else np.zeros((0, n, n))


def detrend_rois(rois: np.ndarray, detrend: Detrend = "mean") -> np.ndarray:
    """``(K, Ny, Nx)`` ROIs minus their mean (``"mean"``) or their least-squares 2-D second-order
    polynomial ``a + b·x + c·y + d·x² + e·x·y + f·y²`` (``"poly2"``)."""
    rois = np.asarray(rois, dtype=np.float64)
    if detrend == "mean":
        return rois - rois.mean(axis=(-2, -1), keepdims=True)
    ny, nx = rois.shape[-2:]
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    y, x = (y - y.mean()) / ny, (x - x.mean()) / nx
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y]).reshape(6, -1).T  # (P, 6)
    flat = rois.reshape(len(rois), -1).T  # (P, K)
    coef, *_ = np.linalg.lstsq(basis, flat, rcond=None)
    return (flat - basis @ coef).T.reshape(rois.shape)


def nps_2d(rois: np.ndarray, pixel_mm: float | tuple[float, float], *, detrend: Detrend = "mean"
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """2-D NPS of ``(K, Ny, Nx)`` ROIs in HU with pixel spacing ``pixel_mm`` (Δ, or (Δy, Δx)) in mm.

    Returns ``(nps (Ny, Nx) HU²·mm², fy (Ny,) mm⁻¹, fx (Nx,) mm⁻¹)``, zero frequency centred
    (``fftshift``): ``NPS = Δx·Δy / (Nx·Ny) · mean_k |DFT(detrended ROI_k)|²``.
    """
    dy, dx = _spacing(pixel_mm)
    rois = detrend_rois(rois, detrend)
    if not len(rois):
        raise ValueError("no ROI to estimate the NPS from")
    ny, nx = rois.shape[-2:]
    if min(ny, nx) < 4:
        raise ValueError(f"ROIs of {ny} × {nx} pixels: the NPS needs a side of at least 4")
    power = (np.abs(np.fft.fft2(rois)) ** 2).mean(axis=0)
    nps = np.fft.fftshift(power) * (dx * dy) / (nx * ny)
    fy = np.fft.fftshift(np.fft.fftfreq(ny, d=dy))
    fx = np.fft.fftshift(np.fft.fftfreq(nx, d=dx))
    return nps, fy, fx


def dc_estimate(nps: np.ndarray) -> float:
    """``NPS(0)`` of a centred 2-D NPS from its neighbours along the two axes: ``2·N₁ − N₂``, the linear
    extrapolation to 0 of ``N₁`` and ``N₂``, the means of an axis's bins at ``±Δf`` and ``±2Δf``; the mean
    over the two axes, clipped at 0 (module docstring)."""
    estimates = []
    for line in (nps[nps.shape[0] // 2, :], nps[:, nps.shape[1] // 2]):
        c, size = len(line) // 2, len(line)
        n1 = (line[(c + 1) % size] + line[c - 1]) / 2
        n2 = (line[(c + 2) % size] + line[c - 2]) / 2
        estimates.append(2 * n1 - n2)
    return max(0.0, float(np.mean(estimates)))


def radial_average(nps: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial (1-D) NPS of a centred 2-D NPS: ``(f (M+1,) mm⁻¹, nps (M+1,) HU²·mm²)`` on ``f_k = k·Δf``,
    ``k = 0 … M = ⌊f_nyq / Δf⌋`` (``Δf`` the coarser axis's frequency step, ``f_nyq`` the lower of the two
    axes' Nyquist frequencies): for ``k ≥ 1`` the mean over the annulus ``|f| ∈ [(k − ½)·Δf, (k + ½)·Δf)``, for
    ``k = 0`` :func:`dc_estimate` (the DC bin itself is the removed ROI mean)."""
    df = max(abs(fy[1] - fy[0]), abs(fx[1] - fx[0]))
    nyq = min(np.abs(fy).max(), np.abs(fx).max())
    k = np.rint(np.hypot(fy[:, None], fx[None, :]) / df).astype(int).ravel()
    nb = int(np.floor(nyq / df + 1e-9)) + 1
    keep = k < nb
    sums = np.bincount(k[keep], weights=nps.ravel()[keep], minlength=nb)
    radial = sums / np.maximum(np.bincount(k[keep], minlength=nb), 1)
    radial[0] = dc_estimate(nps)
    return np.arange(nb) * df, radial


def trapezoid_weights(nb: int) -> np.ndarray:
    """Trapezoid-rule weights (in units of the step) of ``nb ≥ 2`` equally spaced samples."""
    w = np.ones(nb)
    w[[0, -1]] = 0.5
    return w


def average_frequency(f: np.ndarray, radial: np.ndarray) -> float:
    """``f_avg = ∫ f·NPS_r(f) df / ∫ NPS_r(f) df`` over ``[0, f[-1]]`` by the trapezoid rule on the
    equally spaced radial grid ``f`` (NaN when the integral is 0)."""
    w = trapezoid_weights(len(f)) * radial
    total = float(w.sum())
    return float((w * f).sum() / total) if total > 0 else float("nan")


def peak_frequency(f: np.ndarray, radial: np.ndarray) -> float:
    """``f_peak``: the radial frequency of the largest radial NPS value, 0 included."""
    return float(f[int(np.argmax(radial))])


@dataclass(frozen=True)
class NPSResult:
    """One NPS estimate: 2-D and radial spectra and the summary numbers (units in the field names'
    docs: HU, mm⁻¹, HU²·mm²)."""

    nps: np.ndarray  # (Ny, Nx) HU²·mm², zero frequency centred
    fy: np.ndarray  # (Ny,) mm⁻¹
    fx: np.ndarray  # (Nx,) mm⁻¹
    f: np.ndarray  # (M+1,) radial frequency k·Δf, mm⁻¹
    radial: np.ndarray  # (M+1,) radial NPS, HU²·mm² ([0]: the DC estimate)
    noise_hu: float  # sqrt(∫∫ NPS df), HU
    roi_std_hu: float  # pooled std of the detrended ROIs, HU (equals noise_hu by Parseval)
    f_avg: float  # mm⁻¹; NaN for ROIs smaller than SPECTRUM_MIN_PX
    f_peak: float  # mm⁻¹; NaN for ROIs smaller than SPECTRUM_MIN_PX
    n_rois: int

    def quantity(self, name: Quantity) -> float:
        return {"noise_hu": self.noise_hu, "favg": self.f_avg, "fpeak": self.f_peak}[name]


def estimate_nps(rois: np.ndarray, pixel_mm: float | tuple[float, float], *, detrend: Detrend = "mean") -> NPSResult:
    """The NPS of ``(K, Ny, Nx)`` ROIs (HU) and its summary numbers (module docstring); ``f_avg`` and
    ``f_peak`` are NaN when the ROI side is below ``SPECTRUM_MIN_PX``."""
    nps, fy, fx = nps_2d(rois, pixel_mm, detrend=detrend)
    f, radial = radial_average(nps, fy, fx)
    resolved = min(nps.shape) >= SPECTRUM_MIN_PX
    resid = detrend_rois(rois, detrend)
    return NPSResult(
        nps=nps, fy=fy, fx=fx, f=f, radial=radial,
        noise_hu=float(np.sqrt(nps.sum() * abs(fy[1] - fy[0]) * abs(fx[1] - fx[0]))),
        roi_std_hu=float(np.sqrt((resid**2).mean())),
        f_avg=average_frequency(f, radial) if resolved else float("nan"),
        f_peak=peak_frequency(f, radial) if resolved else float("nan"),
        n_rois=len(rois),
    )  # fmt: skip


def reference_mask(reference_hu: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Uniform-region mask of a reference slice ``(H, W)`` when the dataset gives none:
    :func:`benchmark.data.measure.uniform_roi` after a Gaussian of σ ``REF_SMOOTH_MM`` (so that the
    noise of a noisy reference does not hide uniformity)."""
    return uniform_roi(np.asarray(reference_hu), pixel_mm, smooth_mm=REF_SMOOTH_MM)


def image_nps(residual_hu: np.ndarray, mask: np.ndarray, pixel_mm: float, *, roi_px: int | None = None,
              detrend: Detrend = "mean") -> NPSResult | None:  # fmt: skip
    """The NPS of one residual image ``(H, W)`` HU over the ``roi_px`` squares (default
    :func:`roi_side_px`) inside ``mask``; None when no square fits."""
    n = roi_px or roi_side_px(pixel_mm)
    corners = roi_corners(mask, n)
    if not len(corners):
        return None
    return estimate_nps(extract_rois(residual_hu, corners, n), pixel_mm, detrend=detrend)


class NPSMetric(RegionScorer):
    """One NPS summary (``quantity``: ``noise_hu``, ``favg`` or ``fpeak``) of ``pred − ref`` per image, in
    HU or mm⁻¹; NaN for an image without a uniform ROI (``favg``, ``fpeak``: also for ROI sides below
    ``SPECTRUM_MIN_PX``, e.g. the 8 px of 96² images). Input space ``"hu"``. The reference side
    (:meth:`prepare_region_ref`) holds the reference and each image's ROI corners."""

    def __init__(self, quantity: Quantity, device: torch.device | None = None) -> None:
        super().__init__(device)
        self.quantity: Quantity = quantity

    def prepare_region_ref(self, ref: torch.Tensor, roi: np.ndarray | None, pixel_mm: float) -> Any:
        ref_np = ref[:, 0].double().cpu().numpy()
        n = roi_side_px(pixel_mm)
        masks = roi if roi is not None else [reference_mask(r, pixel_mm) for r in ref_np]
        return ref_np, [roi_corners(m, n) for m in masks], pixel_mm, n

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        ref_np, corners, pixel_mm, n = ref_state
        resid = pred[:, 0].double().cpu().numpy() - ref_np
        out = torch.full((len(resid),), float("nan"), dtype=torch.float64)
        for i, (r, c) in enumerate(zip(resid, corners)):
            if len(c):
                out[i] = estimate_nps(extract_rois(r, c, n), pixel_mm).quantity(self.quantity)
        return out
