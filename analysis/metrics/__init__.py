"""Image-quality metrics for CT, with one convention and a registry of fixed metadata.

The CT convention (one definition, used by every metric here and by ``ldct-bench score``):

* Images arrive in HU, ``(N, H, W)`` or ``(N, 1, H, W)``.
* Unit space: HU clipped to the display window (default abdomen [−160, 240] HU; presets and
  ``"lo,hi"`` from :mod:`benchmark.conventions`) and scaled to [0, 1]
  (:func:`benchmark.conventions.window_to_unit`), ``data_range = 1``. Every metric except
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
weight files are present (:mod:`analysis.weights`); :func:`available` says why and how to fix it.
``st_lpips`` and ``st_lpips_vgg`` need none: the stlpips-pytorch wheel ships their complete networks.

API::

    from analysis.metrics import METRICS, MetricInfo, compute_metrics, MetricUnavailable, available
    values = compute_metrics(["psnr", "ssim", "rmse_hu"], pred_hu, ref_hu, window="abdomen")
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from analysis.metrics import deep, full_reference, no_reference, shift_tolerant
from analysis.metrics.base import INF, MetricInfo, MetricUnavailable, Scorer
from analysis.metrics.engine import (
    available,
    compute_metrics,
    drop_ref,
    get_scorer,
    info,
    unavailable_metrics,
)

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

FR: Literal["full_reference"] = "full_reference"
NR: Literal["no_reference"] = "no_reference"

# The registry: every metric, filled in this one place.
METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo(
            name="psnr",
            kind=FR,
            higher_is_better=True,
            differentiable=True,
            value_domain=(0.0, 80.0),
            library="piq",
            weights=(),
            unit="dB",
            summary="peak signal-to-noise ratio on the windowed [0, 1] image, data_range 1",
            paper="Huynh-Thu & Ghanbari, Electronics Letters 2008",
            build=full_reference.PSNR,
        ),
        MetricInfo(
            name="ssim",
            kind=FR,
            higher_is_better=True,
            differentiable=True,
            value_domain=(-1.0, 1.0),
            library="piq",
            weights=(),
            summary="SSIM, Gaussian 11×11 σ=1.5, K1=0.01, K2=0.03, no downsampling",
            paper="Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004",
            min_size=11,
            build=full_reference.SSIM,
        ),
        MetricInfo(
            name="ms_ssim",
            kind=FR,
            higher_is_better=True,
            differentiable=True,
            value_domain=(0.0, 1.0),
            library="piq",
            weights=(),
            summary="multi-scale SSIM, 5 scales, Gaussian 11×11 σ=1.5",
            paper="Wang, Simoncelli & Bovik, Asilomar 2003",
            min_size=161,
            build=full_reference.MSSSIM,
        ),
        MetricInfo(
            name="rmse_hu",
            kind=FR,
            higher_is_better=False,
            differentiable=True,
            value_domain=(0.0, INF),
            library="torch",
            weights=(),
            unit="HU",
            summary="root mean squared error of the raw HU images (no window clipping)",
            space="hu",
            build=full_reference.RMSE,
        ),
        MetricInfo(
            name="rmse",
            kind=FR,
            higher_is_better=False,
            differentiable=True,
            value_domain=(0.0, 1.0),
            library="torch",
            weights=(),
            unit="window width",
            summary="root mean squared error of the windowed [0, 1] images (× window width = HU)",
            build=full_reference.RMSE,
        ),
        MetricInfo(
            name="vif",
            kind=FR,
            higher_is_better=True,
            differentiable=False,
            value_domain=(0.0, INF),
            library="pyiqa",
            weights=(),
            summary="visual information fidelity, wavelet (steerable pyramid) domain, 8-bit window",
            paper="Sheikh & Bovik, IEEE TIP 2006",
            min_size=64,
            build=full_reference.VIF,
        ),
        MetricInfo(
            name="vif_p",
            kind=FR,
            higher_is_better=True,
            differentiable=True,
            value_domain=(0.0, INF),
            library="piq",
            weights=(),
            summary="visual information fidelity, pixel domain (VIFp); not the same values as vif",
            paper="Sheikh & Bovik, IEEE TIP 2006",
            min_size=41,
            build=full_reference.VIFp,
        ),
        MetricInfo(
            name="fsim",
            kind=FR,
            higher_is_better=True,
            differentiable=True,
            value_domain=(0.0, 1.0),
            library="piq",
            weights=(),
            summary="feature similarity (phase congruency + gradient), gray",
            paper="Zhang, Zhang, Mou & Zhang, IEEE TIP 2011",
            min_size=8,
            build=full_reference.FSIM,
        ),
        MetricInfo(
            name="gmsd",
            kind=FR,
            higher_is_better=False,
            differentiable=True,
            value_domain=(0.0, INF),
            library="piq",
            weights=(),
            summary="gradient magnitude similarity deviation",
            paper="Xue, Zhang, Mou & Bovik, IEEE TIP 2014",
            min_size=8,
            build=full_reference.GMSD,
        ),
        MetricInfo(
            name="lpips",
            kind=FR,
            higher_is_better=False,
            differentiable=True,
            value_domain=(0.0, INF),
            library="lpips",
            weights=("alexnet",),
            summary="LPIPS v0.1, AlexNet backbone, [−1, 1] input, gray repeated to RGB",
            paper="Zhang, Isola, Efros, Shechtman & Wang, CVPR 2018",
            min_size=32,
            build=partial(deep.LPIPS, "alex"),
        ),
        MetricInfo(
            name="lpips_vgg",
            kind=FR,
            higher_is_better=False,
            differentiable=True,
            value_domain=(0.0, INF),
            library="lpips",
            weights=("vgg16",),
            summary="LPIPS v0.1, VGG16 backbone, [−1, 1] input, gray repeated to RGB (memory-hungry)",
            paper="Zhang, Isola, Efros, Shechtman & Wang, CVPR 2018",
            min_size=32,
            build=partial(deep.LPIPS, "vgg"),
        ),
        MetricInfo(
            name="dists",
            kind=FR,
            higher_is_better=False,
            differentiable=True,
            value_domain=(0.0, 1.0),
            library="DISTS_pytorch",
            weights=("vgg16",),
            summary="deep image structure and texture similarity, VGG16 backbone, gray repeated to RGB",
            paper="Ding, Ma, Wang & Simoncelli, IEEE TPAMI 2020",
            min_size=32,
            build=deep.DISTS,
        ),
        MetricInfo(
            name="st_lpips",
            kind=FR,
            higher_is_better=False,
            differentiable=True,
            value_domain=(0.0, INF),
            library="stlpips-pytorch",
            weights=(),
            summary="shift-tolerant LPIPS, anti-aliased AlexNet (shipped complete), [−1, 1] input, gray to RGB",
            paper="Ghildyal & Liu, ECCV 2022",
            min_size=32,
            build=partial(shift_tolerant.STLPIPS, "alex"),
        ),
        MetricInfo(
            name="st_lpips_vgg",
            kind=FR,
            higher_is_better=False,
            differentiable=True,
            value_domain=(0.0, INF),
            library="stlpips-pytorch",
            weights=(),
            summary="shift-tolerant LPIPS, anti-aliased VGG16 (shipped complete), [−1, 1] input, gray to RGB",
            paper="Ghildyal & Liu, ECCV 2022",
            min_size=32,
            build=partial(shift_tolerant.STLPIPS, "vgg"),
        ),
        MetricInfo(
            name="niqe",
            kind=NR,
            higher_is_better=False,
            differentiable=False,
            value_domain=(0.0, INF),
            library="pyiqa",
            weights=(),
            summary="NIQE with the published pristine model (shipped), 96×96 blocks, 8-bit window",
            paper="Mittal, Soundararajan & Bovik, IEEE SPL 2013",
            min_size=192,
            build=no_reference.NIQE,
        ),
        MetricInfo(
            name="pique",
            kind=NR,
            higher_is_better=False,
            differentiable=False,
            value_domain=(0.0, 100.0),
            library="pyiqa",
            weights=(),
            summary="perception-based image quality evaluator (pyiqa 'piqe'), 16×16 blocks, 8-bit window",
            paper="Venkatanath N., Praneeth D., Bh. M. C., Channappayya & Medasani, NCC 2015",
            min_size=16,
            build=no_reference.PIQUE,
        ),
    ]
}
