"""Task-based image-quality objects and their simulated realisations (benchmark.data.task_phantoms,
benchmark.data.task_sets): geometry and contrast of the signals, partial volume, localisation after the
physics, noise independence and dose scaling, determinism and the cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.data import open_dataset
from benchmark.data import task_sets as ts_mod
from benchmark.data.phantoms import HU, Grid, downsample2, patient_slices
from benchmark.data.simulate import HU_QUANTUM
from benchmark.data.task_phantoms import (
    CCT189_INSERTS,
    cct189,
    disk_coverage,
    insert_lesions,
    pixel_of,
    rod_phantom,
)
from benchmark.data.task_sets import REALISATIONS, task_folder, task_object, task_set

# one xdist worker runs this module: its module-scoped fixtures are built once (--dist loadgroup)
pytestmark = pytest.mark.xdist_group(__name__)


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """A private cache root for the whole module (never the user's cache, as tests/conftest.py's tmp_cache)."""
    root = tmp_path_factory.mktemp("task-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("LDCT_BENCH_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def tiny(cache_env):
    return open_dataset("synth", {"size": "tiny", "build_device": "cpu"})


def _dist(grid: Grid, ins) -> np.ndarray:
    x, y = grid.coords()
    return np.hypot(x - ins.x_mm, y - ins.y_mm)


# --- objects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cx", "cy", "r"), [(0.3, -0.2, 0.2), (0.3, -0.2, 1.5), (1.1, 2.2, 4.0), (0.0, 0.0, 6.0)])
def test_disk_coverage_is_the_exact_area(cx, cy, r):
    grid = Grid(24, 0.7)
    cov = disk_coverage(grid, cx, cy, r)
    assert cov.sum() * grid.pixel_mm**2 == pytest.approx(math.pi * r * r, rel=1e-9)
    assert cov.min() >= 0 and cov.max() <= 1
    s = 48  # brute force: the fraction of 48 × 48 sub-pixel centres inside the circle
    fx, fy = Grid(24 * s, grid.pixel_mm / s).coords()
    brute = (np.hypot(fx - cx, fy - cy) < r).reshape(24, s, 24, s).mean(axis=(1, 3))
    assert np.abs(cov - brute).max() < 6e-3  # the sub-sampling's own error; a wrong formula is off by > 0.05


@pytest.mark.parametrize("n", [192, 512])  # the fine grids of tiny and small
def test_cct189_layout_contrast_and_area(n):
    grid = Grid(n, 400.0 / n)
    obj = cct189(grid)
    assert obj.present.dtype == obj.absent.dtype == np.float32
    assert [(i.diameter_mm, i.contrast_hu) for i in obj.inserts] == [(d, c) for d, c, _ in CCT189_INSERTS]
    for ins, (_, _, angle) in zip(obj.inserts, CCT189_INSERTS):
        assert math.hypot(ins.x_mm, ins.y_mm) == pytest.approx(40.0)
        assert math.degrees(math.atan2(ins.y_mm, ins.x_mm)) % 360 == pytest.approx(angle)
        x, y = grid.coords()  # the recorded pixel is where Grid.coords puts that point
        r, c = round(ins.row), round(ins.col)
        assert abs(x[r, c] - ins.x_mm) <= grid.pixel_mm / 2 and abs(y[r, c] - ins.y_mm) <= grid.pixel_mm / 2
        # rasterised area (partial volume included) = π r² within 1 %, on the quantised object
        diff = (obj.present.astype(np.float64) - obj.absent)[_dist(grid, ins) < ins.radius_mm + 2 * grid.pixel_mm]
        area = diff.sum() / ins.contrast_hu * grid.pixel_mm**2
        assert area == pytest.approx(math.pi * ins.radius_mm**2, rel=0.01)
        assert diff.max() <= ins.contrast_hu
    # background: water (0 HU) inside the 200 mm disk, air outside; nothing else differs
    x, y = grid.coords()
    rho = np.hypot(x, y)
    inside, outside = rho < 100 - grid.pixel_mm, rho > 100 + grid.pixel_mm
    assert np.all(obj.absent[inside] == 0) and np.all(obj.absent[outside] == HU["air"])
    far = np.all([_dist(grid, i) > i.radius_mm + grid.pixel_mm for i in obj.inserts], axis=0)
    assert np.array_equal(obj.present[far], obj.absent[far])


def test_rod_phantom_has_low_and_high_contrast_rods_apart():
    grid = Grid(192, 400 / 192)
    obj = rod_phantom(grid)
    contrasts = [i.contrast_hu for i in obj.inserts]
    assert min(abs(c) for c in contrasts) <= 20 and max(contrasts) >= 250 and min(contrasts) < 0
    assert all(i.diameter_mm == 25 for i in obj.inserts)
    for a in obj.inserts:  # each edge sees only water out to twice the rod radius
        assert math.hypot(a.x_mm, a.y_mm) + 2 * a.radius_mm <= 100
        for b in obj.inserts:
            if a is not b:
                assert math.hypot(a.x_mm - b.x_mm, a.y_mm - b.y_mm) >= 4 * a.radius_mm
    assert pixel_of(grid, 0.0, 0.0) == (95.5, 95.5)


def test_lesions_sit_in_parenchyma_at_seeded_positions():
    grid = Grid(192, 400 / 192)
    background = patient_slices(0, 6, 1, grid, kind="abdomen")[0]
    obj = insert_lesions(background, grid, seed=3)
    assert np.array_equal(obj.absent, background)  # texture kept, lesions added to it
    for ins in obj.inserts:
        near = _dist(grid, ins) <= ins.radius_mm + 2.0
        assert 75 < obj.absent[near].mean() < 130  # liver / spleen, not fat, vessel or bone
        diff = obj.present.astype(np.float64) - obj.absent
        assert diff[near].sum() * grid.pixel_mm**2 / ins.contrast_hu == pytest.approx(math.pi * ins.radius_mm**2,
                                                                                         rel=0.01)
    again = insert_lesions(background, grid, seed=3)
    other = insert_lesions(background, grid, seed=4)
    assert again.inserts == obj.inserts and np.array_equal(again.present, obj.present)
    assert other.inserts != obj.inserts
    with pytest.raises(ValueError, match="no room"):  # a water disk has no liver
        insert_lesions(cct189(grid).absent, grid)


# --- realisations -------------------------------------------------------------------------------


def _window(grid: Grid, ins, extra_px: float = 3.0) -> np.ndarray:
    return _dist(grid, ins) < ins.radius_mm + extra_px * grid.pixel_mm


def test_present_minus_absent_is_localised_at_the_inserts(tiny):
    ts = task_set(tiny, "cct189", "100_720", n=1)
    grid = Grid(tiny.image_size, ts.pixel_mm)
    diff = ts.mean_present.astype(np.float64) - ts.mean_absent
    near = np.any([_window(grid, i) for i in ts.inserts], axis=0)
    assert np.abs(diff[~near]).max() <= HU_QUANTUM  # elsewhere only the rounding of the two images differs
    assert (diff[near] ** 2).sum() > 0.95 * (diff**2).sum()
    rows, cols = np.indices(diff.shape)
    for ins in ts.inserts:  # the blurred signal is centred on the recorded centre (y up, rows down)
        w = np.where(_window(grid, ins), np.clip(diff, 0, None), 0)
        assert w.sum() > 0
        assert (w * rows).sum() / w.sum() == pytest.approx(ins.row, abs=0.25)
        assert (w * cols).sum() / w.sum() == pytest.approx(ins.col, abs=0.25)


def test_signal_goes_through_the_physics(tiny):
    """The rods' edges in the noiseless reconstruction are blurred by detector, interpolation and the
    Hann filter: wider than the object's partial-volume edge (a signal pasted into the reconstruction
    would keep the object's edge)."""
    ts = task_set(tiny, "rods", "100_720", n=1)
    grid = Grid(tiny.image_size, ts.pixel_mm)
    obj = task_object(tiny, "rods")
    truth = downsample2(obj.present).astype(np.float64) - downsample2(obj.absent)
    recon = ts.mean_present.astype(np.float64) - ts.mean_absent
    for ins in ts.inserts:
        r = (_dist(grid, ins) - ins.radius_mm) / grid.pixel_mm  # signed distance to the edge, pixels
        widths = []
        for img in (truth, recon):
            e = img / ins.contrast_hu
            edge = (np.abs(r) < 5) & (e > 0.1) & (e < 0.9)
            widths.append(r[edge].max() - r[edge].min())
        assert widths[0] < 1.0 and widths[1] > widths[0] + 0.5, (ins.name, widths)


