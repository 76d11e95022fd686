"""The runner's guarantees on the small matrix's cells: bit-identical reruns, kill -9 + resume equals an
uninterrupted run, corrupt checkpoints are skipped, finished cells are never retrained, two runners
never train the same cell, divergence is marked and the matrix goes on.

The guarantees concern the runner, not what the networks learn, so these tests train the small
matrix's 4 cells of its first dose on the 96² ``tiny`` data with 8 steps per epoch (:func:`runner_matrix`): the same
code path at a fraction of the shipped preset's cost (this file trains the matrix five times)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.config import dump_yaml, load_matrix
from benchmark.layout import CELL_CONFIG, CORRUPT_SUFFIX, DIVERGED, DONE, HISTORY, TIMING, RunLayout
from benchmark.runner import Runner

# one xdist worker runs this module: its module-scoped fixtures are built once (--dist loadgroup)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(__name__)]



N_CELLS = 4


@pytest.fixture(scope="module")
def runner_matrix(tmp_path_factory) -> str:
    """small.yaml's cells at its first dose (4 cells: 2 losses × 2 architectures; the second dose adds
    nothing these tests check) on the 96² tiny data, 3 epochs × 8 steps of 8 patches."""
    data = load_matrix("small.yaml").model_dump(mode="json")
    data["doses"] = data["doses"][:1]
    data["dataset"]["options"] = {"size": "tiny", "patients": 14, "val_patients": 2, "test_patients": 6}
    data["training"]["patches_per_epoch"] = 64
    data["training"]["scheduler"]["warmup"] = 4
    data["reproducibility"] = {"kernels": "native"}  # trained in this (natively loaded) process
    path = tmp_path_factory.mktemp("runner_matrix") / "runner.yaml"
    path.write_text(dump_yaml(data))
    return str(path)


def _run(matrix_path: str | Path, out: Path):
    return Runner(load_matrix(matrix_path), out, quiet=True).run()


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _final_checkpoints(out: Path) -> dict[str, bytes]:
    layout = RunLayout(out)
    result = {}
    for cell in layout.cells():
        for epoch, path in layout.checkpoints(cell.cell_id).items():
            result[f"{cell.cell_id}/{epoch}"] = path.read_bytes()
    return result


def _histories(out: Path) -> dict[str, pd.DataFrame]:
    layout = RunLayout(out)
    return {c.cell_id: layout.history(c.cell_id).drop(columns=["seconds"]) for c in layout.cells()}


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = _final_checkpoints(a), _final_checkpoints(b)
    assert sorted(ca) == sorted(cb)
    different = [k for k in ca if ca[k] != cb[k]]
    assert not different, f"checkpoints differ: {different}"
    ha, hb = _histories(a), _histories(b)
    for cell, df in ha.items():
        pd.testing.assert_frame_equal(df, hb[cell], check_exact=True)


@pytest.fixture(scope="module")
def reference_run(runner_matrix, tmp_path_factory) -> Path:
    """The runner matrix trained once, uninterrupted."""
    out = tmp_path_factory.mktemp("runner_ref")
    summary = _run(runner_matrix, out)
    assert len(summary.trained) == N_CELLS and not summary.failed and not summary.diverged, summary.lines()
    return out


def test_small_matrix_layout(runner_matrix, reference_run):
    layout = RunLayout(reference_run)
    cells = layout.cells()
    assert len(cells) == N_CELLS and {c.status for c in cells} == {"done"}
    epochs = load_matrix(runner_matrix).training.epochs
    for c in cells:
        assert sorted(layout.checkpoints(c.cell_id)) == list(range(1, epochs + 1))
        hist = pd.read_csv(c.dir / HISTORY)
        assert list(hist["epoch"]) == list(range(1, epochs + 1))
        for col in ("train_loss", "val_loss", f"train_{c.loss}", f"val_{c.loss}", "lr", "seconds"):
            assert col in hist.columns, col
        assert (c.dir / CELL_CONFIG).is_file() and layout.marker(c.cell_id, DONE).is_file()
    assert layout.matrix_path.is_file()
    # training reduced the loss
    h = layout.history(cells[0].cell_id)
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]


def test_rerun_trains_nothing(runner_matrix, reference_run):
    before = {p: p.stat().st_mtime_ns for p in reference_run.rglob("*.pt")}
    summary = _run(runner_matrix, reference_run)
    assert summary.trained == [] and len(summary.skipped_done) == N_CELLS
    assert "nothing to train" in "\n".join(summary.lines())
    assert {p: p.stat().st_mtime_ns for p in reference_run.rglob("*.pt")} == before


def test_two_runs_are_bit_identical(runner_matrix, reference_run, tmp_path):
    _run(runner_matrix, tmp_path / "again")
    _assert_same_run(reference_run, tmp_path / "again")


def test_kill_9_then_resume_equals_uninterrupted(runner_matrix, reference_run, tmp_path):
    out = tmp_path / "killed"
    proc = _cli("run", "--matrix", runner_matrix, "--out", str(out), "--quiet")
    # wait until the run is in the middle of a cell (some checkpoints written, matrix not finished)
    deadline = time.time() + 300
    while time.time() < deadline:
        ckpts = list(out.rglob("epoch_*.pt"))
        if len(ckpts) >= 5:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    statuses = {c.status for c in RunLayout(out).cells()}
    assert statuses & {"partial", "pending"}, "the kill came too late to interrupt anything"
    resumed = _cli("run", "--matrix", runner_matrix, "--out", str(out), "--quiet")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert "resuming after epoch" in stdout or "skipped" in stdout
    _assert_same_run(reference_run, out)


def test_truncated_checkpoint_resumes_from_previous_epoch(runner_matrix, reference_run, tmp_path):
    matrix = load_matrix(runner_matrix)
    one = matrix.model_copy(update={"losses": matrix.losses[:1], "architectures": matrix.architectures[1:], "doses": matrix.doses[:1]})
    path = tmp_path / "one.yaml"
    path.write_text(dump_yaml(one.model_dump(mode="json")))
    out = tmp_path / "trunc"
    _run(path, out)
    cell = RunLayout(out).cells()[0]
    last = max(RunLayout(out).checkpoints(cell.cell_id).items())[1]
    last.write_bytes(last.read_bytes()[: 1000])  # a crash in the middle of a (non-atomic) copy
    RunLayout(out).marker(cell.cell_id, DONE).unlink()
    summary = _run(path, out)
    assert summary.trained == [cell.cell_id]
    assert (last.parent / (last.name + CORRUPT_SUFFIX)).is_file()
    ref = RunLayout(reference_run)
    assert last.read_bytes() == ref.checkpoints(cell.cell_id)[int(last.stem.split("_")[1])].read_bytes()


def test_two_runners_never_train_the_same_cell(runner_matrix, tmp_path):
    out = tmp_path / "pair"
    # one thread each: two OpenMP pools on 2 cores would oversubscribe them many times over
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [_cli("run", "--matrix", runner_matrix, "--out", str(out), "--quiet", env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    trained = [
        {line.split(": ", 1)[1] for line in o.splitlines() if line.startswith("  trained: ")} for o, _ in outputs
    ]
    assert not trained[0] & trained[1]
    assert len(trained[0] | trained[1]) == N_CELLS
    for cell in RunLayout(out).cells():
        assert len(pd.read_csv(cell.dir / TIMING)) == load_matrix(runner_matrix).training.epochs


def test_divergence_is_marked_and_matrix_goes_on(runner_matrix, tmp_path):
    matrix = load_matrix(runner_matrix)
    data = matrix.model_dump(mode="json")
    data.update(losses=["mse", "l1"], architectures=["dncnn"], doses=["25_360"], exclude=[])
    data["training"]["optimizer"] = {"name": "sgd", "lr": 1.0e12, "kwargs": {}}
    path = tmp_path / "diverge.yaml"
    path.write_text(dump_yaml(data))
    out = tmp_path / "div"
    summary = _run(path, out)
    assert summary.diverged, summary.lines()
    assert len(summary.diverged) + len(summary.trained) == 2
    from benchmark.status import status_table

    table = status_table(out)
    assert "diverged" in set(table["status"])
    marker = RunLayout(out).marker(summary.diverged[0], DIVERGED).read_text()
    assert '"epoch": 1' in marker
    # a rerun does not retry a diverged cell
    assert _run(path, out).trained == []
