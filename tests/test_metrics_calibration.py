"""Calibration of our metric implementations against published reference scores.

pyiqa's wheel installs five calibration pairs (``ResultsCalibra/ref_dir`` and ``dist_dir``: I03, I04,
I06, I08, I19, 512×384 RGB). Published scores: ``ResultsCalibra/calibration_summary.csv`` of
chaofengc/IQA-PyTorch (commit 065c2b73eecc7fbfc5dde75cccb5328bf62f3cc6): for each method a row with the
official (MATLAB) values and a row ``<method>(ours)`` with pyiqa's values.

The published numbers are for RGB input, our CT path is gray. Each test therefore calls the very
scorer object the CT path uses (``get_scorer(name).score``), fed the same input the published number
was computed from (RGB, or pyiqa's 8-bit luma where the method is defined on luma), and
``test_ct_path_is_the_calibrated_scorer`` shows that ``compute_metrics`` on CT images is that scorer
on the windowed images.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.metrics import compute_metrics, get_scorer
from analysis.metrics.no_reference import NIQE_TOLERANCE, niqe_fast, niqe_pyiqa, pique_pyiqa
from benchmark.core.compat import ensure_torchvision
from benchmark.core.conventions import window_to_unit

IMAGES = ["I03", "I04", "I06", "I08", "I19"]

# calibration_summary.csv rows (official row first, then pyiqa's "(ours)" row).
PUBLISHED = {
    "psnr": ([21.11, 20.99, 27.01, 23.3, 21.62], [21.1136, 20.9872, 27.0139, 23.3002, 21.6186]),
    "ssim": ([0.6993, 0.9978, 0.9989, 0.9669, 0.6519], [0.6997, 0.9978, 0.9989, 0.9671, 0.6522]),
    "ms_ssim": ([0.6733, 0.9996, 0.9998, 0.9566, 0.8462], [0.6707, 0.9996, 0.9998, 0.9567, 0.8418]),
    "vif": ([0.0172, 0.9891, 0.9924, 0.9103, 0.1745], [0.0172, 0.9891, 0.9924, 0.9104, 0.175]),
    "gmsd": ([0.2203, 0.0005, 0.0004, 0.1346, 0.205], [0.2203, 0.0005, 0.0004, 0.1346, 0.205]),
    "piqe": ([100.0, 21.62, 35.86, 41.15, 76.95], [100.0, 21.6242, 35.8646, 41.147, 76.9485]),
    "niqe": ([15.7536, 3.6549, 3.2355, 3.184, 8.6352], [15.6538, 3.6549, 3.2342, 3.1921, 9.0722]),
}


def calibra_dir() -> Path:
    ensure_torchvision()
    import pyiqa

    path = Path(pyiqa.__file__).resolve().parent.parent / "ResultsCalibra"
    if not (path / "ref_dir").is_dir():
        pytest.fail(f"pyiqa's calibration images are not installed at {path}")
    return path


def load_rgb(folder: str) -> torch.Tensor:
    """``(5, 3, 384, 512)`` float32 in [0, 1], as pyiqa loads images (``to_tensor`` of the RGB image)."""
    from torchvision.transforms.functional import to_tensor

    root = calibra_dir() / folder
    return torch.stack([to_tensor(Image.open(root / f"{n}.bmp").convert("RGB")) for n in IMAGES])


@pytest.fixture(scope="module")
def dist() -> torch.Tensor:
    return load_rgb("dist_dir")


@pytest.fixture(scope="module")
def ref() -> torch.Tensor:
    return load_rgb("ref_dir")


def score(name: str, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The scorer the CT path uses, applied directly: reference side, then prediction side."""
    scorer = get_scorer(name)
    return scorer.score(pred, scorer.prepare_ref(ref))


def luma(x: torch.Tensor) -> torch.Tensor:
    """pyiqa's Y (YIQ) channel on the 8-bit scale, rounded, back in [0, 1]: the input pyiqa and the
    MATLAB references use for SSIM, MS-SSIM and GMSD."""
    from pyiqa.utils.color_util import to_y_channel

    return to_y_channel(x, 255.0) / 255.0


