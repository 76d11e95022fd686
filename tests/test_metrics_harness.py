"""One harness over every registered metric (:data:`analysis.metrics.METRICS`), through the CT path
(:func:`analysis.metrics.compute_metrics` on HU images).

For each metric, on a smooth CT-like image (pydicom's ``CT_small.dcm``, a real 128² slice read by
:func:`benchmark.core.dicom.read_hu`, Gaussian-smoothed with σ = 1 px and resampled to the metric's side:
96², or 192² where ``min_size`` asks for more, i.e. MS-SSIM and NIQE) plus Gaussian noise of 10 and 40 HU:

* **range**: values are finite, ``(N,)`` float64 and inside the ``value_domain`` the info record declares;
* **direction**: 40 HU of noise scores worse than 10 HU, in the sense of ``higher_is_better`` (and
  metric(x, x) at least as good as either); skipped for descriptors with no better direction
  (``ranked=False``: ``nps_favg``, ``nps_fpeak``);
* **identity**: metric(x, x) is the best value (PSNR 80 dB, piq's cap; SSIM, MS-SSIM, FSIM, VIF, VIFp 1;
  RMSE, GMSD, the LPIPS family, DISTS, NPS noise 0), and equals the better bound of ``value_domain``
  where that bound is finite; not defined for no-reference metrics and unranked descriptors;
* **reference value** (:data:`HARNESS`, column ``reference``), from an implementation written independently
  of the scorer or a published number:

  ======================  ===========================================================================
  psnr                    scikit-image ``peak_signal_noise_ratio`` (rtol 1e-5: piq's 1e-8 in the MSE,
                          float32)
  ssim                    scikit-image ``structural_similarity``, Gaussian σ 1.5, population
                          covariance (atol 1e-5: float32 vs float64 filtering)
  ms_ssim                 numpy, Wang's ``msssim.m`` (valid 11×11 Gaussian SSIM, 2×2 mean pooling, the
                          published weights, SSIM at the last scale) (atol 1e-5)
  rmse, rmse_hu           numpy, and scikit-image ``mean_squared_error`` (rtol 1e-5 / 1e-6)
  vif                     pyiqa's ``VIF`` (float32 GSM parameters; the scorer's are float64 with the
                          reference code's eigenvalue correction) (atol 1e-3, as in
                          tests/test_metrics_calibration.py, which also has the published values)
  vif_p                   numpy, the authors' ``vifp_mscale.m`` (rtol 1e-4: float32 vs float64)
  fsim                    published: the official ``FeatureSIM.m`` FSIMc values of IQA-PyTorch's
                          calibration set (5 TID2013 pairs; calibration_summary.csv, commit 065c2b7),
                          reproduced by the very piq ``fsim`` the scorer calls with the chromatic term on
                          (atol 1.5e-4: the published 4 decimals, ±5e-5, plus float32; measured ≤ 8e-5);
                          and the scorer's gray FSIM equals that FSIMc on CT images repeated to RGB
                          (I = Q = 0, so the chromatic similarity is 1) to 1e-6
  gmsd                    numpy, the authors' ``GMSD.m`` (``std2`` divides by N − 1, piq by N: compared
                          after that factor, rtol 1e-4)
  lpips, lpips_vgg,       pyiqa's independent LPIPS / DISTS on the same backbone file and learned layers
  dists                   (rtol 1e-4 / 1e-5), run only where the ImageNet weights are present
  nps_noise_hu            numpy: the pooled standard deviation of the mean-removed 16-px ROIs of the
                          residual, no FFT (Parseval) (rtol 1e-9)
  nps_favg, nps_fpeak     closed form: a residual sinusoid of exactly 3 cycles per 16-px ROI has all its
                          power at ``f = 3 / (16·Δx)``, so f_avg = f_peak = that frequency (rtol 1e-6)
  niqe                    pyiqa's ``calculate_niqe`` (the scorer runs a faster filter, atol
                          ``NIQE_TOLERANCE``) and pyiqa's published values on the calibration set (3e-3)
  pique                   published: the official PIQE values of the calibration set (atol 5e-3)
  ======================  ===========================================================================

  **No independent reference**: ``st_lpips`` and ``st_lpips_vgg``. The authors' ``stlpips-pytorch`` is the
  only implementation (the scorer loads its shipped network) and the paper publishes no per-image values;
  tests/test_metrics_stlpips.py checks that the scorer equals the library's own ``forward``.

* **dtype and device**: float64 HU inputs give the float32 inputs' values (the engine computes in float32),
  on the CPU; a ``gpu``-marked variant (skipped without CUDA) checks that CUDA gives the CPU's values
  (rtol and atol 1e-3, as tests/test_scoring_device.py).

Metrics that need ImageNet weights (``lpips``, ``lpips_vgg``, ``dists``) are unavailable offline: every test
of theirs is skipped with :func:`analysis.metrics.available`'s reason, never failed.

A metric registered without an entry in :data:`HARNESS` fails :func:`test_every_registered_metric_has_a_harness_entry`;
an entry says what its identity value is and either runs a reference check or says why there is none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import convolve, gaussian_filter, zoom
from scipy.signal import fftconvolve
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity
from test_metrics_calibration import PUBLISHED, load_rgb

from analysis.metrics import METRICS, available, compute_metrics, get_scorer
from analysis.metrics.no_reference import NIQE_TOLERANCE, niqe_fast, niqe_pyiqa
from analysis.metrics.nps import roi_side_px
from benchmark.core.conventions import window_to_unit
from benchmark.core.dicom import read_hu
from benchmark.core.ssim import SCALE_WEIGHTS, piq_module

WINDOW = (-160.0, 240.0)  # the default (abdomen) window of compute_metrics
SIGMAS = (10.0, 40.0)  # HU of Gaussian noise: mild, strong
PIXEL_MM = 1.5625  # NPS metrics: 25 mm / 1.5625 mm = 16-px ROIs
ROI_PX = 16

# calibration_summary.csv of IQA-PyTorch (commit 065c2b73eecc7fbfc5dde75cccb5328bf62f3cc6), row "fsim":
# the official FeatureSIM.m's FSIMc on I03, I04, I06, I08, I19 (the rows of tests/test_metrics_calibration.py)
FSIMC_PUBLISHED = [0.689, 0.9702, 0.9927, 0.9575, 0.822]


# --- images -----------------------------------------------------------------------------------------
@cache
def _ct_slice() -> np.ndarray:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str), "pydicom's test file CT_small.dcm is missing"
    return gaussian_filter(read_hu(Path(path)).astype(np.float64), 1.0)


def side_for(name: str) -> int:
    """96 px, or 192 for metrics that need more (MS-SSIM: 161, NIQE: 192)."""
    return 96 if METRICS[name].min_size <= 96 else 96 * math.ceil(METRICS[name].min_size / 96)


@cache
def reference_hu(side: int) -> np.ndarray:
    """``(2, side, side)`` float32 HU: the smoothed slice resampled to ``side`` and its mirror image."""
    ct = _ct_slice()
    img = zoom(ct, side / ct.shape[0], order=3)[:side, :side]
    return np.stack([img, img[:, ::-1]]).astype(np.float32)


@cache
def noisy_hu(side: int, sigma: float) -> np.ndarray:
    """The reference plus ``sigma`` HU of Gaussian noise; one noise pattern for all levels."""
    z = np.random.default_rng(23).normal(0.0, 1.0, (2, side, side))
    return (reference_hu(side) + sigma * z).astype(np.float32)


def unit(hu: np.ndarray) -> np.ndarray:
    """The window written out here (float64): clip to [−160, 240] HU, scale to [0, 1]."""
    lo, hi = WINDOW
    return np.clip((hu.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)


def region_kwargs(name: str, side: int) -> dict:
    """The NPS metrics' pixel spacing and a whole-image ROI mask (the residual is pure noise)."""
    if not METRICS[name].regions:
        return {}
    return {"pixel_spacing_mm": PIXEL_MM, "roi": np.ones((2, side, side), dtype=bool)}


