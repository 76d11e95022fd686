"""DICOM loaders (mayo2016, dicom_pairs) on trees written with pydicom and on pydicom's real CT slices."""

from __future__ import annotations

import shutil
import uuid
import warnings
from pathlib import Path

import dicom_trees
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from benchmark.core.errors import UserError
from benchmark.data import open_dataset
from benchmark.data.dicom import index_series, read_header, read_hu

SIZE = 64
SPACING = 5.0  # mm: a 320 mm field of view on 64 pixels


def pydicom_file(name: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return Path(path)


def phantom_for(z_index: int) -> np.ndarray:
    """A water disc whose inner insert size encodes the slice index (so mis-pairing shows)."""
    c = (np.arange(SIZE) - (SIZE - 1) / 2) * SPACING
    x, y = np.meshgrid(c, -c)
    r = np.hypot(x, y)
    img = np.where(r < 140, 40.0, -1000.0)
    return np.where(r < 20 + 12 * z_index, 300.0, img).astype(np.float32)


def write_ct(path: Path, hu: np.ndarray, z: float, *, spacing: float = SPACING, **kw) -> None:
    """:func:`dicom_trees.write_ct` at this file's pixel spacing (12-bit unsigned, intercept −1024)."""
    dicom_trees.write_ct(path, hu, z, spacing=spacing, **kw)


def make_mayo_tree(root: Path, rng: np.random.Generator, patients=("L067", "L109", "L506"), n_slices: int = 5,
                   thickness: str = "1mm") -> dict[str, list[float]]:
    """Full and quarter series with shuffled random file names and instance numbers."""
    positions = {}
    for p in patients:
        z0 = float(rng.uniform(-300, -100))
        zs = [z0 + 1.0 * k for k in range(n_slices)]
        positions[p] = zs
        for series, sigma in ((f"full_{thickness}", 8.0), (f"quarter_{thickness}", 16.0)):
            order = rng.permutation(n_slices)
            for inst, k in enumerate(order):
                hu = phantom_for(k) + rng.normal(0, sigma, (SIZE, SIZE))
                name = f"{uuid.UUID(int=int(rng.integers(2**63)))}.IMA"
                write_ct(root / p / series / name, hu, zs[k], patient=p, series=series, instance=int(inst) + 1)
    return positions


@pytest.fixture
def mayo_root(tmp_path, rng):
    root = tmp_path / "mayo"
    make_mayo_tree(root, rng)
    return root


def test_mayo_pairs_by_position_not_file_order(mayo_root, tmp_cache):
    ds = open_dataset("mayo2016", {"root": str(mayo_root)})
    assert ds.conditions() == ["quarter"]
    assert ds.split_patients() == {"train": ["L067"], "val": ["L109"], "test": ["L506"]}
    for split, patient in (("train", "L067"), ("val", "L109"), ("test", "L506")):
        pairs = ds.load(split, "quarter")
        assert pairs.inputs.shape == (5, SIZE, SIZE) and set(pairs.patients) == {patient}
        zs = [float(s.split("/")[1]) for s in pairs.slice_ids]
        assert zs == sorted(zs) and len(set(pairs.slice_ids)) == 5
        for k in range(5):  # the insert radius encodes the slice: paired images must agree
            assert np.abs(pairs.inputs[k] - pairs.targets[k]).mean() < 25
            assert np.abs(pairs.targets[k] - phantom_for(k)).mean() < 10
        assert pairs.pixel_spacing_mm == pytest.approx(SPACING)
        # HU = stored · slope + intercept: air and water come back at their values
        assert np.median(pairs.targets[:, :3, :3]) == pytest.approx(-1000, abs=30)


def test_unpaired_slices_fail_unless_skipped(mayo_root, tmp_cache):
    victim = sorted((mayo_root / "L109" / "quarter_1mm").iterdir())[0]
    z = read_header(victim).z
    victim.unlink()
    ds = open_dataset("mayo2016", {"root": str(mayo_root)})
    unpaired = [h for pp in ds.index() for h in pp.unpaired]
    assert len(unpaired) == 1 and unpaired[0].z == pytest.approx(z)
    with pytest.raises(UserError, match="without a full/low-dose partner") as exc:
        ds.prepare(progress=False)
    assert "full_1mm" in str(exc.value) and "L109" in str(exc.value)
    ok = open_dataset("mayo2016", {"root": str(mayo_root), "skip_unpaired": True})
    assert len(ok.load("val", "quarter")) == 4


def test_corrupt_and_non_ct_files_are_named(mayo_root, tmp_cache):
    bad = mayo_root / "L067" / "full_1mm" / "broken.IMA"
    bad.write_bytes(b"this is not DICOM" * 10)
    ds = open_dataset("mayo2016", {"root": str(mayo_root)})
    with pytest.raises(UserError, match=r"broken\.IMA"):
        ds.prepare(progress=False)
    bad.unlink()
    shutil.copy(pydicom_file("MR_small.dcm"), mayo_root / "L067" / "full_1mm" / "mr.dcm")
    with pytest.raises(UserError, match=r"mr\.dcm.*modality is 'MR'"):
        open_dataset("mayo2016", {"root": str(mayo_root)}).prepare(progress=False)


def test_inconsistent_pixel_spacing_is_an_error(mayo_root, tmp_cache):
    folder = mayo_root / "L506" / "quarter_1mm"
    victim = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(victim)
    ds.PixelSpacing = [0.7, 0.7]
    ds.save_as(victim)
    with pytest.raises(UserError, match=r"pixel spacing .*differs") as exc:
        open_dataset("mayo2016", {"root": str(mayo_root)}).prepare(progress=False)
    assert victim.name in str(exc.value)
    # a whole series at another spacing than its reference: the pair check names the file
    for f in folder.iterdir():
        d = pydicom.dcmread(f)
        d.PixelSpacing = [0.7, 0.7]
        d.save_as(f)
    with pytest.raises(UserError, match=r"pixel spacing .*differs from its reference"):
        open_dataset("mayo2016", {"root": str(mayo_root)}).prepare(progress=False)


def test_root_and_patient_errors_name_the_option(tmp_path, mayo_root):
    with pytest.raises(UserError, match=r"dataset\.options\.root"):
        open_dataset("mayo2016", {})
    with pytest.raises(UserError, match=r"dataset\.options\.root.*does not exist"):
        open_dataset("mayo2016", {"root": str(tmp_path / "nope")})
    with pytest.raises(UserError, match=r"dataset\.options\.test_patients.*L999.*L067"):
        open_dataset("mayo2016", {"root": str(mayo_root), "test_patients": ["L999"]}).split_patients()
    with pytest.raises(UserError, match="full_3mm"):
        open_dataset("mayo2016", {"root": str(mayo_root), "thickness": "3mm"}).patients()


def test_duplicate_positions_are_an_error(tmp_path):
    folder = tmp_path / "series"
    for i in range(2):
        write_ct(folder / f"{i}.dcm", phantom_for(0), 10.0, patient="P", series="s", instance=i)
    with pytest.raises(UserError, match=r"two slices at z = 10\.00"):
        index_series(folder)


def test_real_ct_slices_from_pydicom_give_hu():
    for name in ("CT_small.dcm", "693_UNCR.dcm"):
        path = pydicom_file(name)
        ref = pydicom.dcmread(path)
        expected = ref.pixel_array.astype(np.float64) * float(ref.RescaleSlope) + float(ref.RescaleIntercept)
        hu = read_hu(path)
        assert hu.dtype == np.float32
        np.testing.assert_allclose(hu, np.maximum(expected, -1024), atol=1e-3)  # padding (−3024) → −1024
        np.testing.assert_allclose(read_hu(path, floor_hu=None), expected, atol=1e-3)
        header = read_header(path)
        assert header.z == pytest.approx(float(ref.ImagePositionPatient[2]))
        assert header.spacing == pytest.approx(tuple(float(v) for v in ref.PixelSpacing))
        assert hu.min() >= -1024 and -1024 <= np.percentile(hu, 50) < 3100 and hu.max() > 200


def test_dicom_pairs_on_real_slices(tmp_path, tmp_cache, rng):
    """Generic layout built from pydicom's real 512² CT slice: full-dose = the real pixels at three
    positions, two low-dose conditions = the same pixels plus noise."""
    src = pydicom.dcmread(pydicom_file("693_UNCR.dcm"))
    real = read_hu(pydicom_file("693_UNCR.dcm"))
    root = tmp_path / "pairs"
    for patient in ("A01", "A02", "A03"):
        for cond, sigma in (("full", 0.0), ("low10", 30.0), ("low25", 15.0)):
            for k in rng.permutation(3):
                ds = src.copy()
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.ImagePositionPatient = [*src.ImagePositionPatient[:2], 40.0 + 2.5 * int(k)]
                noisy = real + rng.normal(0, sigma, real.shape) if sigma else real
                stored = np.round((noisy - float(src.RescaleIntercept)) / float(src.RescaleSlope))
                ds.PixelData = np.clip(stored, 0, 4095).astype(src.pixel_array.dtype).tobytes()
                (root / patient / cond).mkdir(parents=True, exist_ok=True)
                ds.save_as(root / patient / cond / f"img{rng.integers(1e9)}", enforce_file_format=True)
    ds = open_dataset("dicom_pairs", {"root": str(root), "reference": "full"})
    assert ds.conditions() == ["low10", "low25"]
    assert ds.split_patients() == {"train": ["A01"], "val": ["A02"], "test": ["A03"]}
    for cond, sigma in (("low10", 30.0), ("low25", 15.0)):
        pairs = ds.load("test", cond)
        assert pairs.inputs.shape == (3, 512, 512)
        assert list(pairs.slice_ids) == ["A03/40.00", "A03/42.50", "A03/45.00"]
        np.testing.assert_allclose(pairs.targets[1], real, atol=1e-3)
        body = (real > -200) & (real < 300)
        assert np.std((pairs.inputs[0] - pairs.targets[0])[body]) == pytest.approx(sigma, rel=0.05)


def test_mayo_extra_doses_by_noise_insertion(mayo_root, tmp_cache):
    opts = {"root": str(mayo_root), "extra_doses": [10], "i0": 2e4}
    ds = open_dataset("mayo2016", opts)
    assert ds.conditions() == ["quarter", "sim10"]
    sim, quarter = ds.load("test", "sim10"), ds.load("test", "quarter")
    np.testing.assert_array_equal(sim.targets, quarter.targets)  # full dose is the target of both
    assert list(sim.slice_ids) == list(quarter.slice_ids)
    inserted = np.asarray(sim.inputs) - np.asarray(sim.targets)
    body = np.asarray(sim.targets) > -500
    assert 1.0 < inserted[body].std() < 500
    with pytest.raises(UserError, match=r"i0"):
        open_dataset("mayo2016", {"root": str(mayo_root), "extra_doses": [10]})