@pytest.mark.slow
def test_noiseless_contrast_of_the_10mm_insert_on_the_training_grid(cache_env):
    ds = open_dataset("synth", {"size": "small", "build_device": "cpu"})
    ts = task_set(ds, "cct189", "100_720", n=1)
    assert ts.present.shape == (1, 256, 256) and ts.pixel_mm == pytest.approx(400 / 256)
    grid = Grid(256, ts.pixel_mm)
    diff = ts.mean_present.astype(np.float64) - ts.mean_absent
    big, small = ts.inserts[3], ts.inserts[0]
    assert (big.diameter_mm, big.contrast_hu) == (10, 3)
    # the centre (r ≤ 2.5 mm) of the 10 mm insert keeps its 3 HU: the Hann PSF (≈ 2 px) does not reach
    # it; the mean of ~8 pixels on the 1/16 HU grid is good to ~0.03 HU
    assert diff[_dist(grid, big) <= big.radius_mm / 2].mean() == pytest.approx(3.0, abs=0.15)
    # the 3 mm / 14 HU rod is blurred below the object's own partial-volume peak
    truth = downsample2(task_object(ds, "cct189").present) - downsample2(task_object(ds, "cct189").absent)
    peak = diff[_window(grid, small)].max()
    assert peak < truth[_window(grid, small)].max() - 2 and peak > 3


