"""CI checks the committed report in results/small in two cheap, exact parts: every table rebuilds from the
committed per-image values (:func:`test_committed_tables_rebuild_from_the_committed_values`), and the first
epoch of one of its eight cells, retrained through the command line with the matrix's portable kernels, gives
those per-image values again (:func:`test_one_committed_cell_retrains_to_the_same_values`). The whole rerun of README
command 1 against results/small within the seed-to-seed spread
(:func:`test_committed_small_report_reproduces`, 7 minutes) and the CPU mini-studies (results/<study>,
10-30 minutes each) run under the ``study`` marker, which the default run deselects:
``python -m pytest -m study tests/test_results.py``."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import ReportOptions, write_report
from analysis.tables import INPUT_LABEL
from benchmark.config import dump_yaml, load_matrix
from benchmark.layout import CORRELATIONS, FIGURES, RANKS, REPORT, SIGNIFICANCE, TABLES, RunLayout

pytestmark = pytest.mark.slow

RESULTS = Path(__file__).resolve().parents[1] / "results" / "small"
STUDIES = sorted(p.name for p in RESULTS.parent.iterdir() if p.is_dir() and p.name != "small")


def _same_tables(committed_dir: Path, new_dir: Path, *, rtol: float = 1e-4, atol: float = 1e-9,
                 also: tuple[str, ...] = ()) -> None:
    """Every committed table, the correlations, the significance tests and the files ``also`` equal the new
    run's to ``rtol``/``atol`` (the default: the checkpoints are bit-identical on the same machine kind and
    library versions; the tolerance only absorbs float summation order in BLAS on a different CPU)."""
    committed = sorted((committed_dir / TABLES).glob("*.csv"))
    assert committed, f"no committed tables under {committed_dir}: run `bash results/regenerate.sh`"
    assert sorted(p.name for p in (new_dir / TABLES).glob("*.csv")) == [p.name for p in committed]
    for path in [*committed, *(committed_dir / name for name in (CORRELATIONS, SIGNIFICANCE, *also))]:
        old = pd.read_csv(path)
        new = pd.read_csv(new_dir / path.relative_to(committed_dir))
        pd.testing.assert_frame_equal(old, new, check_exact=False, rtol=rtol, atol=atol, obj=path.name)


SPREAD = RESULTS / "seed_spread.csv"
KEYS = ["metric", "loss", "architecture", "dose"]


def _within_seed_spread(committed_dir: Path, new_dir: Path, spread: pd.DataFrame) -> list[str]:
    """Rows of the metric tables whose mean moved by more than the cell's seed-to-seed sd (trained cells),
    or at all beyond float noise (the LDCT-input rows, which no training touches)."""
    sd = spread.set_index(KEYS)["sd"]
    problems = []
    for path in sorted((committed_dir / TABLES).glob("*.csv")):
        old = pd.read_csv(path, dtype={"dose": str})
        if not set([*KEYS, "mean"]) <= set(old.columns):
            continue  # correlation tables: checked through their claims, not here (3 epochs per cell)
        new = pd.read_csv(new_dir / TABLES / path.name, dtype={"dose": str})
        both = old.merge(new, on=KEYS, suffixes=("_old", "_new"), how="outer", indicator=True)
        assert (both["_merge"] == "both").all(), f"{path.name}: rows differ"
        for r in both.itertuples():
            key = (r.metric, r.loss, r.architecture, r.dose)
            tol = 1e-6 * abs(r.mean_old) if r.loss == INPUT_LABEL else float(sd.get(key, float("nan")))
            assert tol == tol, f"{path.name}: no seed spread for {key} in {SPREAD.name}"
            if abs(r.mean_new - r.mean_old) > tol:
                problems.append(f"{path.name} {key}: {r.mean_old:.6g} -> {r.mean_new:.6g} (tolerance {tol:.3g})")
    return problems


def test_committed_tables_rebuild_from_the_committed_values(tmp_path):
    """results/small's tables, correlations, patient-level tests and Friedman ranks are what `report` makes of
    its committed per-image values (trajectories.parquet, input_baseline.parquet, settings.json and the
    resolved matrix, copied into an empty run folder; `report` without `analyze`, so the statistics are
    recomputed): every CSV equal to rtol 1e-9 (measured: equal), the same set of tables."""
    out = tmp_path / "run"
    analysis = RunLayout(out, must_exist=False).analysis_dir
    analysis.mkdir(parents=True)
    for name in ("trajectories.parquet", "input_baseline.parquet", "ndct_noise_baseline.parquet", "settings.json"):
        shutil.copy(RESULTS / name, analysis / name)
    shutil.copy(RESULTS / "matrix.resolved.yaml", out / "matrix.resolved.yaml")
    write_report(out, opts=ReportOptions(skip_analyze=True))
    _same_tables(RESULTS, analysis, rtol=1e-9, atol=1e-12, also=(RANKS,))


ONE_CELL = ("mse", "dncnn-d8c32", "25_360")  # the cheapest of the eight cells
ONE_EPOCH = 1  # of the matrix's 3: the same data, seeds, kernels and learning-rate schedule


@pytest.mark.heavy
def test_one_committed_cell_retrains_to_the_same_values(tmp_path):
    """One cell of results/small (mse · dncnn-d8c32 · 25_360, seed 0), retrained through the command line as
    README command 1 does (a child process: the matrix's portable kernels and 2 threads are pinned before
    torch loads) from small.yaml narrowed to that cell, stopped with Ctrl-C once its first epoch is logged
    (of 3; the schedule is the full matrix's), and scored with ``analyze --partial``: every per-image value of
    every metric and loss at that epoch equals results/small/trajectories.parquet to rtol 1e-6, and nothing is
    missing. The portable pins make this hold on processors of other makers too: before
    :mod:`benchmark.core.portable_ops` it failed on an AMD Zen 5 against bytes an earlier AVX-512 host had
    written (training loss 6e-6 apart after this epoch); the same epoch under an emulated Intel Haswell now
    writes the Zen 5's checkpoint bytes (README, "What CI checks against results/small"). The dataset, the
    cell's seed and its configuration are those of the full matrix; the cell id is the same. One epoch runs
    every kernel the other two do; the whole matrix is rerun under the ``study`` marker
    (:func:`test_committed_small_report_reproduces`)."""
    loss, arch, dose = ONE_CELL
    spec = load_matrix("small.yaml").model_dump(mode="json")
    assert spec["training"]["epochs"] > ONE_EPOCH
    spec.update(losses=[x for x in spec["losses"] if x["label"] == loss],
                architectures=[a for a in spec["architectures"] if a["label"] == arch], doses=[dose])  # fmt: skip
    matrix = tmp_path / "one.yaml"
    matrix.write_text(dump_yaml(spec))
    out = tmp_path / "run"
    cell = f"{loss}__{arch}__{dose}__s0"
    logged = f"{cell}: epoch {ONE_EPOCH}/"
    # `python -m benchmark run ...`, with Ctrl-C armed: a shell's background job (`cmd &`, CI runners, nohup)
    # starts with SIGINT ignored, which children inherit, and Python then installs no KeyboardInterrupt.
    ctrl_c = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "sys.argv[0] = 'ldct-bench'; runpy.run_module('benchmark', run_name='__main__', alter_sys=True)")
    with subprocess.Popen([sys.executable, "-c", ctrl_c, "run", "--matrix", str(matrix), "--out", str(out), "--quiet"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:  # fmt: skip
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # the epoch's line comes after its checkpoint and history are written
            lines.append(line)
            if line.startswith(logged):
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[0]
    assert any(x.startswith(logged) for x in lines), "".join(lines)[-3000:] + rest[-3000:]
    assert proc.returncode == 128 + signal.SIGINT and "interrupted" in rest, f"not stopped by Ctrl-C: {rest[-3000:]}"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "analyze", "--partial", "--out", str(out), "--quiet"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    key = ["epoch", "patient", "image", "metric", "source"]
    old = pd.read_parquet(RESULTS / "trajectories.parquet")
    old = old[(old["cell"] == cell) & (old["epoch"] <= ONE_EPOCH)]
    new = pd.read_parquet(RunLayout(out).analysis_dir / "trajectories.parquet")
    assert len(old) > 40 and set(new["cell"]) == {cell} and set(new["epoch"]) == {ONE_EPOCH}
    both = old.merge(new, on=key, suffixes=("_old", "_new"), how="outer", indicator=True)
    assert (both["_merge"] == "both").all(), both.loc[both["_merge"] != "both", key]
    pd.testing.assert_series_equal(both["value_old"], both["value_new"], check_exact=False, rtol=1e-6,
                                   check_names=False)  # fmt: skip


@pytest.mark.study
def test_committed_small_report_reproduces(small_run):
    """README command 1's tables equal results/small within the seed-to-seed spread, and say the same.

    The small matrix runs with portable CPU kernels, so on any x86-64 host its numbers are expected to be
    the same bytes (tests/test_portable.py shows that for two emulated instruction sets). This check does
    not rely on it: a table mean may move by at most the sd over three seeds of that cell and metric
    (results/small/seed_spread.csv, measured by `bash results/regenerate.sh small`), the LDCT-input rows by
    float noise only, and the qualitative content must hold: every cell beats the input on RMSE, and where
    a patient-level test calls a difference between two losses (Holm p < 0.05, in either run) both runs
    order them the same way."""
    new_dir = RunLayout(small_run).analysis_dir
    committed = sorted(p.name for p in (RESULTS / TABLES).glob("*.csv"))
    assert committed, f"no committed tables under {RESULTS}: run `bash results/regenerate.sh`"
    assert sorted(p.name for p in (new_dir / TABLES).glob("*.csv")) == committed
    spread = pd.read_csv(SPREAD, dtype={"dose": str})
    assert (spread["n_seeds"] >= 3).all(), "the tolerance needs the spread over >= 3 seeds"
    problems = _within_seed_spread(RESULTS, new_dir, spread)
    assert not problems, "\n".join(problems)

    rmse = pd.read_csv(new_dir / TABLES / "rmse_hu_per_dose.csv", dtype={"dose": str})
    ref = rmse[rmse["loss"] == INPUT_LABEL].set_index("dose")["mean"]
    cells = rmse[rmse["loss"] != INPUT_LABEL]
    assert len(cells) == 8 and (cells["mean"].to_numpy() < ref[cells["dose"]].to_numpy()).all(), cells

    key = ["metric", "architecture", "dose", "loss_a", "loss_b", "test"]
    old = pd.read_csv(RESULTS / SIGNIFICANCE, dtype={"dose": str})
    new = pd.read_csv(new_dir / SIGNIFICANCE, dtype={"dose": str})
    both = old.merge(new, on=key, suffixes=("_old", "_new"))
    assert len(both) == len(old) == len(new)
    called = both[(both["p_holm_old"] < 0.05) | (both["p_holm_new"] < 0.05)]
    flipped = called[called["better_old"] != called["better_new"]]
    assert flipped.empty, flipped[[*key, "better_old", "better_new", "p_holm_old", "p_holm_new"]]

    assert (RESULTS / REPORT).read_text().count(f"{FIGURES}/") >= 5
    for fig in ("training_loss.png", "trajectories_full_reference.png", "correlation_heatmap.png"):
        assert (RESULTS / FIGURES / fig).is_file()


@pytest.mark.study
@pytest.mark.parametrize("study", STUDIES)
def test_committed_ministudy_reproduces(study, tmp_path):
    """Rerun a CPU mini-study from its preset and compare its tables and claims with results/<study>."""
    from analysis.report import write_report
    from analysis.scoring import ScoreOptions
    from benchmark.config import load_matrix
    from benchmark.runner import Runner

    committed_dir = RESULTS.parent / study
    summary = Runner(load_matrix(f"{study}-cpu.yaml"), tmp_path, quiet=True).run()
    assert not summary.failed, summary.lines()
    write_report(tmp_path, ScoreOptions(progress=False))
    new_dir = RunLayout(tmp_path).analysis_dir
    _same_tables(committed_dir, new_dir)
    old, new = pd.read_csv(committed_dir / "claims.csv"), pd.read_csv(new_dir / "claims.csv")
    pd.testing.assert_frame_equal(old, new, check_exact=False, rtol=1e-4, atol=1e-9, obj="claims.csv")
