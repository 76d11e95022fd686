"""Noise measurements shared by the datasets and ``data inspect``: uniform regions and noise std in HU."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def uniform_roi(image_hu: np.ndarray, pixel_mm: float, *, max_std_hu: float = 12.0, smooth_mm: float = 0.0) -> np.ndarray:
    """Uniform soft-tissue/fluid regions of a slice ``(H, W)`` → bool mask.

    Pixels whose ~8 mm neighbourhood varies by less than ``max_std_hu`` (std) and lies in
    [−150, 250] HU: fat, muscle, organ parenchyma; not edges, bone, lung or air. ``smooth_mm`` > 0
    first applies a Gaussian of that σ (for noisy real images, so noise does not hide uniformity).
    """
    img = image_hu.astype(np.float64)
    if smooth_mm > 0:
        img = ndimage.gaussian_filter(img, smooth_mm / pixel_mm)
    size = max(3, round(8.0 / pixel_mm) | 1)
    mean = ndimage.uniform_filter(img, size)
    sq = ndimage.uniform_filter(img * img, size)
    std = np.sqrt(np.maximum(sq - mean * mean, 0))
    roi = (std < max_std_hu) & (img > -150) & (img < 250)
    return ndimage.binary_erosion(roi, iterations=1)


def difference_noise_std(noisy: np.ndarray, reference: np.ndarray, roi: np.ndarray) -> float:
    """Std in HU of ``noisy − reference`` over ``roi`` (all arrays ``(S, H, W)`` or ``(H, W)``).

    With a noiseless reference of the same blur this is the noise std; with a noisy reference it is
    ``sqrt(σ_noisy² + σ_ref²)``.
    """
    roi = np.asarray(roi, dtype=bool)
    if not roi.any():
        raise ValueError("the region of interest is empty")
    diff = np.asarray(noisy, dtype=np.float64)[roi] - np.asarray(reference, dtype=np.float64)[roi]
    return float(diff.std())
