"""The GPU/cluster path without a GPU or Slurm (issue #12): one process set-up, the CUDA RNG state of
the current device only, timeouts are not failures, an explicit executor, Slurm options reaching
submitit, and a dataset cache key without the build device."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import pytest
import submitit
import torch

import benchmark.runner as runner_mod
import benchmark.slurm as slurm_mod
from benchmark.cells import expand_cells
from benchmark.config import parse_matrix
from benchmark.data import open_dataset
from benchmark.data.synth import BUILD_TOLERANCE_HU
from benchmark.layout import FAILED, RunLayout
from benchmark.runner import Runner
from benchmark.slurm import CellJob, SlurmOptions, default_timeout_min, submit
from benchmark.train import capture_rng, restore_rng

ONE = {
    "dataset": {"kind": "synth", "options": {"size": "tiny"}},
    "losses": ["mse", "l1"],
    "architectures": [{"name": "dncnn", "kwargs": {"depth": 4, "channels": 8}}],
    "doses": ["25_360"],
    "training": {"epochs": 4, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
    "device": "cpu",
}


# --- 1. one process set-up --------------------------------------------------------------------
def test_run_cell_alone_applies_the_process_setup(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner_mod, "configure_determinism", lambda dev, det: calls.append((dev, det)))
    monkeypatch.setattr(Runner, "train_cell", lambda self, cell: None)
    matrix = parse_matrix(ONE)
    runner = Runner(matrix, tmp_path, quiet=True)
    cells = expand_cells(matrix)
    assert runner.run_cell(cells[0]) == "trained"
    assert runner.run_cell(cells[1]) == "trained"
    assert calls == [(torch.device("cpu"), True)]  # once per runner, with the matrix's flag
    assert runner_mod.process_setup() == (torch.device("cpu"), True)


def test_setup_process_makes_the_cells_gpu_current_and_deterministic(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: current.append(dev))
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda flag, warn_only=False: current.append(flag))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    line = runner_mod.setup_process(parse_matrix(ONE), torch.device("cuda", 3))
    assert current == [torch.device("cuda", 3), True]
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert "cuda:3" in line and "deterministic true" in line


# --- 2. CUDA RNG of the current device only ----------------------------------------------------
class _FakeCuda:
    def __init__(self, monkeypatch, current: int = 0, count: int = 1):
        self.set: list[tuple[int, int]] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([10 + int(device)], dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.set.append((int(state[0]), int(device))))

        def _all():
            raise AssertionError("get_rng_state_all must not be used")

        monkeypatch.setattr(torch.cuda, "get_rng_state_all", _all)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: _all())


def test_cuda_rng_saves_and_restores_the_current_device_only(monkeypatch):
    fake = _FakeCuda(monkeypatch, current=2, count=8)
    gen = torch.Generator().manual_seed(0)
    state = capture_rng(gen)
    assert int(state["cuda"][0]) == 12  # cuda:2's state, a tensor, not a list of 8
    restore_rng(state, gen)
    assert fake.set == [(12, 2)]


def test_old_checkpoint_with_eight_gpu_states_resumes_on_one_gpu(monkeypatch, caplog):
    gen = torch.Generator().manual_seed(0)
    old = {**capture_rng(gen), "cuda": [torch.tensor([k], dtype=torch.uint8) for k in range(8)]}
    fake = _FakeCuda(monkeypatch, current=0, count=1)
    restore_rng(old, gen)  # used to raise IndexError (set_rng_state_all with 8 states on 1 GPU)
    assert fake.set == [(0, 0)]
    fake.set.clear()
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 9)  # no entry for this device: skipped, logged
    with caplog.at_level("WARNING"):
        restore_rng(old, gen)
    assert fake.set == [] and "not restored" in caplog.text


# --- 3. a timeout is not a failure --------------------------------------------------------------
def test_checkpoint_requeues_the_same_job():
    job = CellJob({"x": 1}, "/tmp/out", ["a", "b"])
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    again = delayed.function
    assert isinstance(again, CellJob) and again is not job
    assert (again.matrix_dump, again.out, again.cell_ids) == (job.matrix_dump, job.out, job.cell_ids)


def test_uncompleted_job_error_does_not_mark_the_cell_failed(tmp_path, monkeypatch):
    def timed_out(self, cell):
        raise submitit.core.utils.UncompletedJobError("timed-out")

    monkeypatch.setattr(Runner, "train_cell", timed_out)
    matrix = parse_matrix(ONE)
    runner = Runner(matrix, tmp_path, quiet=True)
    runner.interruptions = (submitit.core.utils.UncompletedJobError,)
    cell = expand_cells(matrix)[0]
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        runner.run_cell(cell)
    assert not RunLayout(tmp_path).marker(cell.cell_id, FAILED).exists()
    # a real error still marks it failed
    monkeypatch.setattr(Runner, "train_cell", lambda self, cell: 1 / 0)
    assert runner.run_cell(cell) == "failed"
    assert RunLayout(tmp_path).marker(cell.cell_id, FAILED).is_file()


# --- 4./5. the executor flag and the Slurm options ---------------------------------------------


@pytest.mark.parametrize("flags", [["--executor", "slurm"], ["--slurm"]])
def test_slurm_where_there_is_none_is_a_user_error(cli_main, tmp_path, monkeypatch, capsys, flags):
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    code, err = cli_main("run", "--matrix", "small.yaml", "--out", str(tmp_path / "o"), *flags)
    assert code == 2 and "--executor" in err and "no Slurm" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("flags", "needle"), [
    (["--executor", "pbs"], "use local (train in this process) or slurm"),
    (["--executor", "slurm", "--slurm-param", "nokey"], "--slurm-param"),
    (["--executor", "slurm", "--cells-per-job", "0"], "--cells-per-job"),
])
def test_bad_executor_flags_exit_2(cli_main, tmp_path, monkeypatch, capsys, flags, needle):
    code, err = cli_main("run", "--matrix", "small.yaml", "--out", str(tmp_path / "o"), *flags)
    assert code == 2 and needle in err


class _FakeExecutor:
    instances: ClassVar[list[_FakeExecutor]] = []

    def __init__(self, folder, cluster=None):
        self.cluster, self.params, self.submitted = cluster, {}, []
        _FakeExecutor.instances.append(self)

    def update_parameters(self, **kw):
        self.params.update(kw)

    def batch(self):
        import contextlib

        return contextlib.nullcontext()

    def submit(self, fn, *args):
        self.submitted.append(fn)
        return fn


@pytest.fixture
def fake_slurm(monkeypatch):
    _FakeExecutor.instances = []
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit, "AutoExecutor", _FakeExecutor)
    return _FakeExecutor.instances


def test_cli_slurm_options_reach_the_executor(cli_main, tmp_path, monkeypatch, capsys, fake_slurm):
    matrix = tmp_path / "m.yaml"
    import yaml

    matrix.write_text(yaml.safe_dump({**ONE, "losses": ["mse", "l1", "charbonnier"]}))
    code, err = cli_main("run", "--matrix", str(matrix), "--out", str(tmp_path / "o"),
                     "--executor", "slurm", "--slurm-account", "acc", "--slurm-qos", "high", "--slurm-constraint", "a100",
                     "--slurm-mem", "64", "--slurm-cpus", "4", "--slurm-partition", "gpu",
                     "--slurm-param", "mail-type=END", "--slurm-param", "exclusive=",
                     "--slurm-setup", "module load cuda", "--slurm-setup", "source env/bin/activate",
                     "--cells-per-job", "2")  # fmt: skip
    assert code == 0, err
    (ex,) = fake_slurm
    p = ex.params
    assert ex.cluster == "slurm"
    assert (p["slurm_account"], p["slurm_qos"], p["slurm_constraint"], p["slurm_partition"]) == ("acc", "high", "a100", "gpu")
    assert (p["mem_gb"], p["cpus_per_task"], p["tasks_per_node"], p["gpus_per_node"]) == (64, 4, 2, 2)
    assert p["slurm_additional_parameters"] == {"mail_type": "END", "exclusive": ""}
    assert p["slurm_setup"] == ["module load cuda", "source env/bin/activate"]
    assert p["timeout_min"] == slurm_mod.FALLBACK_TIMEOUT_MIN  # nothing measured yet
    assert [j.cell_ids for j in ex.submitted] == [["mse__dncnn__25_360__s0", "l1__dncnn__25_360__s0"],
                                                  ["charbonnier__dncnn__25_360__s0"]]


def test_time_request_is_sized_from_measured_epochs(tmp_path, fake_slurm):
    matrix = parse_matrix(ONE)  # 4 epochs
    layout = RunLayout(tmp_path, must_exist=False)
    for epoch, sec in enumerate([100.0, 140.0], start=1):  # mse: 120 s per epoch
        layout.append_timing("mse__dncnn__25_360__s0", epoch, sec)
    layout.append_timing("l1__dncnn__25_360__s0", 1, 400.0)  # the slowest cell: 400 s per epoch
    expected = -(-400 * 4 * slurm_mod.SAFETY_FACTOR // 60) + slurm_mod.STARTUP_MIN
    assert default_timeout_min(layout, 4) == expected == 55
    submit(matrix, tmp_path, SlurmOptions())
    assert fake_slurm[0].params["timeout_min"] == 55
    submit(matrix, tmp_path, SlurmOptions(timeout_min=30))
    assert fake_slurm[1].params["timeout_min"] == 30


def test_task_device_is_the_tasks_gpu(monkeypatch):
    assert slurm_mod.task_device("cpu", 3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert slurm_mod.task_device("auto", 3) == torch.device("cuda", 3)
    assert slurm_mod.task_device("cuda:0", 1) == torch.device("cuda", 1)


# --- 6. one dataset cache key wherever it is built -----------------------------------------------
def test_synth_cache_key_does_not_depend_on_the_build_device(monkeypatch):
    cpu = open_dataset("synth", {"size": "tiny", "build_device": "cpu"})
    auto = open_dataset("synth", {"size": "tiny"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    cuda = open_dataset("synth", {"size": "tiny", "build_device": "cuda"})
    auto_gpu = open_dataset("synth", {"size": "tiny"})
    assert cpu.cache_folder == auto.cache_folder == cuda.cache_folder == auto_gpu.cache_folder
    assert "device" not in cuda._hash_payload()
    assert cuda._device() == auto_gpu._device() == torch.device("cuda", 3)  # the cell's GPU, not cuda:0
    assert cpu._device() == torch.device("cpu")


@pytest.mark.gpu
def test_cuda_build_equals_cpu_build_within_tolerance(tmp_path, monkeypatch):
    arrays = {}
    for dev in ("cpu", "cuda"):
        monkeypatch.setenv("LDCT_BENCH_CACHE", str(tmp_path / dev))
        ds = open_dataset("synth", {"size": "tiny", "build_device": dev})
        ds.prepare(progress=False)
        arrays[dev] = {p.relative_to(ds.cache_folder).as_posix(): np.load(p) for p in ds.cache_folder.rglob("*.npy")}
    assert sorted(arrays["cpu"]) == sorted(arrays["cuda"])
    for name, a in arrays["cpu"].items():
        b = arrays["cuda"][name]
        if a.dtype.kind in "fc" and not name.endswith(("phantom.npy", "sino_clean.npy")):
            assert float(np.abs(a - b).max()) <= BUILD_TOLERANCE_HU, name
        else:  # phantoms, clean sinograms, ROIs, ids: bit-identical
            assert np.array_equal(a, b), name
