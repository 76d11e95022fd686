"""Slurm submission through submitit, run with submitit's local executor (same code path per cell)."""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest

from benchmark.config import parse_matrix
from benchmark.layout import FAILED, RunLayout
from benchmark.runner import Runner
from benchmark.slurm import DeferredSignal, Interrupted, SlurmOptions, submit

pytestmark = pytest.mark.slow


def _matrix(**training):
    return parse_matrix({
        "dataset": {"kind": "synth", "options": {"size": "tiny"}},
        "losses": ["mse", "l1"], "architectures": [{"name": "dncnn", "kwargs": {"depth": 4, "channels": 8}}],
        "doses": ["25_360"],
        "training": {"epochs": 1, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8, **training},
        "device": "cpu",
    })


def test_submit_trains_each_cell_once_and_resubmit_is_a_no_op(tmp_path):
    matrix = _matrix()
    out = tmp_path / "slurm_run"
    # two cells packed in one job: one task per cell
    jobs = submit(matrix, out, SlurmOptions(cluster="local", timeout_min=10, cpus_per_task=1, mem_gb=2, cells_per_job=2))
    assert len(jobs) == 1
    results = sorted(jobs[0].results())
    assert results == ["l1__dncnn__25_360__s0: trained", "mse__dncnn__25_360__s0: trained"]
    assert {c.status for c in RunLayout(out).cells()} == {"done"}
    # every task went through the one process set-up, with the matrix's `deterministic`
    assert "process set-up: device cpu, deterministic true" in jobs[0].stdout()
    assert submit(matrix, out, SlurmOptions(cluster="local")) == []


def _checkpoints(out) -> dict[str, bytes]:
    layout = RunLayout(out)
    return {f"{c.cell_id}/{e}": p.read_bytes() for c in layout.cells() for e, p in layout.checkpoints(c.cell_id).items()}


def test_timeout_signal_requeues_and_resumes_to_the_same_checkpoints(tmp_path):
    """Slurm's time-limit signal (USR2, the signal submitit's local executor also sends at its time
    limit) is sent to the running task after its first checkpoint: the job checkpoints itself,
    requeues, resumes from the last epoch and ends with the checkpoints of an uninterrupted run."""
    matrix = _matrix(epochs=5, patches_per_epoch=64).model_copy(update={"losses": _matrix().losses[:1]})
    out = tmp_path / "interrupted"
    (job,) = submit(matrix, out, SlurmOptions(cluster="local", timeout_min=20, cpus_per_task=1, mem_gb=2))
    ckpt_dir = RunLayout(out, must_exist=False).checkpoint_dir("mse__dncnn__25_360__s0")
    deadline = time.time() + 300
    while not list(ckpt_dir.glob("epoch_*.pt")) and time.time() < deadline:
        time.sleep(0.02)
    n_before = len(list(ckpt_dir.glob("epoch_*.pt")))
    assert 1 <= n_before < 5, "the signal came too late to interrupt the cell"
    tasks = psutil.Process(job._process.pid).children(recursive=True)
    assert tasks
    for t in tasks:
        t.send_signal(signal.SIGUSR2)
    assert job.result() == "mse__dncnn__25_360__s0: trained"
    log = job.stdout() + (job.stderr() or "")
    assert "Requeued job" in log and "resuming after epoch" in log, log[-3000:]
    assert not RunLayout(out).marker("mse__dncnn__25_360__s0", FAILED).exists()
    ref = tmp_path / "uninterrupted"
    Runner(matrix, ref, quiet=True).run()
    a, b = _checkpoints(out), _checkpoints(ref)
    assert sorted(a) == sorted(b) and len(a) == 5
    assert [k for k in a if a[k] != b[k]] == []


def _swallowing_library() -> None:
    """What pandas 3 does inside an index lookup: an exception raised there (by a signal handler's
    ``sys.exit``) is caught and dropped."""
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(1000):  # the handler runs between these bytecodes
            pass
    except BaseException:
        pass


def test_a_deferred_time_limit_signal_survives_code_that_swallows_exceptions():
    calls: list[int] = []

    def submitit_handler(signum, frame):  # checkpoint, requeue, exit
        calls.append(signum)
        sys.exit(3)

    old = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        _swallowing_library()  # without deferral the exit is lost: the job would train on
        assert calls == [signal.SIGUSR2]
        calls.clear()
        deferred = DeferredSignal(signal.SIGUSR2)
        deferred.poll()  # nothing came yet
        _swallowing_library()
        assert calls == []
        with pytest.raises(Interrupted):
            deferred.poll()  # the runner's safe point
        with pytest.raises(SystemExit):
            deferred.deliver()
        assert calls == [signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler
    finally:
        signal.signal(signal.SIGUSR2, old)
