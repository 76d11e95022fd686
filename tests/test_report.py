"""End to end on a tiny real run folder: ``ldct-bench analyze`` then ``ldct-bench report`` through the real
command line, every promised file, working links in report.md, the stated conventions, the LDCT-input
reference row, a rerun that scores nothing, and bad options that exit with code 2 naming the option."""

from __future__ import annotations

import json
import re
import sys

import pandas as pd
import pytest
from test_trajectories import make_run  # a finished run folder written as the runner does
from typer.testing import CliRunner

from analysis.correlations import CORRELATION_COLUMNS
from analysis.pipeline import StatsOptions
from analysis.report import _training_environments, small_n_warning
from analysis.significance import SIGNIFICANCE_COLUMNS
from benchmark import cli
from benchmark.core.errors import UserError
from benchmark.core.precision import ENVIRONMENT
from benchmark.layout import CORRELATIONS, INPUT_BASELINE, REPORT, SIGNIFICANCE, RunLayout


@pytest.mark.slow
def test_analyze_then_report_end_to_end(tmp_path, tmp_cache, monkeypatch):
    layout = make_run(tmp_path / "run", monkeypatch, losses=("mse", "l1", "charbonnier"), doses=("25_360", "10_180"),
                      metrics=("psnr", "ssim", "rmse_hu", "pique", "lpips"))  # fmt: skip
    out = layout.out
    runner = CliRunner()
    res = runner.invoke(cli.app, ["analyze", "--out", str(out), "--quiet", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    assert "scored 18 of 18 checkpoints" in res.output
    adir = layout.analysis_dir
    corr = pd.read_csv(layout.analysis_file(CORRELATIONS))
    sig = pd.read_csv(layout.analysis_file(SIGNIFICANCE), dtype={"dose": str})
    assert list(corr.columns) == CORRELATION_COLUMNS and set(corr["scope"]) == {"cell", "pooled", "final"}
    assert list(sig.columns) == SIGNIFICANCE_COLUMNS
    assert set(sig["test"]) == {"wilcoxon", "t", "friedman", "nemenyi"} and set(sig["unit"]) == {"patient"}
    assert list(dict.fromkeys(sig["dose"])) == ["25_360", "10_180"]  # matrix order, not alphabetical
    base = pd.read_parquet(layout.analysis_file(INPUT_BASELINE))
    assert set(base["dose"]) == {"25_360", "10_180"} and set(base["metric"]) == {"psnr", "ssim", "rmse_hu", "pique"}
    assert "LDCT input" not in set(sig["loss_a"]) | set(sig["loss_b"]) | set(corr["loss"])  # trained losses only

    res = runner.invoke(cli.app, ["report", "--out", str(out), "--quiet", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    report = layout.analysis_file(REPORT).read_text()
    for link in re.findall(r"\]\(([^)]+)\)", report):  # every link and image resolves
        assert (adir / link).is_file(), link
    figures = {p.stem for p in layout.figures_dir.glob("*.png")}
    assert {"training_loss", "trajectories_full_reference", "trajectories_no_reference", "correlation_heatmap",
            "perception_distortion", "comparison_dncnn_25_360", "comparison_dncnn_10_180", "cd_psnr"} <= figures  # fmt: skip
    assert all((layout.figures_dir / f"{s}.pdf").is_file() for s in figures)
    tables = {p.name for p in layout.tables_dir.iterdir()}
    assert {"metric_psnr.md", "metric_psnr.tex", "metric_psnr.csv", "rmse_hu_per_dose.tex",
            "correlation_spearman.md"} <= tables  # fmt: skip
    for text in ("[-160, 240] HU", "Gaussian 11×11", "per-patient means", "Holm", "Benjamini–Hochberg",
                 "rank-biserial", "lpips", "weights fetch", "Caution"):  # fmt: skip
        assert text in report, text
    assert "![training_loss](figures/training_loss.png)" in report
    assert "**LDCT input**: the last row" in report  # the convention is stated
    rmse = pd.read_csv(layout.tables_dir / "rmse_hu_per_dose.csv", dtype={"dose": str})
    ldct = rmse[rmse["loss"] == "LDCT input"].set_index("dose")["mean"]
    expected = base[base["metric"] == "rmse_hu"].groupby("dose")["value"].mean()
    assert len(ldct) == 2 and ldct.round(6).to_dict() == expected.round(6).to_dict()
    assert set(rmse.loc[rmse["loss"] == "LDCT input", "architecture"]) == {"—"} and not rmse["mean"].isna().any()

    res = runner.invoke(cli.app, ["analyze", "--out", str(out), "--quiet", "--bootstrap", "0"])
    assert res.exit_code == 0 and "scored 0 of 18 checkpoints (0 metric evaluations)" in res.output


@pytest.mark.parametrize(
    ("args", "field"),
    [(["--unit", "image"], "--unit"), (["--epoch", "best"], "--epoch"), (["--family", "pairs"], "--family"),
     (["--every", "0"], "--every"), (["--metrics", " , "], "--metrics")],
)  # fmt: skip
def test_bad_options_exit_2_naming_the_option(tmp_path, monkeypatch, capsys, args, field):
    layout = make_run(tmp_path / "run", monkeypatch, losses=("mse",), epochs=1)
    monkeypatch.setattr(sys, "argv", ["ldct-bench", "analyze", "--out", str(layout.out), "--quiet", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and "Traceback" not in err


def test_report_without_a_run_is_a_user_error(tmp_path):
    res = CliRunner().invoke(cli.app, ["report", "--out", str(tmp_path), "--skip-analyze"])
    assert isinstance(res.exception, UserError) and "analyze" in str(res.exception)
    with pytest.raises(UserError, match="allowed are patient, slice"):
        StatsOptions(unit="image").check()


def test_small_n_warning():
    sig = pd.DataFrame({"test": ["wilcoxon", "t"], "n": [4, 4]})
    assert "n = 4" in small_n_warning(sig) and "0.125" in small_n_warning(sig)
    assert small_n_warning(sig.assign(n=[8, 8])) == ""


def test_report_says_on_which_machines_the_cells_trained(tmp_path):
    """Native kernels round differently on another processor, so the report lists each training environment
    of the cells' ``environment.json`` (a cell resumed elsewhere counts for both), the cells it trained, and
    the cells that recorded none; an unreadable file counts as none and runs nothing."""
    layout = RunLayout(tmp_path, must_exist=False)
    amd = {"device": "cpu", "device_name": "cpu AMD EPYC (AuthenticAMD family 26 model 2)", "cpu_capability": "AVX512",
           "kernels": "native", "threads": 1}  # fmt: skip
    intel = {**amd, "device_name": "cpu Intel(R) Xeon(R) (GenuineIntel family 6 model 143)"}
    gpu = {"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3"}
    cells = {"a": [{"from_epoch": 1, **amd}], "b": [{"from_epoch": 1, **amd}, {"from_epoch": 3, **intel}],
             "c": [{"from_epoch": 1, **gpu}], "d": None, "e": "not json ["}  # fmt: skip
    for cell, entries in cells.items():
        layout.cell_dir(cell).mkdir(parents=True)
        if entries is not None:
            text = entries if isinstance(entries, str) else json.dumps(entries)
            (layout.cell_dir(cell) / ENVIRONMENT).write_text(text)
    text = _training_environments(layout, list(cells))
    assert text == (" Trained on `cpu AMD EPYC (AuthenticAMD family 26 model 2)` (AVX512, native kernels, 1 thread(s)): "
                    "2 cell(s); `NVIDIA H100 80GB HBM3`: 1 cell(s); `cpu Intel(R) Xeon(R) (GenuineIntel family 6 model 143)` "
                    "(AVX512, native kernels, 1 thread(s)): 1 cell(s). 2 cell(s) recorded no environment.")  # fmt: skip
    assert _training_environments(layout, ["d"]) == ""
