"""The matrix's ``checkpoints`` section (issue #12): which epochs stay on disk, weights-only thinning,
exact resume with thinned checkpoints (crash between writing and thinning, kill -9, a lost newest
checkpoint) and analysis of the kept epochs only. One tiny cell (a 4-layer DnCNN, 8 patches an epoch)
on CPU, compared with an uninterrupted ``keep: all`` run of the same cell."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import benchmark.runner as runner_mod
from benchmark import cli
from benchmark.cells import expand_cells
from benchmark.checkpoint import WEIGHTS_ONLY, load_model, read_checkpoint
from benchmark.config import CheckpointsConfig, dump_yaml, load_yaml, parse_matrix
from benchmark.core.errors import UserError
from benchmark.layout import CORRUPT_SUFFIX, DONE, RunLayout
from benchmark.runner import Runner

pytestmark = pytest.mark.slow

EPOCHS = 5
CELL = "mse__dncnn__25_360__s0"
POLICIES: dict[str, dict[str, Any] | None] = {  # the uninterrupted runs of the `runs` fixture
    "all": None,
    "last": {"keep": "last"},
    "every2": {"keep": "every_k", "every": 2},
    "every2_weights": {"keep": "every_k", "every": 2, "weights_only": True},
}


def _matrix(checkpoints: dict[str, Any] | None = None, *, epochs: int = EPOCHS) -> dict[str, Any]:
    data: dict[str, Any] = {
        "dataset": {"kind": "synth", "options": {"size": "tiny"}},
        "losses": ["mse"],
        "architectures": [{"name": "dncnn", "kwargs": {"depth": 4, "channels": 8}}],
        "doses": ["25_360"],
        "training": {"epochs": epochs, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
        "evaluation": {"metrics": ["psnr", "rmse_hu"], "max_images": 4},
        "device": "cpu",
    }
    if checkpoints is not None:
        data["checkpoints"] = checkpoints
    return data


def _train(out: Path, checkpoints: dict[str, Any] | None = None, *, epochs: int = EPOCHS):
    return Runner(parse_matrix(_matrix(checkpoints, epochs=epochs)), out, quiet=True).run()


def _files(out: Path) -> dict[int, bytes]:
    return {e: p.read_bytes() for e, p in RunLayout(out).checkpoints(CELL).items()}


def _state(out: Path, epoch: int) -> dict[str, Any]:
    state = read_checkpoint(RunLayout(out).checkpoint_path(CELL, epoch))
    assert state is not None
    return state


def _history(out: Path) -> pd.DataFrame:
    return RunLayout(out).history(CELL).drop(columns=["seconds"])


def _corrupt_files(out: Path) -> list[Path]:
    return list(out.rglob(f"*{CORRUPT_SUFFIX}"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs of the cell: the reference (defaults) and each retention policy."""
    base = tmp_path_factory.mktemp("retention")
    out = {}
    for name, policy in POLICIES.items():
        summary = _train(base / name, policy)
        assert summary.trained == [CELL], summary.lines()
        out[name] = base / name
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- configuration ------------------------------------------------------------------------------


def test_defaults_keep_everything_and_the_resolved_matrix_records_the_section(tmp_path):
    cfg = parse_matrix(_matrix())
    assert cfg.checkpoints == CheckpointsConfig(keep="all", every=None, weights_only=False)
    assert not cfg.checkpoints.thins
    thin = parse_matrix(_matrix({"keep": "every_k", "every": 5, "weights_only": True}))
    RunLayout(tmp_path, must_exist=False).write_matrix(thin)
    saved = load_yaml(RunLayout(tmp_path, must_exist=False).matrix_path.read_text())
    assert saved["checkpoints"] == {"keep": "every_k", "every": 5, "weights_only": True}
    assert RunLayout(tmp_path, must_exist=False).matrix().checkpoints == thin.checkpoints


