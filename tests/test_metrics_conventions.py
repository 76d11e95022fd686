"""The CT convention of analysis.metrics against scikit-image and plain numpy: window, data range,
SSIM variant, RMSE in HU; and the engine's input handling, chunking and reference cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from analysis.metrics import METRICS, MetricInfo, compute_metrics, info
from benchmark.core.conventions import WINDOWS, parse_window, window_to_unit
from benchmark.core.errors import UnknownNameError, UserError


def ct_pair(rng: np.random.Generator, n: int = 3, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Smooth soft-tissue-like reference in HU (partly outside the abdomen window) plus noise."""
    ref = gaussian_filter(rng.normal(0.0, 1.0, (n, size, size)), (0, 3, 3))
    ref = (ref / ref.std() * 150.0 + 40.0).astype(np.float32)
    ref[:, :8, :] = -1000.0  # air: clipped by the window
    ref[:, -6:, :] = 900.0  # bone: clipped by the window
    pred = (ref + rng.normal(0.0, 25.0, ref.shape)).astype(np.float32)
    return pred, ref


def skimage_ssim(pred_u: np.ndarray, ref_u: np.ndarray) -> np.ndarray:
    return np.array(
        [
            structural_similarity(
                r, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
            )
            for p, r in zip(pred_u, ref_u)
        ]
    )


@pytest.mark.parametrize("window", ["abdomen", "-1000,400", "head"])
def test_psnr_ssim_match_skimage_on_windowed_ct(rng: np.random.Generator, window: str) -> None:
    pred, ref = ct_pair(rng)
    out = compute_metrics(["psnr", "ssim", "rmse"], pred, ref, window=window)
    pu, ru = window_to_unit(pred, window).astype(np.float64), window_to_unit(ref, window).astype(np.float64)
    want_psnr = np.array([peak_signal_noise_ratio(r, p, data_range=1.0) for p, r in zip(pu, ru)])
    want_rmse = np.sqrt([mean_squared_error(r, p) for p, r in zip(pu, ru)])
    # piq adds 1e-8 to the MSE (a shift of 4.3e-8/MSE dB, 1.5e-4 dB at 35 dB) and works in float32:
    # relative agreement 1e-5 (4e-4 dB at 40 dB).
    np.testing.assert_allclose(out["psnr"], want_psnr, rtol=1e-5)
    # float32 Gaussian filtering (piq) vs float64 (scikit-image): agreement to 1e-5.
    np.testing.assert_allclose(out["ssim"], skimage_ssim(pu, ru), atol=1e-5)
    np.testing.assert_allclose(out["rmse"], want_rmse, rtol=1e-6)


def test_window_matters_and_default_is_abdomen(rng: np.random.Generator) -> None:
    pred, ref = ct_pair(rng)
    default = compute_metrics(["psnr"], pred, ref)["psnr"]
    abdomen = compute_metrics(["psnr"], pred, ref, window=(-160, 240))["psnr"]
    wide = compute_metrics(["psnr"], pred, ref, window="-1000,1000")["psnr"]
    np.testing.assert_array_equal(default, abdomen)
    assert WINDOWS["abdomen"] == parse_window("abdomen")
    # The same HU noise is a smaller fraction of a wider window: PSNR rises by 20·log10(2000/400).
    assert np.all(wide > default + 5)