def require(name: str) -> None:
    ok, reason = available(name)
    if not ok:
        pytest.skip(f"{name} unavailable here: {reason}")


@cache
def score(name: str, sigma: float | None, dtype: str = "float32", device: str = "cpu") -> np.ndarray:
    """``compute_metrics([name])`` of the noisy image (``sigma`` HU; None: the reference itself) against the
    reference, cached across the tests of this module."""
    side = side_for(name)
    ref = reference_hu(side)
    pred = ref.copy() if sigma is None else noisy_hu(side, sigma)
    out = compute_metrics([name], pred.astype(dtype), ref.astype(dtype) if METRICS[name].full_reference else None,
                          device=device, **region_kwargs(name, side))  # fmt: skip
    return out[name]


def noisy_and_ref_unit(name: str, sigma: float = SIGMAS[0]) -> tuple[np.ndarray, np.ndarray]:
    side = side_for(name)
    return unit(noisy_hu(side, sigma)), unit(reference_hu(side))


def as_nchw(x: np.ndarray, channels: int = 1) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32))[:, None].expand(-1, channels, -1, -1).contiguous()


# --- independent references -------------------------------------------------------------------------
def ref_psnr() -> None:
    p, r = noisy_and_ref_unit("psnr")
    want = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(r, p)]
    np.testing.assert_allclose(score("psnr", SIGMAS[0]), want, rtol=1e-5)