@pytest.mark.parametrize(("section", "needles"), [
    ({"keep": "every_k"}, ["checkpoints:", "every_k needs every"]),
    ({"keep": "every_k", "every": 0}, ["checkpoints.every:", "greater than 0"]),
    ({"keep": "last", "every": 3}, ["checkpoints:", "every applies to keep: every_k only"]),
    ({"keep": "sometimes"}, ["checkpoints.keep:", "'all', 'last' or 'every_k'"]),
    ({"keep": "last", "weights": True}, ["checkpoints.weights: unknown key"]),
    ({"keep": "all", "weights_only": "maybe"}, ["checkpoints.weights_only:"]),
], ids=["every_k-without-every", "every-0", "every-without-every_k", "bad-keep", "unknown-key", "bad-bool"])
def test_bad_checkpoints_section_is_a_user_error_naming_the_key(tmp_path, monkeypatch, capsys, section, needles):
    with pytest.raises(UserError) as info:
        parse_matrix(_matrix(section))
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    path = tmp_path / "bad.yaml"
    path.write_text(dump_yaml(_matrix(section)))
    monkeypatch.setattr(sys, "argv", ["ldct-bench", "validate", "--matrix", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert needles[0] in capsys.readouterr().err


def test_which_epochs_are_kept():
    final = 7
    assert all(CheckpointsConfig().keeps(e, final) for e in range(1, final + 1))
    assert [e for e in range(1, final + 1) if CheckpointsConfig(keep="last").keeps(e, final)] == [7]
    every3 = CheckpointsConfig(keep="every_k", every=3)
    assert [e for e in range(1, final + 1) if every3.keeps(e, final)] == [3, 6, 7]
    every1 = CheckpointsConfig(keep="every_k", every=1)
    assert all(every1.keeps(e, final) for e in range(1, final + 1))
    assert CheckpointsConfig(weights_only=True).thins and CheckpointsConfig(keep="last").thins


# --- what stays on disk -------------------------------------------------------------------------


def test_default_keeps_every_full_checkpoint(runs):
    files = _files(runs["all"])
    assert sorted(files) == list(range(1, EPOCHS + 1))
    for epoch in files:
        state = _state(runs["all"], epoch)
        assert "train_state" in state and WEIGHTS_ONLY not in state


def test_keep_last_leaves_one_full_checkpoint(runs):
    ref, files = _files(runs["all"]), _files(runs["last"])
    assert sorted(files) == [EPOCHS]
    assert files[EPOCHS] == ref[EPOCHS]  # thinning never changes what is trained
    assert "train_state" in _state(runs["last"], EPOCHS)
    pd.testing.assert_frame_equal(_history(runs["last"]), _history(runs["all"]), check_exact=True)


@pytest.mark.parametrize("name", ["every2", "every2_weights"])
def test_every_k_keeps_multiples_of_k_and_the_final_epoch(runs, name):
    ref, files = _files(runs["all"]), _files(runs[name])
    assert sorted(files) == [2, 4, 5]
    assert files[5] == ref[5] and "train_state" in _state(runs[name], 5)
    ref_model = _state(runs["all"], 2)["model"]
    for epoch in (2, 4):
        state = _state(runs[name], epoch)
        if name == "every2":
            assert files[epoch] == ref[epoch]
        else:
            assert "train_state" not in state and state[WEIGHTS_ONLY] is True
            assert set(state) >= {"format_version", "epoch", "cell", "model"} and state["epoch"] == epoch
            assert len(files[epoch]) < len(ref[epoch])
            expected = _state(runs["all"], epoch)["model"]
            assert all(torch.equal(state["model"][k], expected[k]) for k in expected)
    # a weights-only checkpoint loads for inference like a full one
    model = load_model(RunLayout(runs[name]).checkpoint_path(CELL, 2))
    assert all(torch.equal(p, ref_model[k]) for k, p in model.state_dict().items())


# --- resume -------------------------------------------------------------------------------------


def _crash_after_saving(monkeypatch, epoch: int) -> None:
    """Make the runner die right after epoch ``epoch``'s full checkpoint is written, before the older
    ones are thinned (the window where two full checkpoints exist)."""
    real = runner_mod.thin_checkpoints

    def thin(ckpt_dir, policy, newest, final, *, oldest=1):
        if newest == epoch and oldest == epoch - 1:
            raise KeyboardInterrupt("simulated crash")
        return real(ckpt_dir, policy, newest, final, oldest=oldest)

    monkeypatch.setattr(runner_mod, "thin_checkpoints", thin)


@pytest.mark.parametrize("name", ["last", "every2_weights"])
def test_crash_between_writing_and_thinning_resumes_to_the_same_files(runs, tmp_path, monkeypatch, capsys, name):
    out, policy = tmp_path / "crashed", POLICIES[name]
    _crash_after_saving(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _train(out, policy)
    monkeypatch.undo()
    assert sorted(_files(out)) == [2, 3]  # epoch 1 was thinned away (not kept) after epoch 2 was written
    assert "train_state" in _state(out, 2) and "train_state" in _state(out, 3)  # the old one is untouched
    assert not RunLayout(out).marker(CELL, DONE).is_file()
    torch.manual_seed(4321)  # whatever the process did before must not matter
    summary = _train(out, policy)
    assert summary.trained == [CELL]
    assert "resuming after epoch 3" in capsys.readouterr().out
    assert _files(out) == _files(runs[name])
    pd.testing.assert_frame_equal(_history(out), _history(runs["all"]), check_exact=True)
    assert not _corrupt_files(out)


@pytest.mark.parametrize(("name", "resumed"), [("every2", "resuming after epoch 4"), ("every2_weights", None),
                                               ("last", None)])
def test_lost_newest_checkpoint_resumes_from_the_newest_full_one_or_restarts(runs, tmp_path, capsys, name, resumed):
    out = _copy(runs[name], tmp_path / name)
    before = _files(out)
    RunLayout(out).checkpoint_path(CELL, EPOCHS).unlink()
    RunLayout(out).marker(CELL, DONE).unlink()
    capsys.readouterr()
    summary = _train(out, POLICIES[name])
    log = capsys.readouterr().out
    assert summary.trained == [CELL]
    if resumed:
        assert resumed in log
    else:
        assert "resuming after epoch" not in log  # no full checkpoint left: a fresh start
    if name == "every2_weights":
        assert "epoch_004.pt holds weights only" in log and "epoch_002.pt holds weights only" in log
    assert not _corrupt_files(out), "weights-only checkpoints are not corrupt"
    assert _files(out) == before  # the same files as the uninterrupted run, bit for bit
    pd.testing.assert_frame_equal(_history(out), _history(runs["all"]), check_exact=True)


def test_resume_only_ever_loads_full_checkpoints(runs, tmp_path):
    """A weights-only file newer than every full one (e.g. the full one was lost) is skipped, not
    renamed, and the run restarts from scratch."""
    out = _copy(runs["every2_weights"], tmp_path / "w")
    ckpt_dir = RunLayout(out).checkpoint_dir(CELL)
    (ckpt_dir / "epoch_005.pt").unlink()
    matrix = parse_matrix(_matrix(POLICIES["every2_weights"]))
    state = Runner(matrix, out, quiet=True).build(expand_cells(matrix)[0], 1)
    logs: list[str] = []
    assert runner_mod.resume_state(state, ckpt_dir, logs.append) == 0
    assert len(logs) == 2 and all("weights only" in line for line in logs)
    assert sorted(RunLayout(out).checkpoints(CELL)) == [2, 4]


def test_kill_9_then_resume_with_keep_last_equals_uninterrupted(tmp_path):
    epochs = 8  # long enough that the kill lands mid-cell
    reference = tmp_path / "straight"
    _train(reference, {"keep": "all"}, epochs=epochs)
    path = tmp_path / "last.yaml"
    path.write_text(dump_yaml(_matrix({"keep": "last"}, epochs=epochs)))
    out = tmp_path / "killed"
    ckpt_dir = RunLayout(out, must_exist=False).checkpoint_dir(CELL)
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--matrix", str(path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill once epoch 2 is written
        if any(p.name.startswith("epoch_") and p.name >= "epoch_002.pt" for p in (ckpt_dir.iterdir() if ckpt_dir.is_dir() else [])):
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not RunLayout(out).marker(CELL, DONE).is_file(), "the kill came too late to interrupt the cell"
    # keep: last holds the newest epoch (>= 2 when killed), and the one before it only until it is deleted
    kept = sorted(RunLayout(out).checkpoints(CELL))
    assert kept and kept[-1] >= 2 and len(kept) <= 2 and kept == list(range(kept[0], kept[-1] + 1)), kept
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    files = _files(out)
    assert sorted(files) == [epochs]
    assert files[epochs] == _files(reference)[epochs]
    pd.testing.assert_frame_equal(_history(out), _history(reference), check_exact=True)


# --- analysis -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "scored"), [("every2_weights", [2, 4, 5]), ("last", [5])])
def test_analysis_scores_only_the_kept_epochs(runs, tmp_path, name, scored):
    from analysis.pipeline import StatsOptions, analyze_run
    from analysis.schema import SOURCE_HISTORY, SOURCE_METRIC
    from analysis.scoring import ScoreOptions

    out = _copy(runs[name], tmp_path / name)
    result = analyze_run(out, ScoreOptions(progress=False), StatsOptions(n_resamples=0))
    traj = result.trajectories
    assert sorted(traj.loc[traj["source"] == SOURCE_METRIC, "epoch"].unique()) == scored
    assert sorted(traj.loc[traj["source"] == SOURCE_HISTORY, "epoch"].unique()) == list(range(1, EPOCHS + 1))
    assert result.summary is not None and result.summary.checkpoints == len(scored)
    assert set(traj.loc[traj["source"] == SOURCE_METRIC, "metric"]) == {"psnr", "rmse_hu"}
    # the best-validation epoch is chosen among the kept epochs
    best = analyze_run(out, ScoreOptions(progress=False), StatsOptions(n_resamples=0, epoch="best_val"))
    assert best.summary is not None and best.summary.metric_evaluations == 0  # cached
    from analysis.schema import select_epoch

    chosen = select_epoch(traj[traj["source"] == SOURCE_METRIC], "best_val", history=traj)["epoch"].unique()
    assert len(chosen) == 1 and int(chosen[0]) in scored
