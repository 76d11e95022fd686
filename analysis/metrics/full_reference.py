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
import torch.nn.functional as F

from analysis.metrics.base import Scorer, gray_to_rgb
from benchmark.core.compat import ensure_torchvision
from benchmark.core.ssim import ms_ssim, piq_module, ssim


class PSNR(Scorer):
    """``PSNR = 10·log10(1 / (MSE + 1e-8))`` dB on [0, 1] images (piq; ``1e-8`` caps identical images
    at 80 dB)."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return piq_module().psnr(pred, ref_state, data_range=1.0, reduction="none")


class SSIM(Scorer):
    """SSIM, Gaussian window 11×11 with σ = 1.5, K1 = 0.01, K2 = 0.03, no downsampling, mean over the
    valid-convolution map (Wang et al., IEEE TIP 2004): :func:`benchmark.core.ssim.ssim`, the functional
    the ``ssim`` loss wraps too."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return ssim(pred, ref_state, reduction="none")


class MSSSIM(Scorer):
    """MS-SSIM, 5 scales with the published weights, Gaussian 11×11 σ = 1.5 (Wang, Simoncelli & Bovik,
    Asilomar 2003): :func:`benchmark.core.ssim.ms_ssim`, the functional the ``ms_ssim`` loss wraps too;
    needs images of at least 161 pixels a side."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return ms_ssim(pred, ref_state, reduction="none", field="metrics.ms_ssim")


class RMSE(Scorer):
    """Root mean squared error per image, ``sqrt(mean((pred − ref)²))``, in the units of the input
    (HU for ``rmse_hu``, window units for ``rmse``). Written by hand: one line of torch."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return (pred.double() - ref_state.double()).pow(2).mean(dim=(1, 2, 3)).sqrt()


def block_sums(t: torch.Tensor, k: int, step: int) -> torch.Tensor:
    """Sums of ``t`` over k×k windows centred on rows/columns ``1, 1 + step, ...`` of the image with
    reflect padding: the sampling grid of the reference ``vifsub_est_M`` (MATLAB ``corrDn`` with
    start ``floor(M/2)``), computed only at the sampled positions (a strided box filter) instead of
    filtering at every pixel and subsampling."""
    p = (k - 1) // 2
    t = F.pad(t, (p, p, p, p), mode="reflect")[:, :, 1:, 1:]
    return F.avg_pool2d(t, k, stride=step) * (k * k)


