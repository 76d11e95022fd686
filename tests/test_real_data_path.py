"""The real-data path end to end (issue #19, item 6): a DICOM tree in the layout of the AAPM Low-Dose CT
Grand Challenge 2016 (Mayo) is written from the simulator, then ``data inspect`` → a one-cell ``run`` →
``analyze`` → ``report`` run on it, and ``data calibrate`` finds the simulator's photon count again.

The tree is what the real download looks like: ``<root>/<patient>/{full,quarter}_1mm/`` with the
challenge's file names (``L067_FD_1_1.CT.0001.0001.<date>.<uid>.IMA``), signed 16-bit pixels with a
rescale slope and intercept, and −2048 HU padding outside the reconstruction circle. Full dose is the
simulator's 100 % / 720-view condition and quarter dose its 25 % / 720-view one, drawn from independent
noise with I0 = 2e5 photons per ray per view: the photon count calibration must recover."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dicom_trees import write_ct

from benchmark.core.dicom import HU_FLOOR, read_hu
from benchmark.data import open_dataset

# one xdist worker runs this module: its module-scoped fixtures are built once (--dist loadgroup)
pytestmark = pytest.mark.xdist_group(__name__)

PATIENTS = {"train": ["L067", "L096"], "val": ["L109"], "test": ["L506"]}  # L506: the challenge's test patient
SLOPE, INTERCEPT = 0.5, -1024.0  # stored = (HU - intercept) / slope, int16
PADDING_HU = -2048.0
SLICE_MM = 3.0


def write_mayo_slice(path: Path, hu: np.ndarray, z: float, *, patient: str, series: str, instance: int,
                     spacing: float) -> None:  # fmt: skip
    """One slice as a Siemens scanner of the challenge writes it: CT image storage, signed 16-bit pixels,
    RescaleSlope/Intercept, ImagePositionPatient and SliceLocation."""
    write_ct(path, hu, z, patient=patient, series=series, instance=instance, spacing=spacing, intercept=INTERCEPT,
             slope=SLOPE, signed=True, kvp=100)  # fmt: skip


@pytest.fixture(scope="module")
def mayo_tree(tmp_path_factory) -> tuple[Path, float]:
    """The simulated Mayo tree (4 patients × 4 slices of 96²) and the simulator's I0."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LDCT_BENCH_CACHE", str(tmp_path_factory.mktemp("sim-cache")))
    try:
        sim = open_dataset("synth", {"size": "tiny", "patients": 4, "slices_per_patient": 4, "val_patients": 1,
                                     "test_patients": 1})  # fmt: skip
        root = tmp_path_factory.mktemp("mayo") / "LDCT-Grand-Challenge"
        n, k = sim.image_size, sim.n_slices
        c = np.arange(n) - (n - 1) / 2
        outside = np.hypot(*np.meshgrid(c, c)) > n / 2  # the corners outside the reconstruction circle
        for split, names in PATIENTS.items():
            full, quarter = sim.load(split, "100_720").inputs, sim.load(split, "25_720").inputs
            assert len(full) == k * len(names)
            for j, name in enumerate(names):
                for s in range(k):
                    z = -150.0 + SLICE_MM * s
                    stamp = f"2016.01.01.12.00.{s:02d}.000000.{358074219 + s}"
                    for tag, series, images in (("FD", "full_1mm", full), ("QD", "quarter_1mm", quarter)):
                        hu = np.where(outside, PADDING_HU, np.asarray(images[j * k + s]))
                        write_mayo_slice(root / name / series / f"{name}_{tag}_1_1.CT.0001.{s + 1:04d}.{stamp}.IMA",
                                         hu, z, patient=name, series=series, instance=s + 1, spacing=sim.pixel_mm)  # fmt: skip
        return root, sim.i0
    finally:
        mp.undo()


def test_the_tree_reads_back_in_hu_with_the_padding_floored(mayo_tree):
    root, _ = mayo_tree
    path = sorted((root / "L067" / "full_1mm").iterdir())[0]
    raw = read_hu(path, floor_hu=None)
    assert raw[0, 0] == PADDING_HU and raw.dtype == np.float32
    assert read_hu(path)[0, 0] == HU_FLOOR
    assert 0 < raw[48, 48] < 200  # soft tissue in the middle, after slope and intercept


def _data(*args: str) -> str:
    """``ldct-bench data ARGS`` in this process; returns stdout and stderr (exit 0 asserted)."""
    from typer.testing import CliRunner

    from benchmark.cli import app

    res = CliRunner().invoke(app, ["data", *args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_inspect_run_analyze_report_and_calibrate_on_a_mayo_tree(mayo_tree, tmp_path, tmp_cache, cli_main):
    root, i0 = mayo_tree
    inspect = _data("inspect", "--dataset", "mayo2016", "--root", str(root), "--csv")
    rows = {line.split(",")[0]: line.split(",") for line in inspect.splitlines() if line.startswith("quarter,")}
    assert rows["quarter"][2:5] == ["test", "4", "1"] and rows["quarter"][5] == "0"  # L506's 4 pairs, none unpaired
    for patient in ("L067", "L096", "L109", "L506"):
        assert f"{patient:<8} quarter        4         0" in inspect
    matrix = tmp_path / "mayo.yaml"
    matrix.write_text(yaml.safe_dump({
        "dataset": {"kind": "mayo2016", "options": {"root": str(root)}},
        "losses": ["mse"],
        "architectures": [{"name": "dncnn", "kwargs": {"depth": 3, "channels": 8}}],
        "doses": ["quarter"],
        "training": {"epochs": 1, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
        "evaluation": {"metrics": ["psnr", "ssim", "rmse_hu"]},
        "device": "cpu",
    }))
    run_dir = tmp_path / "run"
    for args in (("validate", "--matrix", str(matrix)), ("run", "--matrix", str(matrix), "--out", str(run_dir), "--quiet"),
                 ("analyze", "--out", str(run_dir)), ("report", "--out", str(run_dir))):  # fmt: skip
        code, err = cli_main(*args)
        assert code == 0, (args[0], err)
    assert (run_dir / "cells" / "mse__dncnn__quarter__s0" / "DONE").is_file()
    traj = pd.read_parquet(run_dir / "analysis" / "trajectories.parquet")
    rmse = traj[(traj["metric"] == "rmse_hu") & (traj["source"] == "metric")]
    assert set(rmse["patient"]) == {"L506"} and len(rmse) == 4  # the test patient's 4 slices
    assert "mse" in (run_dir / "analysis" / "report.md").read_text()
    calibration = _data("calibrate", "--dataset", "mayo2016", "--root", str(root), "--device", "cpu")
    found = float(calibration.split("I0 = ", 1)[1].split()[0])
    assert found == pytest.approx(i0, rel=0.10), calibration