def test_psnr_calibration(dist: torch.Tensor, ref: torch.Tensor) -> None:
    got = score("psnr", dist, ref).numpy()  # PSNR over the 3 RGB channels, as published
    np.testing.assert_allclose(got, PUBLISHED["psnr"][1], atol=1e-3)  # pyiqa, 4 decimals
    np.testing.assert_allclose(got, PUBLISHED["psnr"][0], atol=0.01)  # official, 2 decimals


def test_ssim_calibration(dist: torch.Tensor, ref: torch.Tensor) -> None:
    got = score("ssim", luma(dist), luma(ref)).numpy()
    # Matches the official MATLAB values to their 4 decimals (pyiqa's own is 3e-4 off on I19).
    np.testing.assert_allclose(got, PUBLISHED["ssim"][0], atol=1.5e-4)


def test_ms_ssim_calibration(dist: torch.Tensor, ref: torch.Tensor) -> None:
    got = score("ms_ssim", luma(dist), luma(ref)).numpy()
    np.testing.assert_allclose(got, PUBLISHED["ms_ssim"][1], atol=1e-3)  # pyiqa's values
    np.testing.assert_allclose(got, PUBLISHED["ms_ssim"][0], atol=5e-3)  # official: pooling details differ


@pytest.mark.slow
def test_vif_calibration(dist: torch.Tensor, ref: torch.Tensor) -> None:
    got = score("vif", dist, ref).numpy()  # RGB in, luma inside (pyiqa's pyramid)
    # float64 GSM parameters with the reference code's eigenvalue correction reproduce the official
    # MATLAB values to their 4 decimals (pyiqa's float32 values are 1e-4 and 5e-4 off on I08, I19).
    np.testing.assert_allclose(got, PUBLISHED["vif"][0], atol=1e-4)
    np.testing.assert_allclose(got, PUBLISHED["vif"][1], atol=6e-4)
    # piq's pixel-domain VIFp is a different quantity: far from the published VIF on I03.
    vifp = score("vif_p", luma(dist), luma(ref)).numpy()
    assert abs(vifp[0] - PUBLISHED["vif"][0][0]) > 0.03


def test_gmsd_calibration(dist: torch.Tensor, ref: torch.Tensor) -> None:
    got = score("gmsd", luma(dist), luma(ref)).numpy()
    np.testing.assert_allclose(got, PUBLISHED["gmsd"][0], atol=1e-4)


def test_pique_calibration(dist: torch.Tensor) -> None:
    got = pique_pyiqa(dist).numpy()
    np.testing.assert_allclose(got, PUBLISHED["piqe"][1], atol=5e-4)
    np.testing.assert_allclose(got, PUBLISHED["piqe"][0], atol=5e-3)


def test_niqe_calibration_with_shipped_parameters(dist: torch.Tensor) -> None:
    got = niqe_fast(dist).numpy()
    # pyiqa's published values; our parameters are the BasicSR copy of the same model: 0.003.
    np.testing.assert_allclose(got, PUBLISHED["niqe"][1], atol=3e-3)
    # the fast path is pyiqa's computation with a faster filter: pyiqa's values to NIQE_TOLERANCE
    np.testing.assert_allclose(got, niqe_pyiqa(dist).numpy(), rtol=0, atol=NIQE_TOLERANCE)
    np.testing.assert_allclose(niqe_fast(luma(dist)).numpy(), got, rtol=0, atol=NIQE_TOLERANCE)  # gray input


def test_shipped_niqe_parameters_are_the_documented_file() -> None:
    data = resources.files("analysis").joinpath("data", "niqe_pris_params.npz").read_bytes()
    assert len(data) == 11850
    assert hashlib.sha256(data).hexdigest() == "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"


