"""Shared fixtures: a seeded generator, the device, and an isolated cache folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from benchmark.core.compat import ensure_torchvision

ensure_torchvision()


def threads_per_worker() -> int:
    """Torch threads for this test process: the cores shared out over the pytest-xdist workers
    (``PYTEST_XDIST_WORKER_COUNT``; 1 without xdist), at most 2 and at least 1. Oversubscribed workers
    (2 workers x 2 threads on 2 cores) spend most of their time in the kernel; results never depend on
    it (the determinism tests compare runs made under the same setting, and the committed results are
    portable across thread counts: tests/test_portable.py)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // max(1, workers)))


torch.set_num_threads(threads_per_worker())
if "PYTEST_XDIST_WORKER" in os.environ:  # numpy/scipy BLAS of the worker, for the spawned children too
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads_per_worker())
    # Children that pin more threads than their worker's share (portable matrices: 2 per cell) share the
    # cores with the other workers: idle OpenMP threads then sleep instead of spinning, which changes
    # scheduling only, never a result (the thread count, hence every reduction order, is unchanged).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture
def rng() -> np.random.Generator:
    """A numpy generator with a fixed seed."""
    return np.random.default_rng(1234)


@pytest.fixture
def generator() -> torch.Generator:
    """A torch CPU generator with a fixed seed."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A private ldct-bench and torch cache: tests never touch the user's caches."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LDCT_BENCH_CACHE", str(cache / "ldct-bench"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    return cache


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``heavy`` first (a stable sort: the rest keep their order), so that pytest-xdist hands
    them out at the start and no worker is left running one alone at the end of the suite; ``gpu`` tests
    skipped without a CUDA device."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def _random_vgg16_file(tmp_path_factory):
    """One seeded random VGG16 backbone per test session (528 MB; never real ImageNet weights)."""
    from benchmark.core.weights import write_random_weights

    home = tmp_path_factory.mktemp("torch_home_vgg16")
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(home))
    try:
        path = write_random_weights("vgg16", seed=0)
    finally:
        mp.undo()
    return path


@pytest.fixture
def random_vgg16(tmp_cache, _random_vgg16_file, monkeypatch):
    """``tmp_cache`` whose torch cache holds the session's seeded random VGG16 file (read-only use)."""
    from benchmark.core.weights import weight_path

    target = weight_path("vgg16")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(_random_vgg16_file)
    return target


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The shipped small matrix trained once per session (uninterrupted), then reported: the reference run.

    Through the ``ldct-bench`` command in a child process, as README command 1 does: the matrix asks for
    portable CPU kernels, which must be pinned before torch loads (this process loaded it natively)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("small_ref")
    for args in (["run", "--matrix", "small.yaml"], ["report"]):
        proc = subprocess.run([sys.executable, "-m", "benchmark", *args, "--out", str(out), "--quiet"],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(out.glob("cells/*/DONE"))) == 8
    return out


@pytest.fixture
def cli_main(monkeypatch, capsys):
    """``cli_main(*args)`` runs ``ldct-bench ARGS`` in this process (``benchmark.cli.main``, which turns a
    UserError into its exit code) and returns ``(exit code, stderr)``."""
    import sys

    from benchmark import cli

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["ldct-bench", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    return run
