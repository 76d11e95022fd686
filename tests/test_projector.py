"""The PyTorch projector against scikit-image (parallel beam) and analytic ellipse projections (fan)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, rescale

from benchmark.core.errors import UserError
from benchmark.data.projector import Geometry, backproject, clinical_geometry, fbp, forward_project


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def shepp() -> np.ndarray:
    """Shepp–Logan at 199² (odd, so scikit-image's rotation centre N//2 is the geometric centre)."""
    img = rescale(shepp_logan_phantom(), 0.5, anti_aliasing=True)
    return np.ascontiguousarray(img[:199, :199])


def parallel_like_skimage(n: int, views: int) -> Geometry:
    return Geometry("parallel", views, n, n, 1.0, channel_mm=1.0)


@pytest.mark.parametrize("views", [90, 180])
def test_parallel_forward_matches_skimage_radon(shepp, views):
    theta = np.linspace(0, 180, views, endpoint=False)
    ref = radon(shepp, theta, circle=True)  # (channels, views)
    ours = forward_project(torch.from_numpy(shepp).float(), parallel_like_skimage(shepp.shape[0], views))
    assert ours.shape == (views, shepp.shape[0])
    assert rel_err(ours.numpy().T, ref) < 0.01


@pytest.mark.parametrize("filter_name", ["ramp", "hann"])
def test_parallel_fbp_matches_skimage_iradon(shepp, filter_name):
    n, views = shepp.shape[0], 180
    theta = np.linspace(0, 180, views, endpoint=False)
    sino = radon(shepp, theta, circle=True)
    ref = iradon(sino, theta, filter_name=filter_name, circle=True)
    ours = fbp(torch.from_numpy(sino.T.copy()).float(), parallel_like_skimage(n, views), filter_name).numpy()
    inside = np.hypot(*(np.mgrid[:n, :n] - n // 2)) < n // 2 - 1
    assert rel_err(ours[inside], ref[inside]) < 0.01
    # and FBP actually reconstructs the phantom (same error as scikit-image's own)
    assert rel_err(ours[inside], shepp[inside]) < rel_err(ref[inside], shepp[inside]) * 1.01 + 1e-3


def ellipse_line_integral(theta: np.ndarray, t: np.ndarray, x0: float, y0: float, a: float, b: float,
                          alpha: float, rho: float) -> np.ndarray:
    """Exact line integral of a uniform ellipse along lines ``x cos θ + y sin θ = t`` (Kak & Slaney §3.1)."""
    s2 = (a * np.cos(theta - alpha)) ** 2 + (b * np.sin(theta - alpha)) ** 2
    tt = t - (x0 * np.cos(theta) + y0 * np.sin(theta))
    return np.where(tt**2 < s2, 2 * rho * a * b / s2 * np.sqrt(np.clip(s2 - tt**2, 0, None)), 0.0)


def raster_ellipse(n: int, pixel: float, x0, y0, a, b, alpha, rho, oversample: int = 4) -> np.ndarray:
    """Area-weighted rasterisation (``oversample``² sub-pixels)."""
    m = n * oversample
    c = (np.arange(m) - (m - 1) / 2) * pixel / oversample
    x, y = np.meshgrid(c, -c)
    ca, sa = math.cos(alpha), math.sin(alpha)
    u = ((x - x0) * ca + (y - y0) * sa) / a
    v = (-(x - x0) * sa + (y - y0) * ca) / b
    inside = (u * u + v * v) < 1
    return rho * inside.reshape(n, oversample, n, oversample).mean(axis=(1, 3))


ELLIPSE = {"x0": 20.0, "y0": -15.0, "a": 60.0, "b": 35.0, "alpha": 0.5, "rho": 0.02}


def fan_ray_lines(geom: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Normal angle θ and signed distance t of every fan ray ``(V, C)``."""
    beta = geom.angles().numpy()[:, None]
    gam = geom.channel_positions().numpy()[None, :]
    phi = beta + math.pi + gam  # ray direction
    theta = phi + math.pi / 2
    sx, sy = geom.sid_mm * np.cos(beta), geom.sid_mm * np.sin(beta)
    return theta, sx * np.cos(theta) + sy * np.sin(theta)


def test_fan_forward_matches_analytic_ellipse():
    geom = clinical_geometry("fan", 256, 300.0, 360)
    img = raster_ellipse(256, geom.pixel_mm, **ELLIPSE)
    ours = forward_project(torch.from_numpy(img).float(), geom).numpy()
    theta, t = fan_ray_lines(geom)
    exact = ellipse_line_integral(theta, t, **ELLIPSE)
    assert rel_err(ours, exact) < 0.01
    # the peak of every view agrees too (no systematic scale error)
    np.testing.assert_allclose(ours.max(1), exact.max(1), rtol=0.01)


def test_parallel_forward_matches_analytic_ellipse():
    geom = clinical_geometry("parallel", 256, 300.0, 180)
    img = raster_ellipse(256, geom.pixel_mm, **ELLIPSE)
    ours = forward_project(torch.from_numpy(img).float(), geom).numpy()
    theta = geom.angles().numpy()[:, None] + 0 * geom.channel_positions().numpy()[None, :]
    t = geom.channel_positions().numpy()[None, :] + 0 * theta
    assert rel_err(ours, ellipse_line_integral(theta, t, **ELLIPSE)) < 0.01


@pytest.mark.parametrize("kind", ["fan", "parallel"])
def test_fbp_reconstructs_exact_projections(kind):
    """FBP of the analytic sinogram returns the ellipse's density inside it (to 1 %)."""
    geom = clinical_geometry(kind, 128, 300.0, 720 if kind == "fan" else 360)
    if kind == "fan":
        theta, t = fan_ray_lines(geom)
    else:
        theta = geom.angles().numpy()[:, None] + 0 * geom.channel_positions().numpy()[None, :]
        t = geom.channel_positions().numpy()[None, :] + 0 * theta
    sino = torch.from_numpy(ellipse_line_integral(theta, t, **ELLIPSE)).float()
    rec = fbp(sino, geom, "ramp").numpy()
    truth = raster_ellipse(128, geom.pixel_mm, **{**ELLIPSE, "a": ELLIPSE["a"] - 8, "b": ELLIPSE["b"] - 8})
    inner = truth > 0
    assert abs(rec[inner].mean() / ELLIPSE["rho"] - 1) < 0.01
    outside = raster_ellipse(128, geom.pixel_mm, **{**ELLIPSE, "a": ELLIPSE["a"] + 10, "b": ELLIPSE["b"] + 10}) == 0
    assert np.abs(rec[outside]).mean() < 0.01 * ELLIPSE["rho"]


def test_fan_and_parallel_fbp_agree():
    fan = clinical_geometry("fan", 128, 300.0, 720)
    par = clinical_geometry("parallel", 128, 300.0, 360)
    img = torch.from_numpy(raster_ellipse(128, fan.pixel_mm, **ELLIPSE)).float()
    a = fbp(forward_project(img, fan), fan, "hann").numpy()
    b = fbp(forward_project(img, par), par, "hann").numpy()
    assert rel_err(a, b) < 0.03


def test_batch_equals_single_and_2d_input(generator):
    geom = clinical_geometry("fan", 64, 300.0, 90)
    imgs = torch.rand(5, 64, 64, generator=generator)
    batch = forward_project(imgs, geom)
    single = torch.stack([forward_project(imgs[i], geom) for i in range(5)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)
    rec = fbp(batch, geom)
    torch.testing.assert_close(rec[2], fbp(batch[2], geom), rtol=1e-5, atol=1e-6)


def test_view_blocks_equal_cached_matrix(monkeypatch):
    """Geometries too large for the matrix cache are projected view-block by view-block: same result."""
    from benchmark.data import projector

    geom = clinical_geometry("fan", 64, 300.0, 120)
    img = torch.from_numpy(raster_ellipse(64, geom.pixel_mm, **ELLIPSE)).float()
    whole_fp, whole_bp = forward_project(img, geom), backproject(forward_project(img, geom)[None], geom)
    monkeypatch.setattr(projector, "PLAN_CACHE_BYTES", 1 << 16)
    monkeypatch.setattr(projector, "_MAX_ENTRIES_PER_BLOCK", 1 << 17)
    torch.testing.assert_close(forward_project(img, geom.with_views(120)), whole_fp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backproject(whole_fp[None], geom), whole_bp, rtol=1e-5, atol=1e-6)


def test_geometry_errors_name_the_field():
    with pytest.raises(UserError, match="geometry"):
        Geometry("cone", 10, 10, 10, 1.0)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="fan_spacing_rad"):
        Geometry("fan", 10, 10, 10, 1.0)
    with pytest.raises(ValueError, match="grid"):
        forward_project(torch.zeros(3, 32, 32), clinical_geometry("fan", 64, 300.0, 10))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    geom = clinical_geometry("fan", 128, 300.0, 180)
    img = torch.from_numpy(raster_ellipse(128, geom.pixel_mm, **ELLIPSE)).float()
    cpu = fbp(forward_project(img, geom), geom)
    gpu = fbp(forward_project(img.cuda(), geom), geom).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-6)
