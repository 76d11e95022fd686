"""The noise power spectrum (analysis.metrics.nps): white and linearly filtered noise of known spectrum
(closed forms and the exact expectation at each ROI size), the smallest ROI with a spectrum summary,
pixel-spacing scaling, the registered metrics, the NPS figure and the ``synth`` ``target: ndct``."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, ndimage

from analysis.figures import nps_figures
from analysis.metrics import METRICS, compute_metrics
from analysis.metrics.nps import (
    SPECTRUM_MIN_PX,
    average_frequency,
    dc_estimate,
    estimate_nps,
    extract_rois,
    image_nps,
    peak_frequency,
    radial_average,
    reference_mask,
    roi_corners,
    roi_side_px,
)
from analysis.simulate import simulate_trajectories
from analysis.tables import Orders, build_tables
from benchmark.core.errors import UserError
from benchmark.data import open_dataset

# 3×3 Laplacian convolved with the 3×3 binomial blur: along an axis |H|² = sin⁴(2π f Δ), a band-pass
# whose radial NPS peaks inside (0, Nyquist), like a CT reconstruction kernel's.
LAPLACIAN = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float64)
BINOMIAL = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
KERNEL = ndimage.convolve(np.pad(LAPLACIAN, 1), BINOMIAL, mode="constant")  # 5×5


def transfer_sq(kernel: np.ndarray, fy: np.ndarray, fx: np.ndarray, d: float) -> np.ndarray:
    """|H(fy, fx)|² of a kernel by its DTFT (independent of the estimator's FFT)."""
    c = kernel.shape[0] // 2
    m, n = np.mgrid[-c : c + 1, -c : c + 1]
    phase = np.exp(-2j * np.pi * (fy[..., None, None] * m * d + fx[..., None, None] * n * d))
    return np.abs((kernel * phase).sum(axis=(-2, -1))) ** 2


def test_white_noise_is_flat_at_sigma2_dx_dy(rng: np.random.Generator) -> None:
    """K = 1600 independent 32² ROIs: each 2-D NPS bin is a mean of 1600 exponential variables (relative sd
    1/√1600 = 2.5 %), so every bin lies within 5 sd (12.5 %), the mean over bins within 1 %; each radial
    bin k ≥ 1 averages ≥ 4 independent bins (≤ 1.25 % sd): within 6 %; the DC estimate 2·N(Δf) − N(2Δf)
    over two axes has sd √(5/2)·2.5 % ≈ 4 %: within 16 %. f_avg of the flat 1-D radial NPS on [0, f_Nyq]
    is ∫f df / ∫df = f_Nyq / 2 (sd ≈ 0.15 %): within 2 %. Before issue #20 §2 the zeroed DC bin made it
    f_Nyq/2 + Δf/2 (+6.25 % here), which this test encoded as ``f[1:].mean()``."""
    sigma, d, k, n = 20.0, 0.5, 1600, 32
    res = estimate_nps(rng.normal(0.0, sigma, (k, n, n)), d)
    expected = sigma**2 * d * d
    centre = (res.fy == 0)[:, None] & (res.fx == 0)[None, :]
    rel = res.nps[~centre] / expected
    assert abs(rel.mean() - 1) < 0.01 and np.abs(rel - 1).max() < 5 / np.sqrt(k)
    assert res.nps[centre].item() < 1e-9 * expected  # the mean is removed
    np.testing.assert_allclose(res.radial[1:] / expected, 1.0, atol=0.06)
    assert res.radial[0] == pytest.approx(expected, rel=0.16)  # DC estimated from its neighbours
    assert res.noise_hu == pytest.approx(sigma, rel=0.01)
    assert res.noise_hu == pytest.approx(res.roi_std_hu, rel=1e-9)  # Parseval self-check
    f_nyq = 1 / (2 * d)
    assert res.f[0] == 0 and res.f[-1] == pytest.approx(f_nyq) and res.f[1] == pytest.approx(1 / (n * d))
    assert res.f_avg == pytest.approx(f_nyq / 2, rel=0.02)
    # the quadrature itself: exact for a flat spectrum at every ROI size
    for m in (8, 16, 32, 64):
        f = np.arange(m // 2 + 1) / (m * d)
        assert average_frequency(f, np.ones_like(f)) == pytest.approx(f_nyq / 2, rel=1e-12)


def test_dc_estimate_is_the_linear_extrapolation_along_the_axes() -> None:
    """``2·N(Δf) − N(2Δf)``: exact for ``a + c·|f|`` (white noise plus the ramp of FBP noise), ``a − 2bΔf²``
    for an even quadratic ``a + b·f²``, never negative."""
    f = np.fft.fftshift(np.fft.fftfreq(16, d=0.8))
    radius = np.hypot(f[:, None], f[None, :])
    df = f[1] - f[0]
    assert dc_estimate(3.0 + 5.0 * radius) == pytest.approx(3.0, rel=1e-12)
    assert dc_estimate(3.0 - 5.0 * radius**2) == pytest.approx(3.0 + 10.0 * df**2, rel=1e-12)
    assert dc_estimate(radius**3) == 0.0  # clipped: a steep rise extrapolates below 0


def test_filtered_noise_has_the_filter_shape(rng: np.random.Generator) -> None:
    sigma, d, n = 10.0, 0.8, 32
    field = ndimage.convolve(rng.normal(0.0, sigma, (1024, 1024)), KERNEL, mode="wrap")
    corners = np.array([(r, c) for r in range(0, 1024, n) for c in range(0, 1024, n)])
    res = estimate_nps(extract_rois(field, corners, n), d)
    want = transfer_sq(KERNEL, res.fy[:, None] * np.ones_like(res.fx), np.ones_like(res.fy)[:, None] * res.fx, d)
    ratio = res.nps / (sigma**2 * d * d)
    # 1024 ROIs: 3 % sd per bin; plus the ROI-edge leakage of a 5×5 kernel: 0.05 of the peak
    np.testing.assert_allclose(ratio, want, rtol=0.15, atol=0.05 * want.max())
    assert res.noise_hu == pytest.approx(sigma * np.sqrt((KERNEL**2).sum()), rel=0.03)
    # independent radial reference: the angular mean of |H|² on a fine grid up to Nyquist
    f = np.linspace(0, 1 / (2 * d), 801)
    theta = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radial = transfer_sq(KERNEL, f[:, None] * np.sin(theta), f[:, None] * np.cos(theta), d).mean(axis=1)
    f_avg = (f * radial).sum() / radial.sum()
    f_peak = f[np.argmax(radial)]
    assert res.f_avg == pytest.approx(f_avg, rel=0.04)
    assert abs(res.f_peak - f_peak) <= 1 / (n * d)  # within one frequency bin


# Isotropic radial spectra (cycles/px) for the closed-form comparisons: white; Gaussian-filtered white
# noise, NPS ∝ |FT of a Gaussian of σ px|² = exp(−4π²σ²f²) (low-pass, f_peak 0); white plus that
# low-pass; FBP-like noise, the ramp |f| times a Hann apodisation squared (band-pass, peak 0.153 cycles/px).
Spectrum = Callable[[np.ndarray], np.ndarray]
SPECTRA: dict[str, Spectrum] = {
    "white": lambda f: np.ones_like(f),
    "gauss_1.5": lambda f: np.exp(-4 * np.pi**2 * 1.5**2 * f**2),
    "gauss_2": lambda f: np.exp(-4 * np.pi**2 * 2.0**2 * f**2),
    "white_plus_lowpass": lambda f: 0.2 + np.exp(-4 * np.pi**2 * 1.5**2 * f**2),
    "fbp_ramp": lambda f: np.abs(f) * np.where(np.abs(f) <= 0.5, np.cos(np.pi * f) ** 4, 0.0),
}
# f_avg error (%) of the estimator's expectation against the continuous spectrum at 8 / 16 / 32 / 64 px:
# the table of the module docstring (finite-ROI leakage plus the sampling of the radial grid).
ROI_SIZES = (8, 16, 32, 64)
FAVG_ERROR_PERCENT = {
    "white": (0.0, 0.0, 0.0, 0.0),
    "gauss_1.5": (11.51, -1.01, 2.31, 2.24),
    "gauss_2": (40.05, -0.96, 1.92, 2.60),
    "white_plus_lowpass": (19.25, 4.92, 2.82, 1.67),
    "fbp_ramp": (-18.28, -4.53, -1.60, -0.84),
}


def continuous_radial(spectrum: Spectrum) -> tuple[float, float]:
    """``(f_avg, f_peak)`` of a continuous 1-D radial spectrum on ``[0, f_Nyq = ½]`` cycles/px:
    ``∫ f·S df / ∫ S df`` by ``scipy.integrate.quad``, the peak on a 10⁻⁵ grid."""
    num = integrate.quad(lambda f: f * spectrum(f), 0.0, 0.5)[0]
    fine = np.linspace(0.0, 0.5, 50001)
    return num / integrate.quad(spectrum, 0.0, 0.5)[0], float(fine[np.argmax(spectrum(fine))])


def expected_periodogram(spectrum: Spectrum, n: int, grid: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The exact expectation of the estimator's 2-D NPS (pixel units, zero frequency centred, DC bin 0 as
    after the mean removal) for stationary noise of isotropic NPS ``spectrum(|f|)`` seen through ``n × n``
    ROIs: the autocovariance (inverse DFT of the NPS on a ``grid``-periodic lattice) times the lag window
    ``(1 − |τy|/n)·(1 − |τx|/n)`` of an ``n``-px ROI, transformed back on the ROI's frequencies (bins
    k ≠ 0 are unchanged by the mean removal)."""
    fg = np.fft.fftfreq(grid)
    cov = np.fft.ifft2(spectrum(np.hypot(fg[:, None], fg[None, :]))).real
    tau = np.arange(-(n - 1), n)
    window = 1 - np.abs(tau) / n
    lagged = cov[np.ix_(tau % grid, tau % grid)] * np.outer(window, window)
    f = np.fft.fftshift(np.fft.fftfreq(n))
    dft = np.exp(-2j * np.pi * np.outer(f, tau))
    nps = (dft @ lagged @ dft.T).real
    nps[n // 2, n // 2] = 0.0
    return nps, f


def test_gaussian_filtered_noise_matches_the_continuous_spectrum(rng: np.random.Generator) -> None:
    """White noise through ``gaussian_filter`` (σ 1.5 px), 4096 independent 64² ROIs, 0.5 mm pixels:
    f_avg within 3 % of the continuous radial spectrum exp(−4π²σ²f²) integrated over [0, f_Nyq], and
    f_peak = 0. The estimator's exact expectation at 64 px is +2.24 % (the ROI's lag window, module
    docstring); the sample is within 1 % of that expectation (its sd at K = 4096 is ≈ 0.2 %). Before
    issue #20 §2 this f_avg was +12 % off and f_peak was Δf."""
    sigma_px, d, n, side = 1.5, 0.5, 64, 4096
    field = ndimage.gaussian_filter(rng.standard_normal((side, side), dtype=np.float32), sigma_px, mode="wrap")
    rois = field.reshape(side // n, n, side // n, n).swapaxes(1, 2).reshape(-1, n, n)
    res = estimate_nps(rois, d)
    favg_px, _ = continuous_radial(SPECTRA["gauss_1.5"])
    assert res.f_avg == pytest.approx(favg_px / d, rel=0.03)
    assert res.f_peak == 0.0
    nps, f = expected_periodogram(SPECTRA["gauss_1.5"], n)
    expected = average_frequency(*radial_average(nps, f, f))
    assert expected / favg_px - 1 == pytest.approx(0.0224, abs=5e-4)
    assert res.f_avg == pytest.approx(expected / d, rel=0.01)


def expected_radial(spectrum: Spectrum, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(f, radial NPS)`` in cycles/px of :func:`expected_periodogram` through the estimator's radial
    average (DC estimate included)."""
    nps, f = expected_periodogram(spectrum, n)
    return radial_average(nps, f, f)


@pytest.mark.parametrize("name", list(SPECTRA))
def test_roi_size_bias_and_the_smallest_trustworthy_roi(name: str) -> None:
    """The estimator's exact expectation against the continuous spectrum at 8 / 16 / 32 / 64 px (the
    module docstring's table, to 0.05 points). From ``SPECTRUM_MIN_PX`` = 16 px on, f_avg is within
    6.5 % and f_peak within one step Δf = 1/n; at 8 px the low-pass errors reach +40 % and the FBP-like
    band-pass peak (0.153 cycles/px) collapses to 0, so 8 px ROIs give NaN."""
    favg, fpeak = continuous_radial(SPECTRA[name])
    for n, want in zip(ROI_SIZES, FAVG_ERROR_PERCENT[name]):
        f, radial = expected_radial(SPECTRA[name], n)
        error = 100 * (average_frequency(f, radial) / favg - 1)
        assert error == pytest.approx(want, abs=0.05), n
        peak_off = abs(peak_frequency(f, radial) - fpeak)
        if n >= SPECTRUM_MIN_PX:
            assert abs(error) <= 6.5 and (name == "white" or peak_off <= 1 / n), n
    if name == "fbp_ramp":  # 8 px: the band-pass peak is lost
        assert peak_frequency(*expected_radial(SPECTRA[name], 8)) == 0.0 and fpeak > 1 / 8


def test_spectrum_summaries_need_16_px_rois(rng: np.random.Generator) -> None:
    """Each synth size at its default ROI side (``roi_side_px``: 25 mm): tiny (96², 4.17 mm) 8 px, f_avg
    and f_peak NaN (``noise_hu`` still given); small (256², 1.5625 mm, the CPU presets) 16 px and full
    (512², 0.78 mm) 32 px, both given. The same through the registered metrics."""
    for size, want_px in ((96, 8), (256, 16), (512, 32)):
        pixel_mm = 400.0 / size
        n = roi_side_px(pixel_mm)
        assert n == want_px
        res = image_nps(rng.normal(0.0, 10.0, (4 * n, 4 * n)), np.ones((4 * n, 4 * n), bool), pixel_mm)
        assert res is not None and np.isfinite(res.noise_hu)
        assert res.noise_hu == pytest.approx(res.roi_std_hu, rel=1e-9)
        resolved = n >= SPECTRUM_MIN_PX
        assert np.isfinite(res.f_avg) == resolved and np.isfinite(res.f_peak) == resolved
    pred, ref, mask = ct_like_pair(rng, n=2, size=96)
    got = compute_metrics(["nps_noise_hu", "nps_favg", "nps_fpeak"], pred, ref, pixel_spacing_mm=400 / 96, roi=mask)
    assert np.isfinite(got["nps_noise_hu"]).all()
    assert np.isnan(got["nps_favg"]).all() and np.isnan(got["nps_fpeak"]).all()


def test_pixel_spacing_scales_the_frequency_axis(rng: np.random.Generator) -> None:
    rois = ndimage.convolve(rng.normal(0, 5.0, (64, 32, 32)), BINOMIAL[None], mode="wrap")
    a, b = estimate_nps(rois, 1.0), estimate_nps(rois, 0.5)
    np.testing.assert_allclose(b.f, 2 * a.f)
    np.testing.assert_allclose(b.fx, 2 * a.fx)
    assert b.f_avg == pytest.approx(2 * a.f_avg) and b.f_peak == pytest.approx(2 * a.f_peak)
    np.testing.assert_allclose(b.nps, a.nps / 4)  # HU²·mm²: Δx·Δy
    assert b.noise_hu == pytest.approx(a.noise_hu)  # HU: independent of the spacing
    c = estimate_nps(rois, (1.0, 0.5))  # only Δx halved
    np.testing.assert_allclose(c.fx, 2 * a.fx)
    np.testing.assert_allclose(c.fy, a.fy)
    np.testing.assert_allclose(c.nps, a.nps / 2)


def test_roi_placement_respects_the_mask() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[10:60, 20:90] = True
    corners = roi_corners(mask, 16)
    assert len(corners)
    for r, c in corners:
        assert mask[r : r + 16, c : c + 16].all()
    assert (corners % 8 == 0).all()  # grid of stride n / 2
    assert roi_side_px(0.78) == 32 and roi_side_px(1.5625) == 16 and roi_side_px(400 / 96) == 8


def ct_like_pair(rng: np.random.Generator, n: int = 3, size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference with two uniform soft-tissue blocks and structure elsewhere, a prediction with
    filtered noise, and the blocks' mask."""
    ref = np.full((n, size, size), 300.0, dtype=np.float32)
    ref[:, ::8, :] = 900.0  # bone-like stripes: not uniform
    mask = np.zeros_like(ref, dtype=bool)
    ref[:, 4:92, 4:92], mask[:, 6:90, 6:90] = 40.0, True
    ref[:, 96:126, 4:124], mask[:, 98:124, 6:122] = 100.0, True
    noise = ndimage.convolve(rng.normal(0, 15.0, ref.shape), BINOMIAL[None], mode="wrap")
    return (ref + noise).astype(np.float32), ref, mask


def test_metrics_through_compute_metrics_match_the_estimator(rng: np.random.Generator) -> None:
    pred, ref, mask = ct_like_pair(rng)
    names = ["nps_noise_hu", "nps_favg", "nps_fpeak"]
    got = compute_metrics(names, pred, ref, pixel_spacing_mm=0.7, roi=mask, batch_size=2)
    for i in range(len(pred)):
        res = image_nps(pred[i].astype(np.float64) - ref[i], mask[i], 0.7)
        assert res is not None and res.n_rois >= 2
        assert got["nps_noise_hu"][i] == pytest.approx(res.noise_hu, rel=1e-12)
        assert got["nps_favg"][i] == pytest.approx(res.f_avg, rel=1e-12)
        assert got["nps_fpeak"][i] == pytest.approx(res.f_peak, rel=1e-12)
    # without a mask: the uniform regions of the (smoothed) reference, data-layer threshold
    derived = compute_metrics(names, pred, ref, pixel_spacing_mm=0.7)
    res0 = image_nps(pred[0].astype(np.float64) - ref[0], reference_mask(ref[0], 0.7), 0.7)
    assert res0 is not None and derived["nps_favg"][0] == pytest.approx(res0.f_avg, rel=1e-12)
    # no uniform square: NaN, not a value from edges
    none = compute_metrics(["nps_noise_hu"], pred, ref, pixel_spacing_mm=0.7, roi=np.zeros_like(mask))
    assert np.isnan(none["nps_noise_hu"]).all()
    # other metrics are unchanged by the new arguments
    plain = compute_metrics(["rmse_hu", "psnr"], pred, ref)
    extra = compute_metrics(["rmse_hu", "psnr"], pred, ref, pixel_spacing_mm=0.7, roi=mask)
    for k in plain:
        np.testing.assert_array_equal(plain[k], extra[k])
    with pytest.raises(UserError, match="pixel spacing"):
        compute_metrics(["nps_favg"], pred, ref)
    with pytest.raises(UserError, match="roi must be"):
        compute_metrics(["nps_favg"], pred, ref, pixel_spacing_mm=0.7, roi=mask[:1])


def test_registry_metadata_and_tables_bold_no_best() -> None:
    for name in ("nps_noise_hu", "nps_favg", "nps_fpeak"):
        m = METRICS[name]
        assert m.full_reference and m.regions and m.space == "hu" and not m.weights and "ICRU" in m.paper
    assert METRICS["nps_noise_hu"].ranked and not METRICS["nps_noise_hu"].higher_is_better
    assert METRICS["nps_noise_hu"].unit == "HU" and METRICS["nps_favg"].unit == "mm⁻¹"
    assert not METRICS["nps_favg"].ranked and not METRICS["nps_fpeak"].ranked
    assert METRICS["nps_favg"].direction == "↕" and METRICS["psnr"].direction == "↑"
    traj = simulate_trajectories(losses=("a", "b"), architectures=("redcnn",), doses=("25_360",), patients=4,
                                 slices_per_patient=1, epochs=2, rng=3,
                                 metrics={"rmse_hu": (20.0, 2.0, False), "nps_favg": (0.3, 0.02, True)})  # fmt: skip
    orders = Orders(["a", "b"], ["redcnn"], ["25_360"])
    tables = {t.name: t for t in build_tables(traj, None, None, orders=orders)}
    assert not tables["metric_nps_favg"].bold.to_numpy().any() and "↕" in tables["metric_nps_favg"].caption
    assert tables["metric_rmse_hu"].bold.to_numpy().any()
    assert "rmse_hu_per_dose" in tables  # the RMSE table still finds RMSE in HU


def test_nps_figure_is_written(tmp_path, rng: np.random.Generator) -> None:
    pred, ref, mask = ct_like_pair(rng, n=1)
    rows = []
    for loss, scale in (("mse", 0.3), ("l1", 0.5)):
        arrays = {"input": pred[0], "output": ref[0] + scale * (pred[0] - ref[0]), "target": ref[0], "image": "P1/000",
                  "epoch": 3, "pixel_mm": 0.7, "roi": mask[0], "target_noise_free": ref[0] - 0.2 * (pred[0] - ref[0])}
        rows.append({"cell": f"{loss}__redcnn__25_360__s0", "loss": loss, "architecture": "redcnn", "dose": "25_360",
                     "seed": 0, "arrays": arrays})  # fmt: skip
    paths = nps_figures(pd.DataFrame(rows), Orders(["mse", "l1"], ["redcnn"], ["25_360"]), tmp_path)
    assert [p.name for p in paths] == ["nps_25_360.png", "nps_25_360.pdf"]
    png = mpimg.imread(paths[0])
    assert png.shape[0] > 200 and png.shape[1] > 200 and png.std() > 0.01  # not blank


def _build(tmp_path, monkeypatch, name: str, **opts):
    monkeypatch.setenv("LDCT_BENCH_CACHE", str(tmp_path / name))
    ds = open_dataset("synth", {"size": "tiny", "patients": 3, "slices_per_patient": 2, "build_device": "cpu", **opts})
    ds.prepare(progress=False)
    return ds


def test_synth_ndct_target(tmp_path, monkeypatch) -> None:
    fbp = _build(tmp_path, monkeypatch, "fbp")
    ndct = _build(tmp_path, monkeypatch, "ndct", target="ndct")
    again = _build(tmp_path, monkeypatch, "again", target="ndct")
    assert ndct.cache_folder.name != fbp.cache_folder.name  # its own cache; fbp's hash is unchanged
    for split in ("train", "test"):
        a, b = ndct.load(split, "100_720"), again.load(split, "100_720")
        np.testing.assert_array_equal(a.targets, b.targets)  # deterministic
        f = fbp.load(split, "100_720")
        np.testing.assert_array_equal(a.extra["other_target"], f.targets)  # the noiseless FBP, unchanged
        np.testing.assert_array_equal(a.inputs, f.inputs)  # the inputs, unchanged
    pairs, clean = ndct.load("test", "100_720"), fbp.load("test", "100_720")
    roi = np.asarray(pairs.extra["roi"])
    ref_noise = (np.asarray(pairs.targets, np.float64) - clean.targets)[roi]
    in_noise = (np.asarray(pairs.inputs, np.float64) - clean.targets)[roi]
    assert roi.sum() > 100
    # the same dose and views as the 100_720 input: the same noise level (±15 %), independent draws
    assert ref_noise.std() == pytest.approx(in_noise.std(), rel=0.15) and ref_noise.std() > 1.0
    assert abs(np.corrcoef(ref_noise, in_noise)[0, 1]) < 0.1


def test_ndct_noise_baseline_is_the_nps_of_the_ndct_noise(tmp_path, monkeypatch) -> None:
    """``score_ndct_noise`` (the reference of ``closer_texture`` claims with ``reference: ndct``) equals
    the estimator on the NDCT's own noise (NDCT − noise-free), image by image."""
    from analysis.scoring_exec import load_eval_set, noise_region_metrics, score_ndct_noise

    # 256² slices: the 96² ones are too coarse for the uniform ROI squares
    # two test patients: a uniform ROI square must fit on at least one slice (it depends on the anatomy)
    ds = _build(tmp_path, monkeypatch, "ndct", target="ndct", size="small", slices_per_patient=1, patients=4,
                val_patients=1, test_patients=2)
    ev = load_eval_set(ds, "test", "25_360", "abdomen", None)
    assert ev.target_noise_free is not None and ev.roi is not None
    names = noise_region_metrics(["psnr", "nps_noise_hu", "nps_favg", "nps_fpeak", "rmse_hu"])
    assert names == ["nps_noise_hu", "nps_favg", "nps_fpeak"]
    rows = score_ndct_noise(ev, names, window="abdomen", device="cpu", batch_size=4, chunk=3, ref_cache={})
    got = rows.pivot(index="image", columns="metric", values="value")
    measured = 0
    for i, image in enumerate(ev.images):
        noise = np.asarray(ev.targets[i], np.float64) - ev.target_noise_free[i]
        res = image_nps(noise, ev.roi[i], ev.pixel_mm)
        if res is None:  # no uniform square on this slice: NaN, as for any output
            assert got.loc[image].isna().all()
            continue
        measured += 1
        assert got.loc[image, "nps_noise_hu"] == pytest.approx(res.noise_hu, rel=1e-9)
        assert got.loc[image, "nps_favg"] == pytest.approx(res.f_avg, rel=1e-9)
        assert got.loc[image, "nps_fpeak"] == pytest.approx(res.f_peak, rel=1e-9)
    assert measured >= 1
    # an fbp-target dataset has no noise-free image besides its target: no baseline
    fbp = _build(tmp_path, monkeypatch, "fbp")
    assert load_eval_set(fbp, "test", "25_360", "abdomen", None).target_noise_free is None
