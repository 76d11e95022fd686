"""Channel profiles for the channelized Hotelling observer (CHO): Laguerre–Gauss and Gabor.

A channel matrix ``U`` has shape ``(P, p)``: ``p`` channel profiles over the ``P = n·n`` pixels of a square
ROI (row-major, as ``roi.reshape(-1)``), and the channel outputs of ROIs ``g`` are ``v = Uᵀ·g``
(:func:`analysis.metrics.task.observers.channel_outputs`). The ROI is centred on the signal: its centre
pixel is the index ``c = n // 2`` on both axes (the middle pixel for odd ``n``, the pixel right of and
below the middle for even ``n``), the same convention as
:func:`analysis.metrics.task.observers.signal_rois`; ``x = col − c``, ``y = row − c`` in pixels.

**Laguerre–Gauss (LG)** channels (Barrett, Yao, Rolland & Myers, PNAS 90, 9758, 1993; Gallas & Barrett,
JOSA A 20(9), 1725, 2003), rotationally symmetric, for rotationally symmetric signals on a smooth
background::

    u_j(r) = (√2 / a) · exp(−π r² / a²) · L_j(2π r² / a²),    j = 0 … p − 1 (p = 5 by default)

with ``L_j`` the Laguerre polynomials (``scipy.special.eval_laguerre``) and ``a`` the width in pixels.
They are orthonormal in the continuum (``∫∫ u_j u_k d²r = δ_jk``: substitute ``x = 2πr²/a²``, then
``∫₀^∞ e^{−x} L_j L_k dx = δ_jk``), and nearly so on the pixel grid when ``a`` spans a few pixels and
the ROI holds the profiles (side ≳ 2.5·a). **Choosing a.** ``u_0`` is a Gaussian of standard deviation
``a / √(2π)``, so a Gaussian signal ``A·exp(−r²/(2w²))`` lies in the span of ``u_0`` alone at
``a = √(2π)·w`` (then the CHO is the Hotelling observer in white noise: ``tests/test_task_observers.py``).
For a disk of radius ``R`` the share of its energy in the span of the 5 channels (:func:`captured_fraction`,
the CHO's efficiency in white noise) is flat near its best: within 2 points of it for ``a`` from
``0.6·R`` to ``1.25·R``, best at ``a ≈ 0.82·R`` (99.7 / 98.9 / 97.6 / 96.7 % for R = 3 / 5 / 8 / 12 px),
``a = R`` capturing 99.3 / 97.9 / 96.3 / 95.3 % and ``a = 2R`` 91–97 %; with a single channel the best
is ``a ≈ 1.58·R`` (84–91 %). (Measured on disks of 8×8 sub-pixel samples.) So ``a = R`` is a sound
default for disk inserts, and :func:`lg_width` finds the best width for any signal profile.

**Gabor** channels (Wunderlich & Noo, Proc. IEEE EMBC 2008, 2705, after Eckstein, Abbey & Bochud; the
family CT low-contrast-detectability tools use)::

    V(x, y) = exp(−4 ln2 · (x² + y²) / w_s²) · cos(2π f_c · (x cos θ + y sin θ) + β)

(``y`` runs down the rows, so θ = 45° points to the lower right) for each passband ``[f_lo, f_hi]``
(cycles/pixel): centre ``f_c = (f_lo + f_hi) / 2`` and spatial FWHM ``w_s = 4 ln2 / (π · (f_hi − f_lo))``, so the FWHM of the Gaussian's spectrum equals the bandwidth
(the envelope's Fourier transform is ∝ ``exp(−π² w_s² f² / (4 ln2))``, half maximum at
``f = 2 ln2 / (π w_s)``). Defaults: the four octaves ``[1/128, 1/64] … [1/16, 1/8]``, orientations 0,
45, 90 and 135°, even phase ``β = 0`` (``phases=("even", "odd")`` adds ``β = π/2``): 16 channels, 32
with both phases. Each profile is scaled to unit Euclidean norm on the grid. The lowest band's
``w_s`` is 113 px: an ROI smaller than about 2·w_s truncates it (the channel is then still a valid
linear feature, only no longer band-limited to its octave); Wunderlich & Noo used
``[1/64, 1/32] … [1/8, 1/4]`` and five orientations, available through ``bands`` and ``orientations``.

Why by hand: the profiles are one formula each; no maintained Python package ships CHO channels with
these conventions (the FDA LCD-CT and VICTRE tools are MATLAB or research code).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import eval_laguerre

GABOR_BANDS: tuple[tuple[float, float], ...] = ((1 / 128, 1 / 64), (1 / 64, 1 / 32), (1 / 32, 1 / 16), (1 / 16, 1 / 8))
GABOR_ORIENTATIONS_DEG: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
PHASES = {"even": 0.0, "odd": np.pi / 2}


def roi_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets ``(y, x)`` (each ``(size, size)``, float64) from the ROI centre pixel ``size // 2``."""
    if size < 1:
        raise ValueError(f"ROI side {size}: must be at least 1 pixel")
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) - size // 2
    return y, x


