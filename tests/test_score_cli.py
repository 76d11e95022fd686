"""``ldct-bench score``: .npy and DICOM input, folder pairing, windows (also ``--window -160,240``),
CSV output, and the user errors (unknown metric, missing --ref, unpaired files, unavailable metric)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import typer
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from analysis.cli import read_hu, score
from analysis.metrics import MetricUnavailable, compute_metrics
from benchmark.core.errors import UnknownNameError, UserError


@pytest.fixture
def app() -> typer.Typer:
    """The command mounted the way benchmark.cli mounts it."""
    a = typer.Typer()
    a.command("score")(score)
    a.command("noop")(lambda: None)  # a second command keeps typer from collapsing to a single command
    return a


def run(app: typer.Typer, args: list[str]) -> tuple[list[dict], object]:
    res = CliRunner().invoke(app, ["score", *args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return [], res.exception
    assert res.exit_code == 0, res.output
    return list(csv.DictReader(io.StringIO(res.stdout))), None


@pytest.fixture
def folders(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    data = {}
    for name in ["b_slice", "a_slice"]:
        ref = rng.normal(40.0, 100.0, (64, 64)).astype(np.float32)
        pred = ref + rng.normal(0.0, 20.0, ref.shape).astype(np.float32)
        np.save(pred_dir / f"{name}.npy", pred)
        np.save(ref_dir / f"{name}.npy", ref)
        data[name] = (pred, ref)
    return pred_dir, ref_dir, data


def test_folders_pair_by_name_and_match_compute_metrics(app: typer.Typer, folders) -> None:
    pred_dir, ref_dir, data = folders
    rows, err = run(app, [str(pred_dir), "--ref", str(ref_dir), "--metrics", "psnr,ssim,rmse_hu"])
    assert err is None
    assert [r["image"] for r in rows] == ["a_slice"] * 3 + ["b_slice"] * 3
    assert [r["metric"] for r in rows[:3]] == ["psnr", "ssim", "rmse_hu"]
    for name, (pred, ref) in data.items():
        want = compute_metrics(["psnr", "ssim", "rmse_hu"], pred[None], ref[None])
        for r in rows:
            if r["image"] == name:
                assert float(r["value"]) == pytest.approx(want[r["metric"]][0], rel=1e-9)


@pytest.mark.parametrize("form", [["--window", "-160,240"], ["--window=-160,240"], ["-w", "-160,240"], []])
def test_window_with_leading_minus_is_accepted(app: typer.Typer, folders, form: list[str]) -> None:
    pred_dir, ref_dir, _ = folders
    rows, err = run(app, [str(pred_dir), "--ref", str(ref_dir), "--metrics", "psnr", *form])
    assert err is None
    default, _ = run(app, [str(pred_dir), "--ref", str(ref_dir), "--metrics", "psnr", "--window", "abdomen"])
    assert [r["value"] for r in rows] == [r["value"] for r in default]
    other, _ = run(app, [str(pred_dir), "--ref", str(ref_dir), "--metrics", "psnr", "--window=-1000,1000"])
    assert [r["value"] for r in other] != [r["value"] for r in default]


def test_user_errors(app: typer.Typer, folders, tmp_cache: Path) -> None:
    pred_dir, ref_dir, _ = folders
    _, err = run(app, [str(pred_dir), "--ref", str(ref_dir), "--metrics", "ssimm"])
    assert isinstance(err, UnknownNameError) and "Did you mean 'ssim'" in str(err)
    _, err = run(app, [str(pred_dir), "--metrics", "psnr,niqe"])
    assert isinstance(err, UserError) and err.field == "ref" and "psnr" in str(err)
    (ref_dir / "a_slice.npy").rename(ref_dir / "c_slice.npy")
    _, err = run(app, [str(pred_dir), "--ref", str(ref_dir), "--metrics", "psnr"])
    assert isinstance(err, UserError) and "without a reference: a_slice" in str(err) and "c_slice" in str(err)
    _, err = run(app, [str(pred_dir), "--ref", str(ref_dir), "--metrics", "lpips"])
    assert isinstance(err, MetricUnavailable) and "ldct-bench weights fetch alexnet" in str(err)
    _, err = run(app, [str(pred_dir / "nope.npy"), "--metrics", "pique"])
    assert isinstance(err, UserError) and "no such file" in str(err)
    _, err = run(app, [str(pred_dir), "--ref", str(ref_dir), "--metrics", "psnr", "--window", "wide"])
    assert isinstance(err, UserError) and err.field == "window"


def test_dicom_is_read_in_hu(tmp_path: Path, app: typer.Typer, rng: np.random.Generator) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    stored = ds.pixel_array
    want = stored.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(read_hu(Path(get_testdata_file("CT_small.dcm")))[0], np.maximum(want, -1024))
    # A second file with slope 2 and another intercept: same stored values, different HU.
    ds.RescaleSlope, ds.RescaleIntercept = 2, -2048
    path = tmp_path / "scaled.dcm"
    ds.save_as(path)
    hu = read_hu(path)[0]
    np.testing.assert_array_equal(hu, np.maximum(stored.astype(np.float64) * 2 - 2048, -1024))  # the HU floor
    # DICOM prediction against a .npy reference of the same HU: zero error.
    np.save(tmp_path / "ref.npy", hu)
    rows, err = run(app, [str(path), "--ref", str(tmp_path / "ref.npy"), "--metrics", "rmse_hu,psnr"])
    assert err is None and rows[0]["image"] == "scaled"
    assert float(rows[0]["value"]) == 0.0 and float(rows[1]["value"]) == pytest.approx(80.0)


def test_no_reference_metrics_and_stacks(tmp_path: Path, app: typer.Typer, rng: np.random.Generator) -> None:
    stack = rng.normal(40.0, 100.0, (2, 192, 192)).astype(np.float32)
    np.save(tmp_path / "vol.npy", stack)
    out = tmp_path / "scores.csv"
    res = CliRunner().invoke(app, ["score", str(tmp_path / "vol.npy"), "-m", "niqe,pique", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [(r["image"], r["metric"]) for r in rows] == [
        ("vol[0]", "niqe"), ("vol[0]", "pique"), ("vol[1]", "niqe"), ("vol[1]", "pique"),
    ]
    want = compute_metrics(["niqe", "pique"], stack, None)
    assert float(rows[2]["value"]) == pytest.approx(want["niqe"][1], rel=1e-9)


def test_score_and_a_matrix_run_agree_on_rmse_hu_of_padded_dicom(tmp_path: Path, app: typer.Typer, tmp_cache,
                                                                   rng: np.random.Generator) -> None:
    """The same DICOM files give the same ``rmse_hu`` through ``ldct-bench score`` and through a matrix
    run's dataset (one HU conversion): noisy air below −1024 HU and −2048 padding outside the field of
    view are floored to −1024 on both paths. Without the floor the value would differ (checked)."""
    from test_data_dicom import SIZE, phantom_for, write_ct

    from benchmark.core.dicom import read_hu as read_dicom_hu
    from benchmark.data import open_dataset

    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    outside = np.hypot(xx, yy) > SIZE / 2  # the corners outside the reconstruction circle
    root = tmp_path / "pairs"
    for patient in ("A01", "A02", "A03"):
        for cond, sigma in (("full", 10.0), ("low", 40.0)):
            hu = phantom_for(1) + rng.normal(0, sigma, (SIZE, SIZE))  # air at −1000 ± noise: partly below −1024
            hu[outside] = -2048
            write_ct(root / patient / cond / "0.dcm", hu, 0.0, patient=patient, series=cond, instance=1,
                     intercept=-2048)
    ds = open_dataset("dicom_pairs", {"root": str(root), "test_patients": ["A03"], "val_patients": ["A02"]})
    pairs = ds.load("test", "low")
    matrix_run = compute_metrics(["rmse_hu"], pairs.inputs, pairs.targets)["rmse_hu"][0]
    low, full = root / "A03" / "low" / "0.dcm", root / "A03" / "full" / "0.dcm"
    rows, err = run(app, [str(low), "--ref", str(full), "--metrics", "rmse_hu"])
    assert err is None
    assert float(rows[0]["value"]) == pytest.approx(matrix_run, rel=1e-6)
    assert read_hu(low).min() == -1024.0 and pairs.inputs.min() == -1024.0
    raw = np.sqrt(np.mean((read_dicom_hu(low, floor_hu=None) - read_dicom_hu(full, floor_hu=None)) ** 2))
    assert abs(raw - matrix_run) > 0.5  # the floor matters on these files
