"""Scoring sharded by cell over spawned worker processes (``analyze --jobs N --devices ...``): the merged
tables equal a serial run's, the cache stays incremental, every cell and every dose's input baseline
belongs to exactly one shard, and bad ``--jobs``/``--devices`` exit with code 2 naming the option."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_trajectories import make_run  # a finished run folder written as the runner does

from analysis.scoring import ScoreOptions, load_input_baseline, load_trajectories, score_run
from analysis.shards import assign_shards, parse_devices, run_in_workers
from benchmark import cli
from benchmark.core.device import worker_threads
from benchmark.core.errors import UserError
from benchmark.layout import CellInfo

METRICS = ("psnr", "ssim", "rmse_hu")


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("cell", "dose", "epoch", "metric", "image", "source") if c in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


@pytest.mark.slow
def test_two_processes_give_the_serial_tables_and_stay_incremental(tmp_path, tmp_cache, monkeypatch):
    kw = {"losses": ("mse", "l1"), "doses": ("25_360", "10_180"), "epochs": 2, "metrics": METRICS}
    serial = make_run(tmp_path / "serial", monkeypatch, **kw)
    sharded = make_run(tmp_path / "sharded", monkeypatch, **kw)  # the same seeded checkpoints
    s1 = score_run(serial.out, ScoreOptions(progress=False))
    s2 = score_run(sharded.out, ScoreOptions(progress=False, jobs=2, devices=["cpu"]))
    assert (s2.checkpoints, s2.checkpoints_scored, s2.metric_evaluations, s2.baseline_evaluations) == \
        (s1.checkpoints, s1.checkpoints_scored, s1.metric_evaluations, s1.baseline_evaluations) == (8, 8, 24, 6)  # fmt: skip
    traj1, traj2 = load_trajectories(serial.out), load_trajectories(sharded.out)
    pd.testing.assert_frame_equal(traj2, traj1)  # same rows in the same order, not only the same set
    pd.testing.assert_frame_equal(_sorted(traj2), _sorted(traj1))
    pd.testing.assert_frame_equal(load_input_baseline(sharded.out), load_input_baseline(serial.out))
    for cell in ("mse__dncnn__25_360__s0", "l1__dncnn__10_180__s0"):
        assert sharded.example(cell).is_file() and sharded.score_cache(cell, 2).is_file()

    # incremental: a rerun computes nothing; a new metric is computed alone, by the workers
    s3 = score_run(sharded.out, ScoreOptions(progress=False, jobs=2, devices=["cpu"]))
    assert s3.metric_evaluations == s3.baseline_evaluations == s3.checkpoints_scored == 0
    pd.testing.assert_frame_equal(load_trajectories(sharded.out), traj2)
    s4 = score_run(sharded.out, ScoreOptions(progress=False, jobs=3, devices=["cpu"], metrics=["psnr", "gmsd"]))
    assert s4.metric_evaluations == 8 and s4.baseline_evaluations == 2
    s5 = score_run(serial.out, ScoreOptions(progress=False, metrics=["psnr", "gmsd"]))
    pd.testing.assert_frame_equal(load_trajectories(sharded.out), load_trajectories(serial.out))
    assert s5.metric_evaluations == 8


def _cell(loss: str, dose: str) -> CellInfo:
    return CellInfo(cell_id=f"{loss}__dncnn__{dose}__s0", loss=loss, architecture="dncnn", dose=dose, seed=0,
                    dir=Path("."), status="done", epochs_done=3)  # fmt: skip


def test_shards_split_cells_and_baselines_once():
    cells = [_cell(loss, dose) for dose in ("a", "b") for loss in ("mse", "l1", "ssim")]
    plan = [(c, e, None) for c in cells for e in (1, 2, 3)]
    for jobs in (1, 2, 4, 6, 10):
        shards = assign_shards(plan, jobs)  # type: ignore[arg-type]
        assert len(shards) == min(jobs, len(cells)) and all(ids for ids, _ in shards)
        ids = [i for s, _ in shards for i in s]
        assert sorted(ids) == sorted(c.cell_id for c in cells)  # every cell in exactly one shard
        doses = [d for _, ds in shards for d in ds]
        assert sorted(doses) == ["a", "b"]  # every dose's input baseline in exactly one shard
        for shard_ids, shard_doses in shards:  # a baseline goes with a cell of its dose
            assert all(any(i.endswith(f"__{d}__s0") for i in shard_ids) for d in shard_doses)
    loads = [len(s) * 3 + len(d) for s, d in assign_shards(plan, 2)]  # type: ignore[arg-type]
    assert max(loads) - min(loads) <= 3
    assert assign_shards([], 4) == []


def test_devices_are_parsed_and_checked():
    assert parse_devices(None) is None
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
    for bad in ("", "cpu,,cpu", "tpu", "gpu0"):
        with pytest.raises(UserError, match="--devices"):
            parse_devices(bad)
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(UserError, match="--devices"):
        parse_devices(str(n))  # one past the last GPU (or any GPU where there is none)


@pytest.mark.parametrize("args, option", [
    (["--jobs", "0"], "--jobs"),
    (["--jobs", "-2"], "--jobs"),
    (["--devices", "tpu"], "--devices"),
    (["--devices", "0,,1"], "--devices"),
    (["--devices", "cpu", "--device", "cpu"], "--devices"),
])  # fmt: skip
@pytest.mark.parametrize("command", ["analyze", "report"])
def test_bad_jobs_or_devices_exit_2_naming_the_option(tmp_path, monkeypatch, capsys, command, args, option):
    monkeypatch.setattr(sys, "argv", ["ldct-bench", command, "--out", str(tmp_path), "--quiet", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option}:") and "Traceback" not in err


def _planted_worker(out: str, task: str, threads: int) -> tuple[str | None, tuple[str, str | None] | None]:
    """A scoring shard's body with planted endings (module level: spawned workers import it)."""
    if task == "exit":
        os._exit(3)  # dies as a segfault or the OOM killer would leave it: no result sent
    if task == "raise":
        raise ValueError("planted crash")
    if task == "user":
        return None, ("planted user error", "--metrics")
    return f"{task} in {threads} thread(s)", None


@pytest.mark.slow
def test_workers_return_in_task_order_and_a_dead_or_failing_one_is_an_error(capfd):
    threads = worker_threads(2)  # the machine's cores divided between the two
    got = run_in_workers(_planted_worker, ".", ["b", "a"], progress=False, desc="test")
    assert got == [f"b in {threads} thread(s)", f"a in {threads} thread(s)"]
    err = capfd.readouterr().err  # workers that finished end on their own: none is stopped mid-exit
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    with pytest.raises(RuntimeError, match=r"scoring worker 1 ended without a result \(exit code 3\)"):
        run_in_workers(_planted_worker, ".", ["a", "exit"], progress=False, desc="test")
    with pytest.raises(RuntimeError, match=r"(?s)scoring worker 0 failed:.*ValueError: planted crash"):
        run_in_workers(_planted_worker, ".", ["raise", "a"], progress=False, desc="test")
    with pytest.raises(UserError, match="planted user error") as info:
        run_in_workers(_planted_worker, ".", ["a", "user"], progress=False, desc="test")
    assert info.value.field == "--metrics"
