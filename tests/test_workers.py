"""``ldct-bench run --jobs N [--devices ...]`` (issue #12, throughput): a pool of worker processes equals
a single-process run bit for bit, never trains a cell twice (nor one another runner holds), bad
``--jobs``/``--devices`` exit 2 naming the option, and ``status`` shows who holds a cell (not a
stale marker)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from benchmark import cli
from benchmark.cells import cell_config, expand_cells
from benchmark.config import parse_matrix
from benchmark.core.errors import UserError
from benchmark.layout import DONE, LOCK, RUNNING, TIMING, RunLayout
from benchmark.runner import Runner, RunSummary, cell_lock
from benchmark.status import holder_label, status_table
from benchmark.workers import WorkerPool, assign_devices, parse_devices, worker_threads

# one xdist worker runs this module: its module-scoped fixtures are built once (--dist loadgroup)
pytestmark = pytest.mark.xdist_group(__name__)

# 4 cells x 2 epochs x 2 steps on the tiny simulated data
TINY = {
    "dataset": {"kind": "synth", "options": {"size": "tiny"}},
    "losses": ["mse", "l1"],
    "architectures": [{"name": "dncnn", "kwargs": {"depth": 4, "channels": 8}}],
    "doses": ["25_360", "10_180"],
    "training": {"epochs": 2, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
    "device": "cpu",
}
CELLS = [c.cell_id for c in expand_cells(parse_matrix(TINY))]
HELD = CELLS[1]  # held by "another runner" during the first pool run
OLD_COLUMNS = ["cell", "loss", "architecture", "dose", "seed", "status", "epochs", "val_loss", "detail"]


def _invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli.app, ["run", *args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def _trained(output: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("  trained: ")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    """The tiny matrix with ``--jobs 1`` (at a pool worker's CPU threads: float reductions on the CPU
    depend on them) and with ``--jobs 2``: first while the test holds one cell's lock, then again."""
    tmp = tmp_path_factory.mktemp("pool")
    matrix = tmp / "tiny.yaml"
    matrix.write_text(yaml.safe_dump(TINY))
    threads = torch.get_num_threads()
    torch.set_num_threads(worker_threads(2))
    try:
        code, single_out = _invoke("--matrix", str(matrix), "--out", str(tmp / "single"), "--quiet")
    finally:
        torch.set_num_threads(threads)
    assert code == 0, single_out
    pool = tmp / "pool"
    with cell_lock(RunLayout(pool, must_exist=False).marker(HELD, LOCK)) as held:
        assert held
        code, first = _invoke("--matrix", str(matrix), "--out", str(pool), "--quiet", "--jobs", "2")
        assert code == 0, first
        held_cell_files = sorted(p.name for p in (pool / "cells" / HELD).rglob("*"))
    code, second = _invoke("--matrix", str(matrix), "--out", str(pool), "--quiet", "--jobs", "2", "--devices", "cpu")
    assert code == 0, second
    return {"single": tmp / "single", "pool": pool, "single_out": single_out, "first": first, "second": second,
            "held_cell_files": held_cell_files}  # fmt: skip


def _checkpoints(out: Path) -> dict[str, bytes]:
    layout = RunLayout(out)
    return {f"{c.cell_id}/{e}": p.read_bytes() for c in layout.cells() for e, p in layout.checkpoints(c.cell_id).items()}


@pytest.mark.slow
def test_pool_equals_a_single_process_run(runs):
    a, b = _checkpoints(runs["single"]), _checkpoints(runs["pool"])
    assert sorted(a) == sorted(b) == sorted(f"{c}/{e}" for c in CELLS for e in (1, 2))
    assert [k for k in a if a[k] != b[k]] == []
    for cell in CELLS:
        ha, hb = (RunLayout(o).history(cell).drop(columns=["seconds"]) for o in (runs["single"], runs["pool"]))
        pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    assert "[w0] process set-up: device cpu" in runs["first"] and "[w1] process set-up: device cpu" in runs["first"]


@pytest.mark.slow
def test_pool_never_trains_a_cell_twice(runs):
    first, second = _trained(runs["first"]), _trained(runs["second"])
    # the cell another runner held was skipped and left alone; every other cell was trained once
    assert sorted(first) == sorted(c for c in CELLS if c != HELD)
    assert f"locked (another runner is training it): {HELD}" in runs["first"]
    assert runs["held_cell_files"] == [LOCK]  # nothing but the lock file (ours)
    # the rerun trains only that cell
    assert second == [HELD] and "skipped 3 finished" in runs["second"]
    layout = RunLayout(runs["pool"])
    for cell in CELLS:
        timing = pd.read_csv(layout.cell_dir(cell) / TIMING)
        assert list(timing["epoch"]) == [1, 2], cell  # one row per trained epoch: no epoch trained twice
        assert sorted(layout.checkpoints(cell)) == [1, 2]
        assert layout.marker(cell, DONE).is_file() and not layout.marker(cell, RUNNING).exists()
    assert set(status_table(runs["pool"])["status"]) == {"done"}
    assert set(status_table(runs["pool"])["worker"]) == {""}


