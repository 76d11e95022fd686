"""No-reference metrics: NIQE and PIQUE (pyiqa's implementations), on windowed [0, 1] gray images.

* NIQE (Mittal, Soundararajan & Bovik, IEEE SPL 2013) with the published pristine-image model
  shipped in ``analysis/data/niqe_pris_params.npz`` (provenance in ``analysis/data/README.md``),
  passed to pyiqa's ``calculate_niqe`` directly, so NIQE never touches pyiqa's download path.
  The gray image is scaled to the 8-bit range and rounded by pyiqa, 96×96 blocks, two scales.
* PIQUE (Venkatanath N. et al., NCC 2015; pyiqa's ``piqe``), 16×16 blocks on the 8-bit image.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import torch

from analysis.metrics.base import Scorer, per_image
from benchmark.core.compat import ensure_torchvision

NIQE_PARAMS_FILE = "niqe_pris_params.npz"


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

    This is the one function both the CT path and the RGB calibration test call.
    """
    ensure_torchvision()
    from pyiqa.archs.niqe_arch import calculate_niqe  # after ensure_torchvision(): it imports torchvision

    mu, cov = niqe_params()
    out = calculate_niqe(x, 0, True, "yiq", mu, cov)
    return per_image(out, x.shape[0])


def pique_pyiqa(x: torch.Tensor) -> torch.Tensor:
    """pyiqa's PIQE score on ``(B, C, H, W)`` in [0, 1]; 0 (best) … 100."""
    ensure_torchvision()
    from pyiqa.archs.piqe_arch import piqe  # after ensure_torchvision(): it imports torchvision

    return per_image(piqe(x)[0], x.shape[0])


class NIQE(Scorer):
    """NIQE; lower is better. Images need at least 192 pixels a side (2×2 blocks of 96)."""

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__(device)
        # pyiqa's NIQE gets slower per image with larger batches on CPU (8 images: 3x slower than 1 by 1).
        self.max_batch = 2 if torch.device(device or "cpu").type == "cpu" else 16

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return niqe_pyiqa(pred)


class PIQUE(Scorer):
    """PIQUE; lower is better."""

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__(device)
        # One image at a time on CPU: 0.16 s vs 0.27 s for 8 images of 512² in batches (1 thread).
        self.max_batch = 1 if torch.device(device or "cpu").type == "cpu" else 16

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return pique_pyiqa(pred)