def test_ct_path_is_the_calibrated_scorer(rng: np.random.Generator) -> None:
    """``compute_metrics`` on HU images == the calibrated scorer on the windowed [0, 1] images."""
    ref_hu = rng.normal(40.0, 120.0, (2, 192, 192)).astype(np.float32)
    pred_hu = ref_hu + rng.normal(0.0, 30.0, ref_hu.shape).astype(np.float32)
    names = ["psnr", "ssim", "gmsd", "niqe", "pique"]
    out = compute_metrics(names, pred_hu, ref_hu, window="abdomen")
    pu = torch.from_numpy(window_to_unit(pred_hu))[:, None]
    ru = torch.from_numpy(window_to_unit(ref_hu))[:, None]
    for name in names:
        want = score(name, pu, ru).double().numpy()
        np.testing.assert_array_equal(out[name], want, err_msg=name)
    np.testing.assert_array_equal(out["niqe"], niqe_fast(pu).double().numpy())
    np.testing.assert_allclose(out["niqe"], niqe_pyiqa(pu).double().numpy(), rtol=0, atol=NIQE_TOLERANCE)


@pytest.mark.slow
def test_ct_path_vif_is_the_calibrated_scorer(rng: np.random.Generator) -> None:
    ref_hu = rng.normal(40.0, 120.0, (2, 128, 128)).astype(np.float32)
    pred_hu = ref_hu + rng.normal(0.0, 30.0, ref_hu.shape).astype(np.float32)
    ref_hu[:, :30] = pred_hu[:, :30] = -1000.0  # flat clipped air: the channel estimate's masked branches
    out = compute_metrics(["vif"], pred_hu, ref_hu)
    pu = torch.from_numpy(window_to_unit(pred_hu))[:, None]
    ru = torch.from_numpy(window_to_unit(ref_hu))[:, None]
    ensure_torchvision()
    from pyiqa.archs.vif_arch import VIF

    want = VIF()(pu.expand(-1, 3, -1, -1), ru.expand(-1, 3, -1, -1)).double().numpy()
    # Same pyramid and channel estimate; GSM parameters in float64 with the eigenvalue correction
    # (pyiqa: float32, none): 1e-3 where the flat air makes the local covariances singular.
    np.testing.assert_allclose(out["vif"], want.reshape(-1), atol=1e-3)
    assert np.all(out["vif"] > 0.05)


@pytest.mark.slow
def test_vif_is_finite_on_a_smooth_8bit_reference(rng: np.random.Generator) -> None:
    """A smooth 512² reference on the 8-bit window grid: the finest subbands' local covariances are
    nearly singular; pyiqa 0.1.16's float32 estimate gives negative eigenvalues and VIF = NaN here."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.normal(size=(1, 512, 512)), (0, 4, 4))
    ref_hu = field / field.std() * 120.0 + 40.0
    pred_hu = ref_hu + rng.normal(0.0, 60.0, ref_hu.shape)
    grid = [np.round(window_to_unit(a) * 255.0) / 255.0 * 400.0 - 160.0 for a in (pred_hu, ref_hu)]
    out = compute_metrics(["vif", "psnr"], grid[0], grid[1])
    assert np.all(np.isfinite(out["vif"])) and np.all((out["vif"] > 0.01) & (out["vif"] < 1.0))


def test_niqe_of_a_flat_image_is_nan_and_leaves_its_batch_alone(dist: torch.Tensor) -> None:
    """An output saturated over the whole window has no local variation, so NIQE is undefined: NaN for
    it, and the other images of its batch keep their values (pyiqa's pinv raised for the whole batch and
    stopped a whole report)."""
    flat = torch.full_like(dist[:1], 0.5)
    got = niqe_fast(torch.cat([dist[:1], flat, dist[1:2]])).numpy()
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], niqe_fast(dist[:2]).numpy(), rtol=0, atol=1e-12)
    hu = np.full((2, 192, 192), 3000.0, dtype=np.float32)  # above the abdomen window: flat after windowing
    hu[1] = np.random.default_rng(0).normal(40.0, 120.0, (192, 192))
    out = compute_metrics(["niqe", "psnr"], hu, hu[::-1].copy(), window="abdomen")
    values = np.asarray(out["niqe"])
    assert np.isnan(values[0]) and np.isfinite(values[1])