def _noise(ts, cls: str) -> np.ndarray:
    imgs = ts.present if cls == "present" else ts.absent
    mean = ts.mean_present if cls == "present" else ts.mean_absent
    return imgs.astype(np.float64) - mean


def test_noise_is_independent_and_scales_with_dose(tiny):
    lo, hi = task_set(tiny, "cct189", "25_360", n=2), task_set(tiny, "cct189", "100_360", n=2)
    grid = Grid(tiny.image_size, lo.pixel_mm)
    x, y = grid.coords()
    roi = np.hypot(x, y) < 85  # water, away from the disk's edge
    n_pix = int(roi.sum())
    pairs = [(_noise(lo, "present")[0], _noise(lo, "present")[1]),  # two realisations of one class
             (_noise(lo, "present")[0], _noise(lo, "absent")[0]),  # same index, the other class
             (_noise(lo, "absent")[0], _noise(hi, "absent")[0])]  # same index, another condition
    for a, b in pairs:
        rho = np.corrcoef(a[roi], b[roi])[0, 1]
        assert abs(rho) < 4 / math.sqrt(n_pix), rho
    var = {name: np.mean([_noise(s, c)[i][roi].var() for c in ("present", "absent") for i in range(2)])
           for name, s in (("25", lo), ("100", hi))}
    assert 3.4 < var["25"] / var["100"] < 4.8  # ~1/dose (electronic noise adds a little at 25 %)
    assert math.sqrt(var["100"]) > 2  # noise well above the 1/16 HU grid


def test_deterministic_and_cached(tiny, monkeypatch, cache_env):
    first = task_set(tiny, "lesions", "50_180", n=3)
    folder = task_folder(tiny, "lesions", "50_180", 3)
    assert cache_env in folder.parents  # the isolated cache, not the user's
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["absent.npy", "mean_absent.npy", "mean_present.npy", "meta.json", "object_absent.npy",
                     "object_present.npy", "present.npy"]  # no pickle
    stamp = (folder / "meta.json").stat().st_mtime_ns
    blobs = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".npy"}

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache was not reused")

    with monkeypatch.context() as m:
        m.setattr(ts_mod, "project_hu", no_rebuild)
        again = task_set(tiny, "lesions", "50_180", n=3)
    assert (folder / "meta.json").stat().st_mtime_ns == stamp
    assert again.inserts == first.inserts and len(first.inserts) == 3
    assert all(0 <= i.row < 96 and 0 <= i.col < 96 for i in first.inserts)  # on the output grid
    # rebuilt from scratch: the same bytes
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    task_set(tiny, "lesions", "50_180", n=3)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".npy"} == blobs
    # a realisation depends only on its key: the set of 2 is the first 2 of the set of 3
    two = task_set(tiny, "lesions", "50_180", n=2)
    assert np.array_equal(two.present, first.present[:2]) and np.array_equal(two.absent, first.absent[:2])
    assert not np.array_equal(first.present[0], first.present[1])


def test_bad_names_and_defaults(tiny):
    assert REALISATIONS == 200
    with pytest.raises(UserError, match="cct189"):
        task_set(tiny, "cct198", "25_360")
    with pytest.raises(UserError, match="25_360"):
        task_set(tiny, "cct189", "25_361")
    with pytest.raises(UserError):
        task_set(tiny, "cct189", "25_360", n=0)