def test_rmse_hu_is_raw_hu_without_clipping(rng: np.random.Generator) -> None:
    pred, ref = ct_pair(rng)
    pred[:, :8, :] += 300.0  # error inside the air region, invisible in the abdomen window
    out = compute_metrics(["rmse_hu", "rmse"], pred, ref, window="abdomen")
    want = np.sqrt(((pred.astype(np.float64) - ref) ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(out["rmse_hu"], want, rtol=1e-12)
    # rmse (window units) × window width is the HU RMSE of the *clipped* images: smaller here.
    pu, ru = window_to_unit(pred), window_to_unit(ref)
    clipped = np.sqrt(((pu.astype(np.float64) - ru) ** 2).mean(axis=(1, 2))) * 400.0
    np.testing.assert_allclose(out["rmse"] * 400.0, clipped, rtol=1e-6)
    assert np.all(out["rmse_hu"] > out["rmse"] * 400.0 + 10)


def test_shapes_dtypes_and_devices_accepted(rng: np.random.Generator) -> None:
    pred, ref = ct_pair(rng, n=2, size=64)
    a = compute_metrics(["psnr", "ssim"], pred, ref)
    b = compute_metrics(["psnr", "ssim"], torch.from_numpy(pred)[:, None], torch.from_numpy(ref)[:, None])
    c = compute_metrics(["psnr", "ssim"], pred.astype(np.float64), ref.astype(np.int16))
    for k in a:
        assert a[k].shape == (2,) and a[k].dtype == np.float64
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_allclose(c["psnr"], compute_metrics(["psnr"], pred, ref.astype(np.int16))["psnr"])


def test_chunking_does_not_change_values(rng: np.random.Generator) -> None:
    pred, ref = ct_pair(rng, n=5, size=64)
    names = ["psnr", "ssim", "rmse_hu", "gmsd"]
    whole = compute_metrics(names, pred, ref, batch_size=16)
    chunked = compute_metrics(names, pred, ref, batch_size=2)
    for k in names:
        np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-6)


def test_ref_cache_reuses_and_never_goes_stale(rng: np.random.Generator) -> None:
    pred, ref = ct_pair(rng, n=2, size=64)
    cache: dict = {}
    first = compute_metrics(["ssim"], pred, ref, ref_cache=cache)
    n_entries = len(cache)
    assert n_entries == 1
    again = compute_metrics(["ssim"], pred + 1.0, ref, ref_cache=cache)
    assert len(cache) == n_entries  # same reference: reused
    assert not np.array_equal(first["ssim"], again["ssim"])
    other_ref = ref + 50.0
    with_cache = compute_metrics(["ssim"], pred, other_ref, ref_cache=cache)
    fresh = compute_metrics(["ssim"], pred, other_ref)
    np.testing.assert_array_equal(with_cache["ssim"], fresh["ssim"])  # a new reference is not served stale
    assert len(cache) == 2
    compute_metrics(["ssim"], pred, ref, window="head", ref_cache=cache)
    assert len(cache) == 3  # the window is part of the key


def test_bad_input_errors_name_the_field(rng: np.random.Generator) -> None:
    pred, ref = ct_pair(rng, n=2, size=64)
    with pytest.raises(UnknownNameError, match=r"Did you mean 'psnr'"):
        compute_metrics(["psnrr"], pred, ref)
    with pytest.raises(UserError, match="full-reference") as exc:
        compute_metrics(["ssim"], pred, None)
    assert exc.value.field == "ref"
    with pytest.raises(UserError, match="differ in shape"):
        compute_metrics(["psnr"], pred, ref[:1])
    with pytest.raises(UserError, match="expected"):
        compute_metrics(["psnr"], pred[0], ref[0])
    bad = pred.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        compute_metrics(["psnr"], bad, ref)
    with pytest.raises(UserError, match="at least 192"):
        compute_metrics(["niqe"], pred, None)
    with pytest.raises(UserError, match="window"):
        compute_metrics(["psnr"], pred, ref, window="240,-160")


def test_registry_metadata_is_complete() -> None:
    required = {"psnr", "ssim", "rmse_hu", "vif", "lpips", "lpips_vgg", "dists", "niqe", "pique"}
    assert required <= set(METRICS)
    for name, m in METRICS.items():
        assert isinstance(m, MetricInfo) and m.name == name and info(name) is m
        assert m.kind in ("full_reference", "no_reference")
        assert m.value_domain[0] < m.value_domain[1]
        assert m.build is not None and m.library and m.summary
    assert not METRICS["psnr"].weights and METRICS["lpips"].weights == ("alexnet",)
    assert METRICS["psnr"].higher_is_better and not METRICS["niqe"].higher_is_better
    assert METRICS["niqe"].kind == "no_reference" and METRICS["rmse_hu"].unit == "HU"


def test_metadata_direction_matches_behaviour(rng: np.random.Generator) -> None:
    """Every weight-free full-reference metric ranks a less noisy copy as better, in the direction its
    ``higher_is_better`` says, and stays inside its ``value_domain``."""
    # the NPS metrics need uniform regions and a pixel spacing; tests/test_nps.py covers them
    names = [n for n, m in METRICS.items() if m.full_reference and not m.weights and not m.regions]
    ref = gaussian_filter(rng.normal(0.0, 1.0, (2, 192, 192)), (0, 3, 3))
    ref = (ref / ref.std() * 100.0 + 40.0).astype(np.float32)
    mild = ref + rng.normal(0.0, 10.0, ref.shape).astype(np.float32)
    strong = ref + rng.normal(0.0, 60.0, ref.shape).astype(np.float32)
    a = compute_metrics(names, mild, ref)
    b = compute_metrics(names, strong, ref)
    for name in names:
        m = METRICS[name]
        better, worse = (a[name], b[name]) if m.higher_is_better else (-a[name], -b[name])
        assert np.all(better > worse), name
        for v in (a[name], b[name]):
            assert np.all((v >= m.value_domain[0]) & (v <= m.value_domain[1])), name
