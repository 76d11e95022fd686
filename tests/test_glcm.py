"""Soft GLCM and Haralick features against scikit-image, and their gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import graycomatrix, graycoprops

from losses.glcm import (
    FEATURES,
    glcm_features,
    glcm_offsets,
    haralick_features,
    level_scale,
    soft_glcm,
)

DISTANCES = [1, 2, 3]
ANGLES = [0, 45, 90, 135]
SKIMAGE_PROP = {"contrast": "contrast", "homogeneity": "homogeneity", "correlation": "correlation", "asm": "ASM"}


def _quantised(rng: np.random.Generator, levels: int, shape: tuple[int, ...]) -> tuple[np.ndarray, torch.Tensor]:
    """Integer levels and the same image at the bin centres of value_range (0, 1)."""
    img = rng.integers(0, levels, shape)
    return img, torch.tensor(img / (levels - 1), dtype=torch.float64).unsqueeze(1)


def _skimage(img: np.ndarray, levels: int) -> np.ndarray:
    return graycomatrix(img.astype(np.uint8), DISTANCES, np.deg2rad(ANGLES), levels=levels, symmetric=True, normed=True)


@pytest.mark.parametrize("normalize", [True, False])
def test_soft_glcm_equals_skimage_in_the_hard_limit(rng, normalize):
    levels = 8
    img, x = _quantised(rng, levels, (3, 17, 13))
    sigma = 1e-3 / (levels - 1)  # σ → 0: every other bin's weight underflows to exactly 0
    ours = soft_glcm(x, levels, DISTANCES, ANGLES, sigma, (0.0, 1.0), normalize=normalize)
    assert ours.shape == (3, len(DISTANCES) * len(ANGLES), levels, levels)
    for n in range(3):
        ref = _skimage(img[n], levels)  # (L, L, n_d, n_a)
        got = ours[n].reshape(len(DISTANCES), len(ANGLES), levels, levels).permute(2, 3, 0, 1).numpy()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14)


def test_offsets_follow_skimage_convention():
    # (round(d sin θ), round(d cos θ)), distances outer, angles inner; rows increase for 45° and 90°.
    assert glcm_offsets([1, 2], [0, 45, 90, 135]) == [(0, 1), (1, 1), (1, 0), (1, -1), (0, 2), (1, 1), (2, 0), (1, -1)]


def test_diagonal_direction_matches_skimage():
    # Only the lower-right neighbour pairs 0 with 3 at 45° (scikit-image), only the lower-left pairs 1 with 2 at 135°.
    img = np.array([[0, 1], [2, 3]])
    x = torch.tensor(img / 3.0, dtype=torch.float64)[None, None]
    g = soft_glcm(x, 4, [1], [45, 135], sigma=1e-4)
    assert g[0, 0, 0, 3] == 0.5 and g[0, 0, 3, 0] == 0.5
    assert g[0, 1, 1, 2] == 0.5 and g[0, 1, 2, 1] == 0.5
    for k, a in enumerate([45, 135]):
        ref = graycomatrix(img.astype(np.uint8), [1], [np.deg2rad(a)], levels=4, symmetric=True, normed=True)
        np.testing.assert_array_equal(g[0, k].numpy(), ref[:, :, 0, 0])


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_features_equal_graycoprops_in_the_hard_limit(rng, dtype, atol):
    levels = 16
    img, x = _quantised(rng, levels, (2, 24, 19))
    x = x.to(dtype)
    sigma = 1e-3 / (levels - 1)
    offsets = glcm_offsets(DISTANCES, ANGLES)
    full = haralick_features(soft_glcm(x, levels, DISTANCES, ANGLES, sigma))
    fast = glcm_features(x, offsets, FEATURES, levels, sigma)
    for n in range(2):
        ref_glcm = _skimage(img[n], levels)
        for name, prop in SKIMAGE_PROP.items():
            ref = graycoprops(ref_glcm, prop).reshape(-1)  # (n_d, n_a) → distances outer, angles inner
            scale = max(1.0, float(np.abs(ref).max()))  # contrast is in bin² units (up to ~100 here)
            np.testing.assert_allclose(full[name][n].double().numpy(), ref, rtol=0, atol=atol * scale, err_msg=name)
            np.testing.assert_allclose(fast[name][n].double().numpy(), ref, rtol=0, atol=atol * scale, err_msg=name)


@pytest.mark.parametrize("levels", [16, 64, 256])
def test_reference_levels_in_the_hard_limit(rng, levels):
    # Gray-level differences in bins of a 256-level GLCM: contrast = s² × graycoprops' contrast and
    # homogeneity = Σ P / (1 + s²(i − j)²) with s = 255/(L − 1), from scikit-image's hard GLCM; correlation
    # and ASM are unchanged. At L = 256 (s = 1) all four are graycoprops' values.
    img, x = _quantised(rng, levels, (2, 20, 17))
    sigma = 1e-3 / (levels - 1)
    offsets = glcm_offsets(DISTANCES, ANGLES)
    fast = glcm_features(x, offsets, FEATURES, levels, sigma, reference_levels=256)
    s = 255 / (levels - 1)
    assert level_scale(levels, 256) == pytest.approx(s) and level_scale(levels, None) == 1.0
    i = np.arange(levels)
    for n in range(2):
        ref_glcm = _skimage(img[n], levels)  # (L, L, n_d, n_a)
        p = ref_glcm.reshape(levels, levels, -1)
        expected = {
            "contrast": s * s * graycoprops(ref_glcm, "contrast").reshape(-1),
            "homogeneity": (p / (1.0 + (s * (i[:, None] - i[None, :])) ** 2)[..., None]).sum(axis=(0, 1)),
            "correlation": graycoprops(ref_glcm, "correlation").reshape(-1),
            "asm": graycoprops(ref_glcm, "ASM").reshape(-1),
        }
        if levels == 256:
            assert np.allclose(expected["homogeneity"], graycoprops(ref_glcm, "homogeneity").reshape(-1))
        for name in FEATURES:
            np.testing.assert_allclose(fast[name][n].numpy(), expected[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_reference_scale_contrast_hardly_depends_on_the_level_count():
    # A smooth image at 32, 64 and 256 levels with σ fixed in gray levels (the same smoothing): contrast on the
    # 256-level scale agrees within 1 %; in bin units it would scale like (L − 1)².
    gen = torch.Generator().manual_seed(5)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 40, 40, generator=gen, dtype=torch.float64), 3, 1)
    offsets = glcm_offsets([1, 3], ANGLES)
    ref = glcm_features(base, offsets, ["contrast"], 256, 0.05, reference_levels=256)["contrast"]
    for levels in (32, 64):
        got = glcm_features(base, offsets, ["contrast"], levels, 0.05, reference_levels=256)["contrast"]
        torch.testing.assert_close(got, ref, rtol=0.01, atol=0)
        bins = glcm_features(base, offsets, ["contrast"], levels, 0.05)["contrast"]
        torch.testing.assert_close(bins * (255 / (levels - 1)) ** 2, got)


def test_constant_image_correlation_is_one_like_skimage():
    img = np.full((9, 9), 5)
    x = torch.tensor(img / 7.0, dtype=torch.float64)[None, None]
    ref = graycoprops(graycomatrix(img.astype(np.uint8), [1], [0], levels=8, symmetric=True, normed=True), "correlation")
    feats = glcm_features(x, [(0, 1)], ["correlation", "contrast"], levels=8, sigma=1e-4)
    assert ref[0, 0] == 1.0
    assert feats["correlation"].item() == pytest.approx(1.0, abs=1e-12)
    assert feats["contrast"].item() == 0.0


@pytest.mark.parametrize("reference_levels", [None, 256])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.5])  # 0.02: windowed soft weights; 0.1, 0.5: the window covers all bins
def test_moment_path_equals_full_glcm_for_soft_weights(normalize, sigma, reference_levels):
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(2, 1, 15, 12, generator=gen, dtype=torch.float64) * 1.2 - 0.1  # some values outside the range
    offsets = glcm_offsets([1, 3], ANGLES)
    glcm = soft_glcm(x, 32, sigma=sigma, offsets=offsets, normalize=normalize)
    full = haralick_features(glcm, reference_levels=reference_levels)
    fast = glcm_features(x, offsets, FEATURES, 32, sigma, normalize=normalize, reference_levels=reference_levels)
    for name in FEATURES:
        torch.testing.assert_close(fast[name], full[name], rtol=1e-10, atol=1e-12, msg=name)


def test_float32_moments_stay_accurate_at_256_levels():
    gen = torch.Generator().manual_seed(3)
    x64 = 0.25 + 0.02 * torch.randn(2, 1, 32, 32, generator=gen, dtype=torch.float64)  # soft tissue in net space
    offsets = glcm_offsets([1, 5], ANGLES)
    ref = glcm_features(x64, offsets, ("contrast", "correlation", "homogeneity"), 256)
    got = glcm_features(x64.float(), offsets, ("contrast", "correlation", "homogeneity"), 256)
    for name in ref:
        torch.testing.assert_close(got[name].double(), ref[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("levels,sigma", [(6, 0.12), (40, None)])  # all bins; windowed (σ = one of 39 bins)
def test_gradcheck_float64(normalize, levels, sigma):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 1, 6, 5, generator=gen, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    offsets = glcm_offsets([1, 2], [0, 45, 135])

    def fast(inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = glcm_features(inp, offsets, FEATURES, levels, sigma, normalize=normalize, reference_levels=256)
        return tuple(f[k] for k in FEATURES)

    assert torch.autograd.gradcheck(fast, (x,))
    assert torch.autograd.gradcheck(
        lambda inp: soft_glcm(inp, 5, [1], [0, 45], 0.2, normalize=normalize), (x,), fast_mode=True
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_on_constant_images(dtype):
    x = torch.full((2, 1, 16, 16), 0.3, dtype=dtype, requires_grad=True)
    feats = glcm_features(x, glcm_offsets([1, 7], ANGLES), FEATURES, 256)
    sum(v.sum() for v in feats.values()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(v).all() for v in feats.values())


def test_bad_inputs_raise_clear_errors():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        soft_glcm(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="leaves no pixel pair"):
        glcm_features(x, [(0, 8)])
    with pytest.raises(ValueError, match="unknown Haralick feature"):
        glcm_features(x, [(0, 1)], ["energy"])
    with pytest.raises(ValueError, match="hi > lo"):
        soft_glcm(x, value_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="reference_levels"):
        glcm_features(x, [(0, 1)], levels=8, reference_levels=1)
