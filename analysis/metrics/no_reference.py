"""No-reference metrics: NIQE and PIQUE (pyiqa's implementations), on windowed [0, 1] gray images.

* NIQE (Mittal, Soundararajan & Bovik, IEEE SPL 2013) with the published pristine-image model
  shipped in ``analysis/data/niqe_pris_params.npz`` (provenance in ``analysis/data/README.md``),
  passed to pyiqa's ``calculate_niqe`` directly, so NIQE never touches pyiqa's download path.
  The gray image is scaled to the 8-bit range and rounded by pyiqa, 96×96 blocks, two scales.
  The CT path runs :func:`niqe_fast`: pyiqa's computation with its one slow step (a float64 7×7
  ``conv2d``) done as shifted multiply-adds; it equals :func:`niqe_pyiqa` within ``NIQE_TOLERANCE``.
* PIQUE (Venkatanath N. et al., NCC 2015; pyiqa's ``piqe``), 16×16 blocks on the 8-bit image.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from analysis.metrics.base import Scorer, per_image
from benchmark.core.compat import ensure_torchvision

NIQE_PARAMS_FILE = "niqe_pris_params.npz"
NIQE_TOLERANCE = 1e-6  # |niqe_fast − niqe_pyiqa| allowed by the tests (measured ≈ 1e-11 on 512² images)


@lru_cache(maxsize=1)
def niqe_params() -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu (36,), cov (36, 36))`` float64 of the NIQE pristine model shipped as package data."""
    with resources.files("analysis").joinpath("data", NIQE_PARAMS_FILE).open("rb") as f:
        data = np.load(f)
        mu = np.ravel(data["mu_pris_param"]).astype(np.float64)
        cov = np.asarray(data["cov_pris_param"], dtype=np.float64)
    return torch.from_numpy(mu), torch.from_numpy(cov)


def niqe_pyiqa(x: torch.Tensor) -> torch.Tensor:
    """pyiqa's NIQE on ``(B, C, H, W)`` in [0, 1] (C = 3: YIQ luma; C = 1: gray) with the shipped model.

    The reference for :func:`niqe_fast` (what the CT path and the RGB calibration test call), which the
    tests hold to it within ``NIQE_TOLERANCE``.
    """
    ensure_torchvision()
    from pyiqa.archs.niqe_arch import calculate_niqe  # after ensure_torchvision(): it imports torchvision

    mu, cov = niqe_params()
    out = calculate_niqe(x, 0, True, "yiq", mu, cov)
    return per_image(out, x.shape[0])


