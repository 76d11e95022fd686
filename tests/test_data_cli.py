"""``ldct-bench data build | inspect | preview | calibrate`` end to end."""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from test_data_dicom import make_mayo_tree
from typer.testing import CliRunner

from benchmark.cli_data import data_app, dataset_options
from benchmark.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
FAST = ["-O", "patients=3", "-O", "slices_per_patient=2"]


def run_cli(*args: str, env_cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LDCT_BENCH_CACHE": str(env_cache), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "benchmark.cli", "data", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def test_option_parsing():
    assert dataset_options("tiny", None, ["patients=3", "target=phantom", "i0=2.5e5"]) == {
        "size": "tiny", "patients": 3, "target": "phantom", "i0": 2.5e5}
    with pytest.raises(UserError, match="key=value"):
        dataset_options(None, None, ["patients"])


@pytest.mark.slow
def test_build_writes_preview_and_inspect_csv(tmp_path, tmp_cache):
    runner = CliRunner()
    png = tmp_path / "prev.png"
    res = runner.invoke(data_app, ["build", "--dataset", "synth", "--size", "tiny", *FAST, "--preview", str(png)])
    assert res.exit_code == 0, res.output
    assert f"preview: {png}" in res.output and "cache:" in res.output
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 300 and img[..., :3].std() > 0.1  # not blank
    res = runner.invoke(data_app, ["inspect", "--dataset", "synth", "--size", "tiny", *FAST, "--csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["condition"] for r in rows] == [f"{d}_{v}" for d in (10, 25, 50, 100) for v in (180, 360, 720)]
    noise = {r["condition"]: float(r["noise_hu"]) for r in rows}
    # electronic noise and the log of low counts only add variance at low dose: at least Poisson's sqrt(10)
    assert math.sqrt(10) <= noise["10_720"] / noise["100_720"] <= 1.3 * math.sqrt(10)
    # in the linear regime (many photons, no electronic noise) the noise std scales as 1/sqrt(dose)
    linear_opts = [*FAST, "-O", "i0=2e7", "-O", "electronic_noise_var=0"]
    assert runner.invoke(data_app, ["build", "--dataset", "synth", "--size", "tiny", *linear_opts]).exit_code == 0
    res = runner.invoke(data_app, ["inspect", "--dataset", "synth", "--size", "tiny", *linear_opts, "--csv"])
    assert res.exit_code == 0, res.output
    linear = {r["condition"]: float(r["noise_hu"]) for r in csv.DictReader(io.StringIO(res.stdout))}
    assert linear["10_720"] / linear["100_720"] == pytest.approx(math.sqrt(10), rel=0.08)
    assert linear["25_720"] / linear["100_720"] == pytest.approx(2.0, rel=0.08)
    res = runner.invoke(data_app, ["preview", "--dataset", "synth", "--size", "tiny", *FAST,
                                   "--out", str(tmp_path / "p2.png"), "--split", "train", "--window", "chest"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p2.png").stat().st_size > 10_000


@pytest.mark.slow
def test_inspect_lists_unpaired_and_exits_0(tmp_path, rng):
    root = tmp_path / "mayo"
    make_mayo_tree(root, rng, n_slices=3)
    victim = sorted((root / "L506" / "full_1mm").iterdir())[1]
    victim.unlink()
    res = run_cli("inspect", "--dataset", "mayo2016", "--root", str(root), "--csv", env_cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows[0]["condition"] == "quarter" and rows[0]["unpaired"] == "1" and rows[0]["slices"] == "2"
    assert "1 unpaired slice(s)" in res.stderr and "L506/quarter" in res.stderr
    assert float(rows[0]["noise_hu"]) == pytest.approx(math.hypot(8, 16), rel=0.2)


@pytest.mark.slow
def test_corrupt_file_exits_2_naming_it(tmp_path, rng):
    root = tmp_path / "mayo"
    make_mayo_tree(root, rng, n_slices=2)
    (root / "L067" / "quarter_1mm" / "zz_corrupt.IMA").write_bytes(b"\x00" * 50)
    res = run_cli("inspect", "--dataset", "mayo2016", "--root", str(root), env_cache=tmp_path / "c")
    assert res.returncode == 2
    assert "zz_corrupt.IMA" in res.stderr and "Traceback" not in res.stderr
    res = CliRunner().invoke(data_app, ["inspect", "--dataset", "mayo2016", "--root", str(tmp_path / "missing")])
    assert isinstance(res.exception, UserError) and "dataset.options.root" in str(res.exception)


def test_calibrate_prints_i0(tmp_path, rng, tmp_cache):
    root = tmp_path / "mayo"
    make_mayo_tree(root, rng, patients=("L067", "L109", "L200", "L506"), n_slices=4)
    res = CliRunner().invoke(data_app, ["calibrate", "--dataset", "mayo2016", "--root", str(root)])
    assert res.exit_code == 0, res.output
    line = next(s for s in res.output.splitlines() if s.startswith("I0 = "))
    i0 = float(line.split()[2])
    assert np.isfinite(i0) and i0 > 0
    res = CliRunner().invoke(data_app, ["calibrate", "--dataset", "mayo2016", "--root", str(root), "--dose", "1.5"])
    assert isinstance(res.exception, UserError) and "--dose" in str(res.exception)


@pytest.mark.slow
def test_inspect_a_tree_without_the_default_test_patient(tmp_path, rng):
    """A user's first two Mayo patients (no L506): `inspect` lists both with their pairs, names the
    slice without a partner, warns that the split cannot be made and still measures the noise."""
    root = tmp_path / "mayo"
    make_mayo_tree(root, rng, patients=("L067", "L096"), n_slices=3)
    victim = sorted((root / "L096" / "full_1mm").iterdir())[0]
    victim.unlink()
    res = run_cli("inspect", "--dataset", "mayo2016", "--root", str(root), env_cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(line.split()[:4] == ["L067", "quarter", "3", "0"] for line in lines), res.stdout
    assert any(line.split()[:4] == ["L096", "quarter", "2", "1"] for line in lines), res.stdout
    assert "1 unpaired slice(s)" in res.stdout and "L096/quarter" in res.stdout
    assert "warning:" in res.stderr and "L506 not found" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("inspect", "--dataset", "mayo2016", "--root", str(root), "--csv", env_cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows[0]["condition"] == "quarter" and rows[0]["split"] == "all" and rows[0]["slices"] == "5"
    assert rows[0]["patients"] == "2" and rows[0]["unpaired"] == "1"
    assert float(rows[0]["noise_hu"]) == pytest.approx(math.hypot(8, 16), rel=0.2)