# --- bad input -------------------------------------------------------------------------------------


_MISSING_GPU = str(max(8, torch.cuda.device_count()))


@pytest.mark.parametrize(("flags", "option", "needle"), [
    (["--jobs", "0"], "--jobs", "at least 1"),
    (["--jobs", "-3"], "--jobs", "at least 1"),
    (["--jobs", "2", "--executor", "slurm"], "--jobs", "local only"),
    (["--devices", "0", "--executor", "slurm"], "--devices", "local only"),
    (["--jobs", "2", "--devices", _MISSING_GPU], "--devices", "no such GPU"),
    (["--devices", f"0,{_MISSING_GPU}"] if torch.cuda.is_available() else ["--devices", "0"], "--devices", "no such GPU"),
    (["--jobs", "2", "--devices", "0,,1"], "--devices", "comma-separated"),
    (["--jobs", "2", "--devices", "gpu0"], "--devices", "comma-separated"),
    (["--jobs", "2", "--devices", ""], "--devices", "comma-separated"),
])  # fmt: skip
def test_bad_jobs_or_devices_exit_2(cli_main, tmp_path, monkeypatch, capsys, flags, option, needle):
    code, err = cli_main("run", "--matrix", "small.yaml", "--out", str(tmp_path / "o"), *flags)
    assert code == 2, err
    assert err.startswith(f"error: {option}:") and needle in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_devices_are_parsed_and_dealt_round_robin(monkeypatch):
    assert parse_devices("cpu", "auto") == [torch.device("cpu")]
    assert parse_devices(None, "cpu") == [torch.device("cpu")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    gpus = [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert parse_devices("0, 1", "cpu") == parse_devices("cuda:0,cuda:1", "cpu") == gpus
    assert parse_devices(None, "auto") == parse_devices(None, "cuda") == gpus  # every visible GPU
    assert parse_devices(None, "cuda:1") == [gpus[1]]
    assert assign_devices(gpus, 5) == [gpus[0], gpus[1], gpus[0], gpus[1], gpus[0]]  # 2-3 workers per GPU
    assert worker_threads(1) == (os.cpu_count() or 1) and worker_threads(10_000) == 1


# --- status: who holds a cell ----------------------------------------------------------------------
def _fake_run(out: Path) -> RunLayout:
    matrix = parse_matrix(TINY)
    layout = RunLayout(out, must_exist=False)
    layout.write_matrix(matrix)
    for cell in expand_cells(matrix):
        layout.write_cell_config(cell.cell_id, cell_config(cell, matrix))
    return layout


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_status_shows_the_holder_and_not_a_stale_marker(tmp_path):
    layout = _fake_run(tmp_path)
    host = socket.gethostname()
    live, stale, remote_held, remote_stale = CELLS
    markers: dict[str, dict[str, Any]] = {
        live: {"worker": 1, "pid": os.getpid(), "host": host, "device": "cuda:1", "started": "2025-01-01T00:00:00"},
        stale: {"worker": 0, "pid": _dead_pid(), "host": host, "device": "cuda:0", "started": "2025-01-01T00:00:00"},
        remote_held: {"worker": 2, "pid": 1, "host": host + "-other", "device": "cuda:2", "started": "x"},
        remote_stale: {"worker": None, "pid": 1, "host": host + "-other", "device": "cpu", "started": "x"},
    }
    for cell, info in markers.items():
        layout.write_marker(cell, RUNNING, info)
    with cell_lock(layout.marker(live, LOCK)) as a, cell_lock(layout.marker(remote_held, LOCK)) as b:
        assert a and b
        table = status_table(tmp_path).set_index("cell")
    assert list(status_table(tmp_path).columns) == [*OLD_COLUMNS, "worker"]
    assert table.loc[live, "worker"] == f"w1 cuda:1 pid {os.getpid()}@{host}"
    assert table.loc[stale, "worker"] == ""  # its pid is gone on this host
    assert table.loc[remote_held, "worker"] == f"w2 cuda:2 pid 1@{host}-other"  # another host: its lock is held
    assert table.loc[remote_stale, "worker"] == ""  # another host, lock free
    assert set(table["status"]) == {"pending"}  # the status column itself is unchanged
    # locks released: the live marker's pid (this process) still runs, the remote one is now stale
    after = status_table(tmp_path).set_index("cell")
    assert after.loc[remote_held, "worker"] == ""


def test_status_cli_csv_has_the_worker_column(tmp_path):
    layout = _fake_run(tmp_path)
    cell = CELLS[0]
    layout.write_marker(cell, RUNNING, {"worker": 3, "pid": os.getpid(), "host": socket.gethostname(), "device": "cpu"})
    res = CliRunner().invoke(cli.app, ["status", "--out", str(tmp_path), "--csv"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0] == ",".join([*OLD_COLUMNS, "worker"])
    row = next(line for line in lines if line.startswith(cell + ","))
    assert row.endswith(f",w3 cpu pid {os.getpid()}@{socket.gethostname()}")


def test_runner_writes_its_marker_while_it_trains_and_removes_it(tmp_path, monkeypatch):
    seen = []

    def fake_train(self, cell):
        seen.append((holder_label(self.layout, cell.cell_id),
                     json.loads(self.layout.marker(cell.cell_id, RUNNING).read_text())))  # fmt: skip
        if cell.cell_id == CELLS[1]:
            raise RuntimeError("boom")

    monkeypatch.setattr(Runner, "train_cell", fake_train)
    matrix = parse_matrix(TINY)
    runner = Runner(matrix, tmp_path, quiet=True)
    runner.worker_index = 4
    cells = expand_cells(matrix)
    assert runner.run_cell(cells[0]) == "trained"
    assert runner.run_cell(cells[1]) == "failed"
    label = f"w4 cpu pid {os.getpid()}@{socket.gethostname()}"
    assert [s[0] for s in seen] == [label, label]
    assert seen[0][1]["worker"] == 4 and seen[0][1]["device"] == "cpu" and "started" in seen[0][1]
    layout = RunLayout(tmp_path)
    assert not layout.marker(cells[0].cell_id, RUNNING).exists() and not layout.marker(cells[1].cell_id, RUNNING).exists()


# --- the parent's bookkeeping, with stand-in workers ------------------------------------------------
class _Proc:
    def __init__(self, pid: int, exitcode: int | None) -> None:
        self.pid, self.exitcode = pid, exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None


def _collect(tmp_path: Path, procs: list[_Proc], msgs: list[tuple], remaining: set[str]) -> RunSummary:
    import queue

    from tqdm import tqdm

    pool = WorkerPool(parse_matrix(TINY), tmp_path, jobs=len(procs), quiet=True)
    q: queue.Queue = queue.Queue()
    for m in msgs:
        q.put(m)
    summary = RunSummary()
    pool._collect(procs, q, remaining, summary, tqdm(disable=True))
    return summary


def test_a_dead_worker_fails_its_cell_and_the_others_go_on(tmp_path):
    layout = _fake_run(tmp_path)
    layout.write_marker(CELLS[0], RUNNING, {"worker": 0, "pid": 111, "host": socket.gethostname()})
    procs = [_Proc(111, -9), _Proc(222, None)]  # worker 0 was killed (e.g. the OOM killer)
    msgs = [("start", 0, CELLS[0]), ("start", 1, CELLS[1]), ("log", 1, "epoch line"), ("done", 1, CELLS[1], "trained")]
    summary = _collect(tmp_path, procs, msgs, {CELLS[0], CELLS[1]})
    assert summary.trained == [CELLS[1]] and summary.failed == [CELLS[0]]
    assert "worker 0 died (exit code -9)" in layout.cell_status(CELLS[0])[1]
    assert not layout.marker(CELLS[0], RUNNING).exists()  # its stale marker is removed


def test_every_worker_gone_with_cells_left_is_an_error(tmp_path):
    _fake_run(tmp_path)
    with pytest.raises(RuntimeError, match="every worker has exited with 1 cell"):
        _collect(tmp_path, [_Proc(111, 1), _Proc(222, 0)], [("done", 1, CELLS[1], "trained")], {CELLS[1], CELLS[2]})


def test_a_user_error_in_a_worker_stops_the_pool(tmp_path):
    _fake_run(tmp_path)
    msg = ("user_error", 0, CELLS[0], "cell was started with other settings", "cells/x/config.yaml")
    with pytest.raises(UserError, match="other settings") as exc:
        _collect(tmp_path, [_Proc(111, None)], [msg], {CELLS[0]})
    assert exc.value.field == "cells/x/config.yaml"
