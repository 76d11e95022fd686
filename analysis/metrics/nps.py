"""The noise power spectrum (NPS) of the residual, the CT-native noise-texture measure, and its metrics
``nps_noise_hu``, ``nps_favg`` and ``nps_fpeak``.

Definitions (ICRU Report 87, 2012, sec. 4; AAPM TG-233, Samei et al., Med. Phys. 46(11), 2019;
Boedeker, Cooper & McNitt-Gray, Phys. Med. Biol. 52, 2007; Solomon & Samei, Med. Phys. 39(11), 2012):

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
  least-squares 2-D second-order polynomial (ICRU 87 / TG-233 for raw images with cupping). No window.
* **2-D NPS**: ``NPS(fx, fy) = (Δx·Δy / (Nx·Ny)) · ⟨|DFT(ROI)|²⟩_ROIs`` in HU²·mm², frequencies in mm⁻¹
  (``numpy.fft.fftfreq`` / Δ, zero frequency centred). By Parseval ``∫∫ NPS dfx dfy`` = the mean ROI
  variance, so ``noise_hu = sqrt(Σ NPS · Δfx·Δfy)`` equals the pooled ROI standard deviation (a built-in
  self-check, :attr:`NPSResult.roi_std_hu`).
* **Radial NPS** (1-D): the mean of the 2-D NPS over annuli ``|f| ∈ [(k − ½)·Δf, (k + ½)·Δf)``,
  ``k = 0 … n/2`` (up to the Nyquist frequency 1 / (2Δx)), ``Δf = 1 / (n·Δx)`` (the coarser axis when
  the pixels are not square).
* **f_avg** = ``Σ_k f_k·NPS(f_k) / Σ_k NPS(f_k)`` over the radial NPS (Solomon & Samei 2012's average
  frequency), **f_peak** = ``argmax_k NPS(f_k)``, both in mm⁻¹.

Why by hand (numpy): no maintained Python library computes a CT NPS with ROI placement from a region
mask and these normalisations (scikit-image, scipy.signal and pyiqa have periodograms of whole signals,
not ICRU 87 multi-ROI estimates in HU²·mm²); the estimator is about forty lines of numpy FFT and is
checked in ``tests/test_nps.py`` against white and linearly filtered noise of known spectrum.

An image with no uniform square of side ``n`` gives NaN (no estimate), never a value from non-uniform
regions.
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
    power = (np.abs(np.fft.fft2(rois)) ** 2).mean(axis=0)
    nps = np.fft.fftshift(power) * (dx * dy) / (nx * ny)
    fy = np.fft.fftshift(np.fft.fftfreq(ny, d=dy))
    fx = np.fft.fftshift(np.fft.fftfreq(nx, d=dx))
    return nps, fy, fx


def radial_average(nps: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial (1-D) NPS of a centred 2-D NPS: ``(f (B,) mm⁻¹, nps (B,) HU²·mm²)``, the mean over annuli of
    width ``Δf`` (the coarser axis's frequency step) centred on ``k·Δf``, ``k = 0 … ⌊f_nyq / Δf⌋``
    (``f_nyq`` the smaller axis's Nyquist frequency)."""
    df = max(abs(fy[1] - fy[0]) if len(fy) > 1 else 0.0, abs(fx[1] - fx[0]) if len(fx) > 1 else 0.0)
    nyq = min(np.abs(fy).max(), np.abs(fx).max())
    radius = np.hypot(fy[:, None], fx[None, :])
    k = np.rint(radius / df).astype(int).ravel()
    nb = int(np.floor(nyq / df + 1e-9)) + 1
    keep = k < nb
    sums = np.bincount(k[keep], weights=nps.ravel()[keep], minlength=nb)
    counts = np.bincount(k[keep], minlength=nb)
    return np.arange(nb) * df, sums / np.maximum(counts, 1)


@dataclass(frozen=True)
class NPSResult:
    """One NPS estimate: 2-D and radial spectra and the summary numbers (units in the field names'
    docs: HU, mm⁻¹, HU²·mm²)."""

    nps: np.ndarray  # (Ny, Nx) HU²·mm², zero frequency centred
    fy: np.ndarray  # (Ny,) mm⁻¹
    fx: np.ndarray  # (Nx,) mm⁻¹
    f: np.ndarray  # (B,) radial frequency, mm⁻¹
    radial: np.ndarray  # (B,) radial NPS, HU²·mm²
    noise_hu: float  # sqrt(∫∫ NPS df), HU
    roi_std_hu: float  # pooled std of the detrended ROIs, HU (equals noise_hu by Parseval)
    f_avg: float  # mm⁻¹
    f_peak: float  # mm⁻¹
    n_rois: int

    def quantity(self, name: Quantity) -> float:
        return {"noise_hu": self.noise_hu, "favg": self.f_avg, "fpeak": self.f_peak}[name]


def estimate_nps(rois: np.ndarray, pixel_mm: float | tuple[float, float], *, detrend: Detrend = "mean") -> NPSResult:
    """The NPS of ``(K, Ny, Nx)`` ROIs (HU) and its summary numbers (module docstring)."""
    nps, fy, fx = nps_2d(rois, pixel_mm, detrend=detrend)
    f, radial = radial_average(nps, fy, fx)
    dfy, dfx = abs(fy[1] - fy[0]), abs(fx[1] - fx[0])
    total = float(radial.sum())
    resid = detrend_rois(rois, detrend)
    return NPSResult(
        nps=nps, fy=fy, fx=fx, f=f, radial=radial,
        noise_hu=float(np.sqrt(nps.sum() * dfy * dfx)),
        roi_std_hu=float(np.sqrt((resid**2).mean())),
        f_avg=float((f * radial).sum() / total) if total > 0 else float("nan"),
        f_peak=float(f[1:][np.argmax(radial[1:])]) if len(f) > 1 else float("nan"),
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
    HU or mm⁻¹; NaN for an image without a uniform ROI. Input space ``"hu"``. The reference side
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