def ref_ssim() -> None:
    p, r = noisy_and_ref_unit("ssim")
    want = [structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
            for a, b in zip(r, p)]  # fmt: skip
    np.testing.assert_allclose(score("ssim", SIGMAS[0]), want, atol=1e-5)


def _gauss_valid(x: np.ndarray) -> np.ndarray:
    """Mean over the 11×11 Gaussian window (σ 1.5) at every position where it fits (``filter2 'valid'``)."""
    return gaussian_filter(x, 1.5, truncate=5 / 1.5)[5:-5, 5:-5]


def msssim_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """MS-SSIM as Wang's ``msssim.m``: per scale the mean contrast-structure term of the valid 11×11
    Gaussian SSIM, the mean SSIM at the last scale, 2×2 mean pooling between scales, published weights."""
    c1, c2 = 0.01**2, 0.03**2
    terms = []
    for s in range(len(SCALE_WEIGHTS)):
        if s:
            h, w = x.shape
            x, y = (a.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for a in (x, y))
        mx, my = _gauss_valid(x), _gauss_valid(y)
        vx, vy = _gauss_valid(x * x) - mx**2, _gauss_valid(y * y) - my**2
        cs = (2 * (_gauss_valid(x * y) - mx * my) + c2) / (vx + vy + c2)
        lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
        terms.append((cs if s < len(SCALE_WEIGHTS) - 1 else lum * cs).mean())
    return float(np.prod(np.maximum(terms, 0.0) ** np.array(SCALE_WEIGHTS)))


def ref_ms_ssim() -> None:
    p, r = noisy_and_ref_unit("ms_ssim")
    np.testing.assert_allclose(score("ms_ssim", SIGMAS[0]), [msssim_numpy(a, b) for a, b in zip(p, r)], atol=1e-5)