def laguerre_gauss(size: int, a: float, n_channels: int = 5) -> np.ndarray:
    """LG channel matrix ``(size², n_channels)``: ``u_j(r) = (√2/a)·exp(−πr²/a²)·L_j(2πr²/a²)`` with
    ``a`` in pixels, centred on pixel ``size // 2`` (module docstring)."""
    if a <= 0 or n_channels < 1:
        raise ValueError(f"LG channels need a > 0 and at least one channel (a={a}, p={n_channels})")
    y, x = roi_grid(size)
    arg = 2 * np.pi * (x * x + y * y) / a**2
    env = np.sqrt(2) / a * np.exp(-arg / 2)
    return np.stack([(env * eval_laguerre(j, arg)).ravel() for j in range(n_channels)], axis=1)


def captured_fraction(signal: np.ndarray, channels: np.ndarray) -> float:
    """``‖P_U s‖² / ‖s‖²``: the share of the signal's energy in the span of the channels (the CHO's
    efficiency relative to the Hotelling observer for that signal in white noise)."""
    s = np.asarray(signal, dtype=np.float64).ravel()
    coef, *_ = np.linalg.lstsq(channels, s, rcond=None)
    return float(np.sum((channels @ coef) ** 2) / np.sum(s * s))


def lg_width(signal: np.ndarray, n_channels: int = 5, bounds: tuple[float, float] | None = None) -> float:
    """The LG width ``a`` (pixels) that maximises :func:`captured_fraction` for a centred square
    ``signal`` profile, ``a`` within ``bounds`` (default 0.5 px … the ROI side): the best of 64
    log-spaced widths (the fraction has several local maxima in ``a``), refined between its neighbours."""
    sig = np.asarray(signal, dtype=np.float64)
    size = sig.shape[-1]
    lo, hi = bounds or (0.5, float(size))

    def loss(a: float) -> float:
        return -captured_fraction(sig, laguerre_gauss(size, a, n_channels))

    grid = np.geomspace(lo, hi, 64)
    k = int(np.argmin([loss(a) for a in grid]))
    bracket = (grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)])
    res = minimize_scalar(loss, bounds=bracket, method="bounded", options={"xatol": 1e-5})
    return float(res.x)


def gabor(size: int, bands: Sequence[tuple[float, float]] = GABOR_BANDS,
          orientations_deg: Sequence[float] = GABOR_ORIENTATIONS_DEG,
          phases: Sequence[str] = ("even",)) -> np.ndarray:  # fmt: skip
    """Gabor channel matrix ``(size², len(phases)·len(bands)·len(orientations))``, unit-norm columns,
    ordered phase-major, then band, then orientation (module docstring)."""
    y, x = roi_grid(size)
    r2 = x * x + y * y
    cols = []
    for phase in phases:
        if phase not in PHASES:
            raise ValueError(f"unknown Gabor phase {phase!r}: one of {sorted(PHASES)}")
        for f_lo, f_hi in bands:
            if not 0 < f_lo < f_hi <= 0.5:
                raise ValueError(f"Gabor band [{f_lo}, {f_hi}] cycles/px: need 0 < lo < hi ≤ 0.5")
            fc, ws = (f_lo + f_hi) / 2, 4 * np.log(2) / (np.pi * (f_hi - f_lo))
            env = np.exp(-4 * np.log(2) * r2 / ws**2)
            for theta in np.deg2rad(np.asarray(orientations_deg, dtype=np.float64)):
                v = env * np.cos(2 * np.pi * fc * (x * np.cos(theta) + y * np.sin(theta)) + PHASES[phase])
                cols.append(v.ravel() / np.linalg.norm(v))
    return np.stack(cols, axis=1)