def gauss_filter_replicate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` filtered with the odd ``k × k`` CPU ``kernel`` (cross-correlation, as
    ``F.conv2d``), replicate padding: what pyiqa's ``imfilter(x, kernel, padding="replicate")`` computes,
    as ``k²`` shifted multiply-adds in ``x``'s dtype instead of a float64 ``conv2d`` (which on CPU has no
    fast kernel: 0.8 s per 512² image for the 7×7 window, against ≈ 10 ms here)."""
    k = kernel.shape[-1]
    p = k // 2
    h, w = x.shape[-2:]
    xp = F.pad(x, (p, p, p, p), mode="replicate")
    out = torch.zeros_like(x)
    for i, row in enumerate(kernel.tolist()):
        for j, weight in enumerate(row):
            out.add_(xp[..., i : i + h, j : j + w], alpha=weight)
    return out


@lru_cache(maxsize=1)
def _niqe_window() -> torch.Tensor:
    """pyiqa's NIQE window, ``fspecial(7, 7/6)`` with its float32 values, as float64 (CPU)."""
    from pyiqa.matlab_utils import fspecial  # after ensure_torchvision(): pyiqa imports torchvision

    return fspecial(7, 7.0 / 6, 1)[0, 0].double()


def niqe_fast(x: torch.Tensor) -> torch.Tensor:
    """NIQE as :func:`niqe_pyiqa` computes it (pyiqa's ``calculate_niqe``/``niqe``, same features, blocks,
    resize and model), with the local mean and variance filtered by :func:`gauss_filter_replicate` instead
    of pyiqa's float64 ``conv2d``: on CPU that convolution was ≈ 85 % of NIQE's time. Only the order of
    the float64 additions changes, so the values agree with :func:`niqe_pyiqa` to ≈ 1e-12 (the tests
    allow ``NIQE_TOLERANCE``: a feature's AGGD shape parameter is an argmin over a grid of step 0.001 and
    could in principle move one step on a tie). Works on any device; the CT path uses it. A flat image
    scores NaN (NIQE is undefined there; pyiqa raises for its whole batch)."""
    ensure_torchvision()
    from pyiqa.archs.func_util import diff_round, safe_sqrt  # after ensure_torchvision()
    from pyiqa.archs.niqe_arch import compute_feature  # after ensure_torchvision()
    from pyiqa.matlab_utils import blockproc, imresize, nancov, nanmean  # after ensure_torchvision()
    from pyiqa.utils.color_util import to_y_channel  # after ensure_torchvision()

    img = to_y_channel(x, 255, "yiq") if x.shape[1] == 3 else x * 255
    img = diff_round(img).to(torch.float64)
    mu, cov = (t.to(img).repeat(img.size(0), *[1] * t.ndim) for t in niqe_params())
    window = _niqe_window()  # stays on the CPU: its weights are read as Python numbers
    block = 96
    b, _, h, w = img.shape
    img = img[..., : h // block * block, : w // block * block]
    features = []
    for scale in (1, 2):
        local = gauss_filter_replicate(torch.cat([img, img * img]), window)
        mean, sq = local[:b], local[b:]
        normalized = (img - mean) / (safe_sqrt((sq - mean**2).abs()) + 1)
        features.append(blockproc(normalized, [block // scale, block // scale], fun=compute_feature))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5, antialiasing=True) * 255.0
    dist = torch.cat(features, -1)
    pooled = (cov + nancov(dist)) / 2
    # A flat image (e.g. an output saturated over the whole window) has no local variation: its features
    # and so its covariance are NaN and NIQE is undefined. It scores NaN; the other images of the batch
    # are unaffected (pinv of the whole batch would raise).
    finite = pooled.isfinite().flatten(1).all(1)
    inv = torch.full_like(pooled, float("nan"))
    if finite.any():
        inv[finite] = torch.linalg.pinv(pooled[finite])
    diff = (mu - nanmean(dist, dim=1)).unsqueeze(1)
    quality = torch.bmm(torch.bmm(diff, inv), diff.transpose(1, 2)).squeeze()
    return per_image(torch.sqrt(quality), x.shape[0])


def pique_pyiqa(x: torch.Tensor) -> torch.Tensor:
    """pyiqa's PIQE score on ``(B, C, H, W)`` in [0, 1]; 0 (best) … 100."""
    ensure_torchvision()
    from pyiqa.archs.piqe_arch import piqe  # after ensure_torchvision(): it imports torchvision

    return per_image(piqe(x)[0], x.shape[0])


class NIQE(Scorer):
    """NIQE; lower is better. Images need at least 192 pixels a side (2×2 blocks of 96)."""

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__(device)
        # NIQE gets slower per image with larger batches on CPU (niqe_fast, 512²: 4 images ≈ 1.4x the
        # time per image of 1-2).
        self.max_batch = 2 if torch.device(device or "cpu").type == "cpu" else 16

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return niqe_fast(pred)


class PIQUE(Scorer):
    """PIQUE; lower is better."""

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__(device)
        # One image at a time on CPU: 0.16 s vs 0.27 s for 8 images of 512² in batches (1 thread).
        self.max_batch = 1 if torch.device(device or "cpu").type == "cpu" else 16

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return pique_pyiqa(pred)
