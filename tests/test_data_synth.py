"""The embedded ``synth`` dataset: interface, physics (noise scaling), caching and determinism."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from benchmark.core.errors import UnknownNameError, UserError
from benchmark.data import DATASETS, PairedSlices, open_dataset
from benchmark.data import synth as synth_mod
from benchmark.data.phantoms import HU, Grid, downsample2, patient_slices
from benchmark.data.synth import CONDITIONS, noise_std_hu

# one xdist worker runs this module: its module-scoped fixtures are built once (--dist loadgroup)
pytestmark = pytest.mark.xdist_group(__name__)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny dataset built once for this module into a private cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LDCT_BENCH_CACHE", str(tmp_path_factory.mktemp("synth-cache")))
    ds = open_dataset("synth", {"size": "tiny"})
    ds.prepare(progress=False)
    yield ds
    mp.undo()


def test_registered_and_conditions():
    assert DATASETS["synth"].cls is synth_mod.SynthDataset
    ds = open_dataset("synth", {"size": "tiny"})
    assert ds.conditions() == [f"{d}_{v}" for d in (10, 25, 50, 100) for v in (180, 360, 720)]
    with pytest.raises(UnknownNameError, match="synth"):
        open_dataset("synht")


def test_bad_options_name_the_field():
    with pytest.raises(UserError, match=r"dataset\.options\.sise"):
        open_dataset("synth", {"sise": "tiny"})
    with pytest.raises(UserError, match=r"dataset\.options\.size"):
        open_dataset("synth", {"size": "huge"})
    with pytest.raises(UserError, match=r"dataset\.options\.patients"):
        open_dataset("synth", {"patients": 2})


@pytest.mark.slow
def test_load_returns_paired_slices_in_hu(tiny):
    pairs = tiny.load("train", "25_360")
    assert isinstance(pairs, PairedSlices)
    assert pairs.inputs.shape == pairs.targets.shape == (5 * 4, 96, 96)
    assert pairs.inputs.dtype == np.float32 and pairs.targets.dtype == np.float32
    assert pairs.pixel_spacing_mm == pytest.approx(400 / 96)
    assert pairs.condition == "25_360" and pairs.split == "train"
    assert len(set(pairs.slice_ids)) == len(pairs)
    assert all(s.startswith(p + "/") for s, p in zip(pairs.slice_ids, pairs.patients))
    # HU: air outside the body, soft tissue and bone inside
    assert np.median(pairs.targets[:, :3, :3]) == pytest.approx(-1000, abs=1)
    assert pairs.targets.max() > 600 and np.percentile(pairs.targets, 60) > -1000
    # splits are disjoint by patient: 5 / 1 / 2
    per_split = {s: set(tiny.load(s, "100_720").patients) for s in ("train", "val", "test")}
    assert [len(per_split[s]) for s in ("train", "val", "test")] == [5, 1, 2]
    assert not (per_split["train"] & per_split["test"]) and not (per_split["val"] & per_split["test"])


@pytest.mark.slow
def test_target_fbp_is_close_to_phantom_and_target_option(tiny, tmp_path):
    pairs = tiny.load("test", "100_720")
    phantom = np.asarray(pairs.extra["other_target"])
    roi = np.asarray(pairs.extra["roi"])
    # the noiseless FBP differs from the phantom only by blur: small in uniform regions
    assert np.abs(pairs.targets[roi] - phantom[roi]).mean() < 15
    ph = open_dataset("synth", {"size": "tiny", "target": "phantom"})
    assert ph.cache_folder == tiny.cache_folder  # same arrays, another view of them
    np.testing.assert_array_equal(ph.load("test", "100_720").targets, phantom)


@pytest.mark.slow
def test_noise_scales_with_dose_as_poisson_physics(tiny):
    """σ(10 %) / σ(100 %) = √10 ± 15 % and, dose being per view, σ(360) / σ(720) = √2 ± 15 %."""
    sigma = {c: noise_std_hu(tiny.load("test", c)) for c in CONDITIONS}
    for views in (180, 360, 720):
        assert sigma[f"10_{views}"] / sigma[f"100_{views}"] == pytest.approx(math.sqrt(10), rel=0.15)
        assert sigma[f"25_{views}"] / sigma[f"100_{views}"] == pytest.approx(2.0, rel=0.15)
    for dose in (10, 25, 50, 100):
        assert sigma[f"{dose}_360"] / sigma[f"{dose}_720"] == pytest.approx(math.sqrt(2), rel=0.15)
    assert 1.0 < sigma["100_720"] < 30


@pytest.mark.slow
def test_rebuild_is_bit_identical(tmp_path, monkeypatch):
    opts = {"size": "tiny", "patients": 3, "slices_per_patient": 1}
    arrays = []
    for name in ("a", "b"):
        monkeypatch.setenv("LDCT_BENCH_CACHE", str(tmp_path / name))
        ds = open_dataset("synth", opts)
        ds.prepare(progress=False)
        folder = ds.cache_folder
        arrays.append({p.relative_to(folder): np.load(p) for p in sorted(folder.rglob("*.npy"))})
    assert arrays[0].keys() == arrays[1].keys() and len(arrays[0]) > 40
    for key in arrays[0]:
        np.testing.assert_array_equal(arrays[0][key], arrays[1][key], err_msg=str(key))


def test_cache_path_depends_on_options_and_version(monkeypatch):
    base = open_dataset("synth", {"size": "tiny"}).cache_folder
    assert open_dataset("synth", {"size": "tiny", "seed": 1}).cache_folder != base
    assert open_dataset("synth", {"size": "tiny", "geometry": "parallel"}).cache_folder != base
    assert open_dataset("synth", {"size": "tiny", "redraw_train_noise": True}).cache_folder == base
    monkeypatch.setattr(synth_mod, "GENERATOR_VERSION", "synth-test")
    assert open_dataset("synth", {"size": "tiny"}).cache_folder != base


@pytest.mark.slow
def test_second_load_reads_the_cache(tiny, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(synth_mod.SynthDataset, "_build", boom)
    again = open_dataset("synth", {"size": "tiny"})
    pairs = again.load("val", "10_180")
    assert isinstance(pairs.inputs, np.memmap)


@pytest.mark.slow
def test_redraw_train_noise_is_deterministic_per_seed_and_epoch(tiny):
    ds = open_dataset("synth", {"size": "tiny", "redraw_train_noise": True})
    fixed = tiny.load("train", "25_720")
    e0 = ds.load("train", "25_720", epoch=0, seed=3)
    e0b = ds.load("train", "25_720", epoch=0, seed=3)
    e1 = ds.load("train", "25_720", epoch=1, seed=3)
    np.testing.assert_array_equal(e0.inputs, e0b.inputs)
    assert not np.array_equal(e0.inputs, e1.inputs) and not np.array_equal(e0.inputs, fixed.inputs)
    # same noise level, same targets; val/test keep their fixed noise
    assert noise_std_hu(e1) == pytest.approx(noise_std_hu(fixed), rel=0.1)
    np.testing.assert_array_equal(e0.targets, fixed.targets)
    np.testing.assert_array_equal(ds.load("test", "25_720", epoch=5, seed=3).inputs, tiny.load("test", "25_720").inputs)


def test_unknown_condition_and_split(tmp_cache):
    ds = open_dataset("synth", {"size": "tiny"})
    with pytest.raises(UserError, match="25_360"):
        ds.load("train", "30_360")
    with pytest.raises(UserError, match="split"):
        ds.load("training", "25_360")  # type: ignore[arg-type]
    assert not os.path.exists(ds.cache_folder)  # nothing was built for bad input


def test_phantoms_deterministic_textured_and_realistic():
    grid = Grid(128, 400 / 128)
    a = patient_slices(0, 0, 3, grid)
    np.testing.assert_array_equal(a, patient_slices(0, 0, 3, grid))
    assert not np.array_equal(a, patient_slices(1, 0, 3, grid))
    # neighbouring slices are alike, other patients are not
    corr_next = np.corrcoef(a[0].ravel(), a[1].ravel())[0, 1]
    corr_other = np.corrcoef(a[0].ravel(), patient_slices(0, 2, 1, grid)[0].ravel())[0, 1]
    assert corr_next > 0.9 and corr_next > corr_other
    assert a.min() == pytest.approx(HU["air"], abs=1) and a.max() > 800
    body = a[0][(a[0] > -200) & (a[0] < 200)]
    assert body.size > 2000 and body.std() > 20  # fat, organs, vessels: not flat
    for kind, lo, hi in (("thorax", -950, -750), ("head", 15, 50)):
        img = patient_slices(0, 5, 1, grid, kind=kind)[0]
        assert ((img > lo) & (img < hi)).mean() > 0.03, kind
    np.testing.assert_allclose(downsample2(np.arange(16.0).reshape(4, 4)), [[2.5, 4.5], [10.5, 12.5]])


_BUILD_SCRIPT = """
import sys
from benchmark.data import open_dataset, synth
orig = synth.SynthDataset._build
def counted(self, tmp, progress):
    with open(sys.argv[1], "a") as f:
        f.write("build\\n")
    return orig(self, tmp, progress)
synth.SynthDataset._build = counted
open_dataset("synth", {"size": "tiny", "patients": 3, "slices_per_patient": 1}).prepare(progress=False)
"""


@pytest.mark.slow
def test_concurrent_builds_build_once(tmp_path):
    """Two processes asking for the same cache at once: one builds, the other waits and reads it."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LDCT_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(repo)}
    log = tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(log)], env=env, cwd=repo,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert log.read_text().count("build") == 1
    folders = list((tmp_path / "cache" / "synth").iterdir())
    assert len([f for f in folders if f.is_dir()]) == 1 and not any(".tmp-" in f.name for f in folders)