def gsm_reference_params(band: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference-side GSM parameters of one subband (Sheikh & Bovik 2006, sec. III; ``refparams_vecgsm``
    of the reference MATLAB code), in float64.

    ``band``: ``(B, C, H, W)`` with H, W multiples of ``m``. The covariance C_U of the m×m
    neighbourhood vectors U (all overlapping neighbourhoods) is estimated, its negative eigenvalues
    are set to zero with the total variance kept (the reference code's correction), and for every
    non-overlapping m×m block the multiplier ``s² = Uᵀ C_U⁻¹ U / m²`` is computed.
    Returns ``(s² (B, C, H/m, W/m), eigenvalues λ (B, C, m²))``.

    Written here rather than taken from pyiqa: pyiqa's ``refparams_vecgsm`` works in float32 and omits
    the eigenvalue correction, so on smooth references (e.g. a 512² CT slice's finest subbands) it
    produces negative eigenvalues and VIF = NaN.
    """
    b, c, h, w = band.shape
    x = band.double().reshape(b * c, 1, h, w)
    patches = F.unfold(x, m).transpose(1, 2)  # (BC, n, m²): every overlapping neighbourhood
    centred = patches - patches.mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred / patches.shape[1]  # (BC, m², m²)
    lam, vecs = torch.linalg.eigh(cov)
    pos = lam.clamp_min(0)
    total, kept = lam.sum(-1, keepdim=True), pos.sum(-1, keepdim=True)
    lam = pos * total / (kept + (kept == 0))
    cov = vecs @ torch.diag_embed(lam) @ vecs.transpose(1, 2)
    blocks = F.unfold(x, m, stride=m)  # (BC, m², n_blocks): non-overlapping blocks
    s2 = ((torch.linalg.pinv(cov) @ blocks) * blocks).sum(1) / (m * m)
    return s2.reshape(b, c, h // m, w // m), lam.reshape(b, c, m * m)


class VIF(Scorer):
    """Wavelet-domain VIF (Sheikh & Bovik, IEEE TIP 2006) on pyiqa's steerable pyramid.

    pyiqa's implementation takes RGB in [0, 1] and works on the Y channel (YIQ) on the 8-bit scale
    with rounding; a gray image repeated to 3 channels has Y equal to the gray value, so a CT image is
    scored on its 8-bit quantised window.

    Why part of it is written here: pyiqa's ``VIF.forward`` recomputes everything that depends only on
    the reference (its steerable pyramid, the GSM parameters: local covariances and their
    eigenvalues, and the reference's local means and variances) for every call, and estimates the distortion channel by box-filtering every pixel before keeping one in
    M² = 9. The analysis scores one reference against many checkpoints, so :meth:`prepare_ref`
    computes the reference side once, and :meth:`score` estimates the channel (g, σ_v², eq. (6)–(7)
    of the paper, with the masking rules of the reference MATLAB ``vifsub_est_M``) on the sampled
    grid only (:func:`block_sums`), then evaluates eq. (10)–(11),

        VIF = Σ_subbands Σ_j Σ_blocks log2(1 + g² s² λ_j / (σ_v² + σ_n²))
              / Σ_subbands Σ_j Σ_blocks log2(1 + s² λ_j / σ_n²),

    with pyiqa's pyramid (``SteerablePyramidSpace``), σ_n² = 0.4, subbands, window sizes and borders,
    and s², λ_j from :func:`gsm_reference_params` (float64, with the reference code's eigenvalue
    correction, where pyiqa's float32 ``refparams_vecgsm`` gives NaN on smooth images). The tests
    check agreement with ``pyiqa.archs.vif_arch.VIF`` where it is finite, and the published values.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__(device)
        # On CPU, batches larger than 2 are slower per image (measured, 256² and 512²).
        self.max_batch = 2 if torch.device(device or "cpu").type == "cpu" else 16
        ensure_torchvision()
        from pyiqa.archs.vif_arch import VIF as PyiqaVIF  # after ensure_torchvision(): it imports torchvision

        self.module = PyiqaVIF().to(device or "cpu").eval()

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The subbands VIF uses, each cropped to a multiple of M (pyiqa's order and crop)."""
        from pyiqa.archs.vif_arch import SteerablePyramidSpace  # after ensure_torchvision()
        from pyiqa.utils.color_util import to_y_channel  # after ensure_torchvision()

        m = self.module
        y = to_y_channel(gray_to_rgb(x).float(), 255)
        sp = SteerablePyramidSpace(y, height=m.level, order=m.ori, channels=m.channels)[::-1]
        out = []
        for sub in m.subbands:
            b = sp[sub - 1]
            out.append(b[:, :, : b.shape[2] // m.M * m.M, : b.shape[3] // m.M * m.M])
        return out

    def _winsize(self, sub: int) -> int:
        return 2 ** math.ceil((sub - 1) / 6) + 1  # block window of the subband (reference code)

    def prepare_ref(self, ref: torch.Tensor) -> Any:
        m = self.module
        with torch.no_grad():
            bands = self._pyramid(ref)
            ss_arr, lam_arr = zip(*(gsm_reference_params(b, m.M) for b in bands))
            stats = []
            for sub, x in zip(m.subbands, bands):
                k = self._winsize(sub - 1)  # vifsub_est_M's index convention
                mean_x = block_sums(x, k, m.M) / (k * k)
                ss_x = F.relu(block_sums(x * x, k, m.M) - k * k * mean_x**2)
                stats.append((x, mean_x, ss_x))
        return stats, ss_arr, lam_arr

    def _channel(self, x: Any, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain g and noise variance σ_v² of the distortion channel ``y = g·x + v`` per block."""
        x_band, mean_x, ss_x = x
        tol, kk = self.module.tol, k * k
        mean_y = block_sums(y, k, self.module.M) / kk
        cov = block_sums(x_band * y, k, self.module.M) - kk * mean_x * mean_y
        ss_y = F.relu(block_sums(y * y, k, self.module.M) - kk * mean_y**2)
        g = cov / (ss_x + tol)
        vv = (ss_y - g * cov) / kk
        flat_x, flat_y = ss_x < tol, ss_y < tol
        g = g.masked_fill(flat_x, 0)
        vv = torch.where(flat_x, ss_y, vv)
        g = g.masked_fill(flat_y, 0)
        vv = vv.masked_fill(flat_y, 0)
        vv = torch.where(g < 0, ss_y, vv)
        g = F.relu(g)
        return g, vv.masked_fill(vv < tol, tol)

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        stats, ss_arr, lam_arr = ref_state
        m = self.module
        with torch.no_grad():
            bands = self._pyramid(pred)
            num = den = torch.zeros(pred.shape[0], device=pred.device)
            for i, sub in enumerate(m.subbands):
                g, vv = self._channel(stats[i], bands[i], self._winsize(sub - 1))
                o = math.ceil((self._winsize(sub) - 1) / 2 / m.M)  # border dropped from the maps
                g, vv, ss = (
                    t[:, :, o : t.shape[2] - o, o : t.shape[3] - o, None] for t in (g, vv, ss_arr[i])
                )
                g, vv, ss = (t.movedim(-1, 2) for t in (g, vv, ss))  # (B, C, 1, h, w)
                lam = lam_arr[i][:, :, :, None, None]  # (B, C, K, 1, 1) eigenvalues of the GSM covariance
                num = num + torch.log2(1 + g * g * ss * lam / (vv + m.sigma_nsq)).sum(dim=(2, 3, 4)).mean(1)
                den = den + torch.log2(1 + ss * lam / m.sigma_nsq).sum(dim=(2, 3, 4)).mean(1)
        return num / (den + 1e-12)


class VIFp(Scorer):
    """Pixel-domain VIF (VIFp; Sheikh & Bovik 2006, sec. IV) via ``piq.vif_p`` (σ_n² = 2)."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return piq_module().vif_p(pred, ref_state, data_range=1.0, reduction="none")


class FSIM(Scorer):
    """FSIM (Zhang et al., IEEE TIP 2011) on the gray image (no chromatic term), via ``piq.fsim``."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return piq_module().fsim(pred, ref_state, data_range=1.0, chromatic=False, reduction="none")


class GMSD(Scorer):
    """GMSD (Xue et al., IEEE TIP 2014) via ``piq.gmsd``; lower is better."""

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        return piq_module().gmsd(pred, ref_state, data_range=1.0, reduction="none")
