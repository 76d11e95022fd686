"""Classical full-reference metrics: PSNR, SSIM, MS-SSIM, RMSE, VIF, VIFp, FSIM, GMSD.

All take ``(B, 1, H, W)`` tensors. Except RMSE in HU, inputs are in the unit space of the package
convention (HU clipped to the window, scaled to [0, 1], ``data_range = 1``). Implementations were
chosen per metric for correctness (calibration values) first, speed second:

* PSNR, SSIM, MS-SSIM, VIFp, FSIM, GMSD: piq (float32, batched).
* VIF: pyiqa's wavelet-domain VIF (Sheikh & Bovik 2006, steerable pyramid, the reference MATLAB
  ``vifvec``). piq's ``vif_p`` is the *pixel-domain* variant and gives different values
  (on pyiqa's calibration image I03: 0.070 vs the published 0.0172), so it is registered separately
  as ``vif_p``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from analysis.metrics.base import Scorer, gray_to_rgb
from benchmark.compat import ensure_torchvision


def _piq() -> Any:
    ensure_torchvision()
    import piq

    return piq


class PSNR(Scorer):
    """``PSNR = 10·log10(1 / (MSE + 1e-8))`` dB on [0, 1] images (piq; ``1e-8`` caps identical images
    at 80 dB)."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return _piq().psnr(pred, ref_state, data_range=1.0, reduction="none")


class SSIM(Scorer):
    """SSIM, Gaussian window 11×11 with σ = 1.5, K1 = 0.01, K2 = 0.03, no downsampling, mean over the
    valid-convolution map (Wang et al., IEEE TIP 2004), via ``piq.ssim``."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return _piq().ssim(
            pred,
            ref_state,
            data_range=1.0,
            kernel_size=11,
            kernel_sigma=1.5,
            downsample=False,
            reduction="none",
        )


class MSSSIM(Scorer):
    """MS-SSIM, 5 scales with the published weights, Gaussian 11×11 σ = 1.5 (Wang, Simoncelli & Bovik,
    Asilomar 2003), via ``piq.multi_scale_ssim``; needs images of at least 161 pixels a side."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return _piq().multi_scale_ssim(
            pred, ref_state, data_range=1.0, kernel_size=11, kernel_sigma=1.5, reduction="none"
        )


class RMSE(Scorer):
    """Root mean squared error per image, ``sqrt(mean((pred − ref)²))``, in the units of the input
    (HU for ``rmse_hu``, window units for ``rmse``). Written by hand: one line of torch."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return (pred.double() - ref_state.double()).pow(2).mean(dim=(1, 2, 3)).sqrt()


class VIF(Scorer):
    """Wavelet-domain VIF (Sheikh & Bovik, IEEE TIP 2006) built from pyiqa's ``VIF`` module.

    pyiqa's implementation takes RGB in [0, 1] and works on the Y channel (YIQ) on the 8-bit scale
    with rounding; a gray image repeated to 3 channels has Y equal to the gray value, so a CT image is
    scored on its 8-bit quantised window.

    Why the composition is written here: pyiqa's ``VIF.forward`` recomputes the reference's steerable
    pyramid and its GSM parameters (``refparams_vecgsm``: local covariances and their eigenvalues)
    for every call, about a third of the work, which the analysis would repeat for every checkpoint.
    :meth:`prepare_ref` computes them once; :meth:`score` evaluates eq. (10)–(11) of the paper,

        VIF = Σ_subbands Σ_j Σ_blocks log2(1 + g² s² λ_j / (σ_v² + σ_n²))
              / Σ_subbands Σ_j Σ_blocks log2(1 + s² λ_j / σ_n²),

    with pyiqa's building blocks (``SteerablePyramidSpace``, ``vifsub_est_M`` for the distortion
    channel g, σ_v², ``refparams_vecgsm`` for s², λ_j), its σ_n² = 0.4, subbands and borders. The tests
    check equality with ``pyiqa.archs.vif_arch.VIF`` itself.
    """

    max_batch = 8

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__(device)
        ensure_torchvision()
        from pyiqa.archs.vif_arch import VIF as PyiqaVIF

        self.module = PyiqaVIF().to(device or "cpu").eval()

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        from pyiqa.archs.vif_arch import SteerablePyramidSpace
        from pyiqa.utils.color_util import to_y_channel

        m = self.module
        y = to_y_channel(gray_to_rgb(x).float(), 255)
        return SteerablePyramidSpace(y, height=m.level, order=m.ori, channels=m.channels)[::-1]

    def prepare_ref(self, ref: torch.Tensor) -> Any:
        with torch.no_grad():
            sp_ref = self._pyramid(ref)
            ss_arr, lam_arr, _ = self.module.refparams_vecgsm(sp_ref)
        return sp_ref, ss_arr, lam_arr

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        sp_ref, ss_arr, lam_arr = ref_state
        m = self.module
        with torch.no_grad():
            g_all, vv_all = m.vifsub_est_M(sp_ref, self._pyramid(pred))
            num = den = torch.zeros(pred.shape[0], device=pred.device)
            for i, sub in enumerate(m.subbands):
                winsize = 2 ** math.ceil((sub - 1) / 6) + 1  # the subband's block window (pyiqa)
                o = math.ceil((winsize - 1) / 2 / m.M)  # border dropped from the parameter maps
                g, vv, ss = (
                    t[:, :, o : t.shape[2] - o, o : t.shape[3] - o] for t in (g_all[i], vv_all[i], ss_arr[i])
                )
                lam = lam_arr[i][:, :, :, None, None]  # (B, C, K, 1, 1) eigenvalues of the GSM covariance
                g, vv, ss = g[:, :, None], vv[:, :, None], ss[:, :, None]
                num = num + torch.log2(1 + g * g * ss * lam / (vv + m.sigma_nsq)).sum(dim=(2, 3, 4)).mean(1)
                den = den + torch.log2(1 + ss * lam / m.sigma_nsq).sum(dim=(2, 3, 4)).mean(1)
        return num / (den + 1e-12)


class VIFp(Scorer):
    """Pixel-domain VIF (VIFp; Sheikh & Bovik 2006, sec. IV) via ``piq.vif_p`` (σ_n² = 2)."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return _piq().vif_p(pred, ref_state, data_range=1.0, reduction="none")


class FSIM(Scorer):
    """FSIM (Zhang et al., IEEE TIP 2011) on the gray image (no chromatic term), via ``piq.fsim``."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return _piq().fsim(pred, ref_state, data_range=1.0, chromatic=False, reduction="none")


class GMSD(Scorer):
    """GMSD (Xue et al., IEEE TIP 2014) via ``piq.gmsd``; lower is better."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return _piq().gmsd(pred, ref_state, data_range=1.0, reduction="none")
