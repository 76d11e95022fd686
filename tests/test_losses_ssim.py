"""SSIM / MS-SSIM losses against independent references (scikit-image, a numpy MS-SSIM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from skimage.metrics import structural_similarity

from benchmark.core.conventions import hu_to_net, window_to_unit
from benchmark.core.errors import UserError
from benchmark.core.ssim import SCALE_WEIGHTS, max_scales
from benchmark.core.ssim import ms_ssim_min_size as min_size
from losses import LOSSES, build_term


def _pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 'anatomy' in net space and a noisy copy (about 40 HU noise)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = 0.25 + 0.02 * np.sin(6 * xx) * np.cos(4 * yy) + 0.05 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1)
    noisy = clean + rng.normal(0, 0.01, clean.shape)
    return noisy, clean


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)[None, None]


def _gauss() -> np.ndarray:
    ax = np.arange(11) - 5
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    k = np.outer(g, g)
    return k / k.sum()


def _ssim_cs(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and contrast-structure maps, valid convolution, C1 = 0.01², C2 = 0.03²."""
    k = _gauss()

    def f(a: np.ndarray) -> np.ndarray:
        return convolve2d(a, k, mode="valid")

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    return float((((2 * mx * my + c1) / (mx**2 + my**2 + c1)) * cs).mean()), float(cs.mean())


def _ms_ssim_ref(x: np.ndarray, y: np.ndarray, scales: int) -> float:
    w = np.array(SCALE_WEIGHTS[:scales])
    if scales < len(SCALE_WEIGHTS):  # a subset is renormalised; all five are used as published (sum 1.0001)
        w = w / w.sum()
    vals = []
    for s in range(scales):
        if s:
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
            y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
        ssim, cs = _ssim_cs(x, y)
        vals.append(cs if s < scales - 1 else ssim)
    return float(np.prod(np.maximum(vals, 0) ** w))


def test_ssim_loss_matches_skimage(rng):
    noisy, clean = _pair(rng, 64)
    loss = build_term("ssim")(_t(noisy), _t(clean)).item()
    ref = structural_similarity(noisy, clean, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert loss == pytest.approx(1.0 - ref, abs=1e-6)
    assert 0.0 < loss < 2.0


def test_ssim_loss_in_a_window_matches_the_metric_space(rng):
    noisy, clean = _pair(rng, 64)
    loss = build_term("ssim", {"window": "abdomen"})(_t(noisy), _t(clean)).item()
    hu = lambda a: a * 4096 - 1024  # noqa: E731
    ref = structural_similarity(window_to_unit(hu(noisy), "abdomen").astype(np.float64),
                                window_to_unit(hu(clean), "abdomen").astype(np.float64), data_range=1.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert loss == pytest.approx(1.0 - ref, abs=1e-5)
    full = build_term("ssim")(_t(noisy), _t(clean)).item()
    assert loss > 5 * full  # the windowed loss sees the noise far more than the full-range one


@pytest.mark.parametrize("scales", [1, 3, 5])
def test_ms_ssim_loss_matches_numpy_reference(rng, scales):
    noisy, clean = _pair(rng, 176 if scales == 5 else 64)
    noisy_u = np.clip((noisy - 0.2) * 5, 0, 1)  # spread over [0, 1] so every scale matters
    clean_u = np.clip((clean - 0.2) * 5, 0, 1)
    loss = build_term("ms_ssim", {"scales": scales})(_t(noisy_u), _t(clean_u)).item()
    assert loss == pytest.approx(1.0 - _ms_ssim_ref(noisy_u, clean_u, scales), abs=1e-6)
    if scales == 1:
        ssim = build_term("ssim")(_t(noisy_u), _t(clean_u)).item()
        assert loss == pytest.approx(ssim, abs=1e-7)


def test_ms_ssim_size_rules():
    assert min_size(5) == 161 and min_size(3) == 41
    assert max_scales(64) == 3 and max_scales(160) == 4 and max_scales(161) == 5 and max_scales(10) == 0
    x = torch.rand(1, 1, 64, 64)
    with pytest.raises(UserError, match=r"at least 161 px.*scales <= 3") as err:
        build_term("ms_ssim")(x, x)
    assert err.value.field == "losses.ms_ssim.scales"
    with pytest.raises(UserError, match="scales"):
        build_term("ms_ssim", {"scales": 6})


@pytest.mark.parametrize("name", ["ssim", "ms_ssim"])
def test_zero_for_identical_and_gradients(rng, name):
    noisy, clean = _pair(rng, 64)
    term = build_term(name, {"scales": 3} if name == "ms_ssim" else {})
    target = _t(clean)
    assert term(target, target).item() == pytest.approx(0.0, abs=1e-12)
    pred = _t(noisy).requires_grad_()
    term(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    info = LOSSES[name]
    assert info.value_domain == ((0.0, 2.0) if name == "ssim" else (0.0, 1.0))


def test_bad_window_is_a_user_error():
    with pytest.raises(UserError, match="window"):
        build_term("ssim", {"window": "abdomenn"})
    assert hu_to_net(-1024.0) == 0.0
