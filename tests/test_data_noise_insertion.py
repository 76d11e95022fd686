"""Projection-domain noise insertion (Yu et al. 2012) and the I0 calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.data import open_dataset
from benchmark.data.measure import difference_noise_std, uniform_roi
from benchmark.data.noise_insertion import calibrate_i0, insert_noise, yu_variance


def test_yu_variance_formula():
    p = np.array([0.0, 2.0, 6.0])
    a, i0, se2 = 0.25, 1e5, 10.0
    e = np.exp(p) / i0
    np.testing.assert_allclose(yu_variance(p, a, i0, se2), 3 * e * (1 + 5 * se2 * e))
    assert yu_variance(p, 0.5, i0, 0.0)[0] == pytest.approx(1 / i0)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(UserError, match="dose"):
            yu_variance(p, bad, i0, se2)


@pytest.fixture(scope="module")
def synth_small_set(tmp_path_factory):
    """A few simulated slices whose photon count is known (I0 = 2e5 per ray per view)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LDCT_BENCH_CACHE", str(tmp_path_factory.mktemp("ni-cache")))
    ds = open_dataset("synth", {"size": "tiny", "patients": 3, "slices_per_patient": 3})
    full = np.array(ds.load("test", "100_720").inputs)
    quarter = np.array(ds.load("test", "25_720").inputs)
    clean = np.array(ds.load("test", "100_720").targets)
    yield ds, full, quarter, clean
    mp.undo()


@pytest.mark.slow
def test_inserted_noise_scales_like_dose(synth_small_set):
    ds, _, _, clean = synth_small_set
    roi = np.stack([uniform_roi(c, ds.pixel_mm) for c in clean])
    std = {a: difference_noise_std(insert_noise(clean, ds.pixel_mm, a, 2e5, np.random.default_rng(1)), clean, roi)
           for a in (0.1, 0.5)}
    assert std[0.1] / std[0.5] == pytest.approx(math.sqrt((1 - 0.1) / 0.1 / ((1 - 0.5) / 0.5)), rel=0.1)


@pytest.mark.slow
def test_calibration_recovers_the_simulators_photon_count(synth_small_set):
    """The simulator used I0 = 2e5; calibrating insertion on its 100 % / 25 % pair must find it again."""
    ds, full, quarter, _ = synth_small_set
    cal = calibrate_i0(full, quarter, ds.pixel_mm, dose=0.25)
    assert cal.i0 == pytest.approx(ds.i0, rel=0.2)
    assert cal.simulated_std_hu == pytest.approx(cal.target_std_hu, rel=0.02)
    assert cal.target_std_hu == pytest.approx(cal.real_std_hu * math.sqrt(0.6))


def test_calibration_input_errors(rng):
    with pytest.raises(UserError, match="must match"):
        calibrate_i0(np.zeros((2, 32, 32)), np.zeros((1, 32, 32)), 1.0)
    with pytest.raises(UserError, match="uniform"):
        calibrate_i0(np.full((1, 32, 32), -1000.0), np.full((1, 32, 32), -1000.0), 1.0)
    with pytest.raises(UserError, match="square"):
        insert_noise(np.zeros((1, 32, 40)), 1.0, 0.5, 1e5, rng)