def ref_rmse() -> None:
    p, r = noisy_and_ref_unit("rmse")
    want = np.sqrt(((p - r) ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(score("rmse", SIGMAS[0]), want, rtol=1e-5)  # float32 vs float64 window
    np.testing.assert_allclose(want, np.sqrt([mean_squared_error(a, b) for a, b in zip(r, p)]), rtol=1e-12)


def ref_rmse_hu() -> None:
    side = side_for("rmse_hu")
    diff = noisy_hu(side, SIGMAS[0]).astype(np.float64) - reference_hu(side)
    np.testing.assert_allclose(score("rmse_hu", SIGMAS[0]), np.sqrt((diff**2).mean(axis=(1, 2))), rtol=1e-6)


def ref_vif() -> None:
    from pyiqa.archs.vif_arch import VIF  # conftest ran ensure_torchvision()

    p, r = noisy_and_ref_unit("vif")
    with torch.no_grad():
        want = VIF()(as_nchw(p, 3), as_nchw(r, 3)).reshape(-1).double().numpy()
    assert np.all(np.isfinite(want))
    np.testing.assert_allclose(score("vif", SIGMAS[0]), want, atol=1e-3)


def _fspecial_gaussian(n: int, sigma: float) -> np.ndarray:
    c = np.arange(n) - (n - 1) / 2
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def vifp_numpy(dist: np.ndarray, ref: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """``vifp_mscale.m`` (Sheikh & Bovik) on the 8-bit scale: four scales, Gaussian windows of 17, 9, 5, 3
    px (σ = N/5), 'valid' filtering, the reference code's masking of degenerate variances."""
    ref, dist = ref * 255.0, dist * 255.0
    num = den = 0.0
    eps = 1e-10
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _fspecial_gaussian(n, n / 5)

        def f(x: np.ndarray, win: np.ndarray = win) -> np.ndarray:
            return fftconvolve(x, win, mode="valid")  # symmetric window: convolution = correlation

        if scale > 1:
            ref, dist = f(ref)[::2, ::2], f(dist)[::2, ::2]
        mu1, mu2 = f(ref), f(dist)
        s1 = np.maximum(f(ref * ref) - mu1**2, 0)
        s2 = np.maximum(f(dist * dist) - mu2**2, 0)
        s12 = f(ref * dist) - mu1 * mu2
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat1 = s1 < eps
        g[flat1], sv[flat1], s1[flat1] = 0, s2[flat1], 0
        flat2 = s2 < eps
        g[flat2], sv[flat2] = 0, 0
        neg = g < 0
        sv[neg], g[neg] = s2[neg], 0
        sv[sv <= eps] = eps
        num += np.log10(1 + g**2 * s1 / (sv + sigma_nsq)).sum()
        den += np.log10(1 + s1 / sigma_nsq).sum()
    return float(num / den)


def ref_vif_p() -> None:
    p, r = noisy_and_ref_unit("vif_p")
    np.testing.assert_allclose(score("vif_p", SIGMAS[0]), [vifp_numpy(a, b) for a, b in zip(p, r)], rtol=1e-4)


def ref_fsim() -> None:
    piq = piq_module()
    dist, ref = load_rgb("dist_dir"), load_rgb("ref_dir")
    fsimc = piq.fsim(dist, ref, data_range=1.0, chromatic=True, reduction="none").double().numpy()
    np.testing.assert_allclose(fsimc, FSIMC_PUBLISHED, atol=1.5e-4)
    # the scorer's gray FSIM on the CT path is that calibrated FSIMc of the gray image repeated to RGB
    p, r = noisy_and_ref_unit("fsim")
    want = piq.fsim(as_nchw(p, 3), as_nchw(r, 3), data_range=1.0, chromatic=True, reduction="none")
    np.testing.assert_allclose(score("fsim", SIGMAS[0]), want.double().numpy(), atol=1e-6)


def gmsd_numpy(dist: np.ndarray, ref: np.ndarray) -> float:
    """``GMSD.m`` (Xue et al.): 8-bit scale, 2×2 mean and downsampling by 2, Prewitt gradients /3 with zero
    padding ('same'), T = 170, ``std2`` (N − 1) of the similarity map."""
    def gm(x: np.ndarray) -> np.ndarray:
        h, w = x.shape
        x = (x * 255.0).reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        dx = np.array([[1.0, 0.0, -1.0]] * 3) / 3.0
        return np.hypot(convolve(x, dx, mode="constant"), convolve(x, dx.T, mode="constant"))

    g1, g2 = gm(ref), gm(dist)
    quality = (2 * g1 * g2 + 170.0) / (g1**2 + g2**2 + 170.0)
    return float(quality.std(ddof=1))


def ref_gmsd() -> None:
    p, r = noisy_and_ref_unit("gmsd")
    n = (p.shape[1] // 2) * (p.shape[2] // 2)  # pixels of the similarity map
    ours = score("gmsd", SIGMAS[0]) * math.sqrt(n / (n - 1))  # piq's population std → std2
    np.testing.assert_allclose(ours, [gmsd_numpy(a, b) for a, b in zip(p, r)], rtol=1e-4)


def ref_lpips(net: str, name: str) -> Callable[[], None]:
    def check() -> None:
        import lpips
        from pyiqa.archs.lpips_arch import LPIPS as PyiqaLPIPS

        p, r = noisy_and_ref_unit(name)
        linear = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
        with torch.no_grad():
            want = PyiqaLPIPS(net=net, pretrained_model_path=str(linear))(as_nchw(p, 3), as_nchw(r, 3))
        np.testing.assert_allclose(score(name, SIGMAS[0]), want.reshape(-1).double().numpy(), rtol=1e-4)

    return check


def ref_dists() -> None:
    import tempfile

    from pyiqa.archs.dists_arch import DISTS as PyiqaDISTS

    from analysis.metrics.deep import dists_alpha_beta_file

    p, r = noisy_and_ref_unit("dists")
    ab = torch.load(dists_alpha_beta_file(), weights_only=True)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = Path(tmp) / "dists_alpha_beta.pth"
        torch.save({"alpha": ab["alpha"], "beta": ab["beta"]}, path)
        want = PyiqaDISTS(pretrained_model_path=str(path))(as_nchw(p, 3), as_nchw(r, 3))
    np.testing.assert_allclose(score("dists", SIGMAS[0]), want.reshape(-1).double().numpy(), rtol=1e-5, atol=1e-7)


def ref_nps_noise_hu() -> None:
    side = side_for("nps_noise_hu")
    assert roi_side_px(PIXEL_MM) == ROI_PX
    resid = noisy_hu(side, SIGMAS[0]).astype(np.float64) - reference_hu(side)
    starts = range(0, side - ROI_PX + 1, ROI_PX // 2)  # half-overlapping squares over the whole-image mask
    want = [np.sqrt(np.mean([img[i : i + ROI_PX, j : j + ROI_PX].var() for i in starts for j in starts]))
            for img in resid]  # fmt: skip
    np.testing.assert_allclose(score("nps_noise_hu", SIGMAS[0]), want, rtol=1e-9)


def ref_nps_frequency(name: str) -> Callable[[], None]:
    def check() -> None:
        side = side_for(name)
        ref = reference_hu(side)
        x = np.arange(side)
        sinusoid = 30.0 * np.cos(2 * np.pi * 3 * x / ROI_PX + 0.4)[None, None, :]  # 3 cycles per ROI, along x
        pred = (ref + sinusoid).astype(np.float32)
        got = compute_metrics([name], pred, ref, **region_kwargs(name, side))[name]
        np.testing.assert_allclose(got, 3 / (ROI_PX * PIXEL_MM), rtol=1e-6)

    return check


def ref_niqe() -> None:
    # the engine's own float32 window here: NIQE rounds to 8 bits, and a pixel a float32 ulp from a
    # rounding boundary would change the input, not test the implementation
    p = window_to_unit(noisy_hu(side_for("niqe"), SIGMAS[0]), WINDOW)
    want = niqe_pyiqa(as_nchw(p)).double().numpy()
    np.testing.assert_allclose(score("niqe", SIGMAS[0]), want, rtol=0, atol=NIQE_TOLERANCE)
    dist = load_rgb("dist_dir")  # the scorer's function on the calibration set: pyiqa's published values
    np.testing.assert_allclose(niqe_fast(dist).numpy(), PUBLISHED["niqe"][1], atol=3e-3)


def ref_pique() -> None:
    scorer = get_scorer("pique")
    got = scorer.score(load_rgb("dist_dir"), None).double().numpy()
    np.testing.assert_allclose(got, PUBLISHED["piqe"][0], atol=5e-3)  # the official values, 2 decimals


# --- the harness table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """What the harness checks for one metric.

    ``identity``: metric(x, x), or None where it is not defined (no-reference metrics, descriptors with no
    better direction); ``identity_atol`` its tolerance. ``reference``: a check against an independent
    implementation or a published number, or None; ``source`` says which, or why there is none."""

    identity: float | None
    reference: Callable[[], None] | None
    source: str
    identity_atol: float = 1e-6


NO_RANK = "unranked descriptor (ranked=False): no best value"
HARNESS: dict[str, Entry] = {
    "psnr": Entry(80.0, ref_psnr, "scikit-image", identity_atol=1e-4),  # 10·log10(1 / 1e-8)
    "ssim": Entry(1.0, ref_ssim, "scikit-image"),
    "ms_ssim": Entry(1.0, ref_ms_ssim, "numpy (msssim.m)"),
    "rmse_hu": Entry(0.0, ref_rmse_hu, "numpy"),
    "rmse": Entry(0.0, ref_rmse, "numpy, scikit-image"),
    "vif": Entry(1.0, ref_vif, "pyiqa VIF", identity_atol=1e-5),  # float32 steerable pyramid
    "vif_p": Entry(1.0, ref_vif_p, "numpy (vifp_mscale.m)"),
    "fsim": Entry(1.0, ref_fsim, "published FeatureSIM.m values (FSIMc)"),
    "gmsd": Entry(0.0, ref_gmsd, "numpy (GMSD.m)"),
    "lpips": Entry(0.0, ref_lpips("alex", "lpips"), "pyiqa LPIPS, same weights"),
    "lpips_vgg": Entry(0.0, ref_lpips("vgg", "lpips_vgg"), "pyiqa LPIPS, same weights"),
    "dists": Entry(0.0, ref_dists, "pyiqa DISTS, same weights"),
    "st_lpips": Entry(0.0, None, "no independent implementation or published per-image values: the authors' "
                      "stlpips-pytorch is the only one (tests/test_metrics_stlpips.py: scorer = its forward)",
                      identity_atol=1e-7),
    "st_lpips_vgg": Entry(0.0, None, "no independent implementation or published per-image values: the "
                          "authors' stlpips-pytorch is the only one (tests/test_metrics_stlpips.py)",
                          identity_atol=1e-7),
    "nps_noise_hu": Entry(0.0, ref_nps_noise_hu, "numpy ROI standard deviation (Parseval)"),
    "nps_favg": Entry(None, ref_nps_frequency("nps_favg"), "closed form (sinusoidal residual)"),
    "nps_fpeak": Entry(None, ref_nps_frequency("nps_fpeak"), "closed form (sinusoidal residual)"),
    "niqe": Entry(None, ref_niqe, "pyiqa calculate_niqe; pyiqa's published values"),
    "pique": Entry(None, ref_pique, "published PIQE values"),
}
NAMES = sorted(METRICS)


def test_every_registered_metric_has_a_harness_entry() -> None:
    """A metric added to the registry must get an entry here: its identity value and its reference check,
    or the reason it has none."""
    assert set(HARNESS) == set(METRICS), {
        "registered without a harness entry": sorted(set(METRICS) - set(HARNESS)),
        "harness entries for unregistered metrics": sorted(set(HARNESS) - set(METRICS)),
    }
    for name, entry in HARNESS.items():
        assert entry.reference is not None or "no independent" in entry.source, name
        defined = METRICS[name].full_reference and METRICS[name].ranked
        assert (entry.identity is not None) == defined, f"{name}: identity must be given exactly when defined"


@pytest.mark.parametrize("name", NAMES)
def test_values_lie_in_the_declared_domain(name: str) -> None:
    require(name)
    lo, hi = METRICS[name].value_domain
    for sigma in SIGMAS:
        v = score(name, sigma)
        assert v.shape == (2,) and v.dtype == np.float64, (name, v.shape, v.dtype)
        assert np.all(np.isfinite(v)), (name, sigma, v)
        assert np.all((v >= lo) & (v <= hi)), (name, sigma, v, (lo, hi))


@pytest.mark.parametrize("name", NAMES)
def test_more_noise_scores_worse(name: str) -> None:
    m = METRICS[name]
    if not m.ranked:
        pytest.skip(f"{name}: {NO_RANK}")
    require(name)
    sign = 1.0 if m.higher_is_better else -1.0
    mild, strong = (sign * score(name, s) for s in SIGMAS)
    assert np.all(mild > strong), (name, mild, strong)
    if m.full_reference:
        assert np.all(sign * score(name, None) >= mild), name


@pytest.mark.parametrize("name", NAMES)
def test_identity_gives_the_best_value(name: str) -> None:
    m, entry = METRICS[name], HARNESS[name]
    if not m.full_reference:
        pytest.skip(f"{name} is a no-reference metric: metric(x, x) is not defined")
    if entry.identity is None:
        pytest.skip(f"{name}: {NO_RANK}")
    require(name)
    np.testing.assert_allclose(score(name, None), entry.identity, rtol=0, atol=entry.identity_atol)
    bound = m.value_domain[1] if m.higher_is_better else m.value_domain[0]
    if math.isfinite(bound):  # a bounded metric reaches its better bound on identical images
        assert entry.identity == bound, (name, entry.identity, bound)


@pytest.mark.parametrize("name", NAMES)
def test_reference_value(name: str) -> None:
    entry = HARNESS[name]
    if entry.reference is None:
        pytest.skip(f"{name}: {entry.source}")
    require(name)
    entry.reference()


@pytest.mark.parametrize("name", NAMES)
def test_float64_inputs_give_the_float32_values(name: str) -> None:
    require(name)
    np.testing.assert_array_equal(score(name, SIGMAS[0], "float64"), score(name, SIGMAS[0]))


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_cuda_gives_the_cpu_values(name: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    require(name)
    identity = [None] if METRICS[name].full_reference and METRICS[name].ranked else []  # f_avg(x, x) is NaN
    for sigma in [*identity, SIGMAS[0]]:
        # float32 GPU kernels: close to the CPU, not bit-equal
        np.testing.assert_allclose(score(name, sigma, device="cuda"), score(name, sigma), rtol=1e-3, atol=1e-3,
                                   err_msg=f"{name}, noise {sigma}")
