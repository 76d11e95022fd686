"""Image-quality metrics for CT, with one convention and a registry of fixed metadata.

The CT convention (one definition, used by every metric here and by ``ldct-bench score``):

* Images arrive in HU, ``(N, H, W)`` or ``(N, 1, H, W)``.
* Unit space: HU clipped to the display window (default abdomen [−160, 240] HU; presets and
  ``"lo,hi"`` from :mod:`benchmark.core.conventions`) and scaled to [0, 1]
  (:func:`benchmark.core.conventions.window_to_unit`), ``data_range = 1``. Every metric except
  ``rmse_hu`` works in unit space, prediction and reference alike.
* ``rmse_hu`` is computed on the raw HU images, without clipping. ``rmse`` is the RMSE in unit space
  (so ``psnr = −20·log10(rmse)`` up to piq's 1e-8), multiplied by the window width it is the RMSE in
  HU of the window-clipped images.
* SSIM is the Gaussian-window variant of Wang et al. (IEEE TIP 2004): 11×11, σ = 1.5, K1 = 0.01,
  K2 = 0.03, no downsampling, mean of the valid-convolution map.
* Gray images are repeated to 3 channels only where the implementation requires RGB (VIF via pyiqa,
  LPIPS, ST-LPIPS, DISTS). LPIPS and ST-LPIPS get ``2x − 1`` ∈ [−1, 1]; DISTS gets [0, 1].
* NIQE, PIQUE and VIF (pyiqa implementations) quantise the unit image to 8 bits internally
  (``round(255·x)``), as their reference implementations do.

Metrics needing ImageNet backbones (``lpips``, ``lpips_vgg``, ``dists``) are *unavailable* until the
weight files are present (:mod:`benchmark.core.weights`); :func:`available` says why and how to fix it.
``st_lpips`` and ``st_lpips_vgg`` need none: the stlpips-pytorch wheel ships their complete networks.

API::

    from analysis.metrics import METRICS, MetricInfo, compute_metrics, MetricUnavailable, available
    values = compute_metrics(["psnr", "ssim", "rmse_hu"], pred_hu, ref_hu, window="abdomen")
"""

from __future__ import annotations

from analysis.metrics.base import MetricInfo, MetricUnavailable, Scorer
from analysis.metrics.engine import (
    available,
    compute_metrics,
    drop_ref,
    get_scorer,
    info,
    unavailable_metrics,
)
from analysis.metrics.registry import METRICS

__all__ = [
    "METRICS",
    "MetricInfo",
    "MetricUnavailable",
    "Scorer",
    "available",
    "compute_metrics",
    "drop_ref",
    "get_scorer",
    "info",
    "unavailable_metrics",
]
