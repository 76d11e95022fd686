"""Issue #19, part B: a pool stops with its parent, data errors are data errors, and every fault listed
under "Tracebacks instead of exit 2" exits 2 naming the path or field (or is skipped with a warning
where skipping loses nothing). Each test here failed before the change it covers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from benchmark.cells import expand_cells
from benchmark.config import parse_matrix
from benchmark.core.errors import UserError
from benchmark.core.processes import Stopped, stop_on_signals
from benchmark.data import open_dataset
from benchmark.layout import ATTEMPTS, CELL_CONFIG, DIVERGED, DONE, RUNNING, RunLayout
from benchmark.sampling import sample_patches
from benchmark.status import _pid_alive, status_table

# one cell, one epoch of two steps on the 96² tiny data (shared with the other tests' cache)
TINY: dict[str, Any] = {
    "dataset": {"kind": "synth", "options": {"size": "tiny"}},
    "losses": ["mse"],
    "architectures": [{"name": "dncnn", "kwargs": {"depth": 3, "channels": 8}}],
    "doses": ["25_360"],
    "training": {"epochs": 1, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
    "evaluation": {"metrics": ["psnr", "rmse_hu"]},
    "device": "cpu",
}


def _matrix(tmp_path: Path, name: str = "m.yaml", **changes: Any) -> str:
    data = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


# ------------------------------------------------------------------------------------ the pool


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_or_killed_pool_parent_takes_its_workers_with_it(tmp_path, sig, cli_main):
    """SIGTERM to the parent of ``run --jobs 2`` mid-matrix stops the workers as Ctrl-C does (exit 143);
    after ``kill -9`` of the parent the workers end too (PR_SET_PDEATHSIG). Either way no worker trains
    on, no cell is left locked or RUNNING, and a rerun finishes every cell."""
    matrix = _matrix(tmp_path, losses=["mse", "l1"], doses=["25_360", "10_180"],
                     training={"epochs": 5, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 32})  # fmt: skip
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "run", "--matrix", matrix, "--out", str(out),
                             "--jobs", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    deadline = time.time() + 240
    while not list(out.glob("cells/*/checkpoints/epoch_001.pt")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no cell finished an epoch in time"
        time.sleep(0.1)
    workers = _children(proc.pid)
    assert workers, "the pool's workers were not found"
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert "interrupted" in err
    deadline = time.time() + 90
    while any(_pid_alive(p) for p in workers):
        assert time.time() < deadline, f"workers still alive after their parent ended: {[p for p in workers if _pid_alive(p)]}"
        time.sleep(0.2)
    layout = RunLayout(out)
    cells = [c.cell_id for c in expand_cells(parse_matrix(yaml.safe_load(Path(matrix).read_text())))]
    done = [c for c in cells if layout.marker(c, DONE).is_file()]
    assert len(done) < len(cells), "the workers trained the whole matrix after their parent ended"
    assert not list(out.glob(f"cells/*/{RUNNING}"))
    code, err = cli_main("run", "--matrix", matrix, "--out", str(out), "--quiet")
    assert code == 0, err
    assert all(layout.marker(c, DONE).is_file() for c in cells)


_SCORING_PARENT = """
import os, time
import typer
from analysis.cli_report import interruptible
from analysis.shards import run_in_workers

def work(out, task, threads):  # a scoring shard that would run for 10 minutes
    with open(os.path.join(out, f"worker{task}.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
    return task, None

def main(out: str):
    run_in_workers(work, out, [0, 1], progress=False, desc="scoring")

if __name__ == "__main__":
    typer.run(interruptible(main))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_or_killed_scoring_parent_takes_its_workers_with_it(tmp_path, sig):
    """The scoring shards of ``analyze``/``report --jobs N`` (:func:`analysis.shards.run_in_workers`) end
    with their parent: SIGTERM to it stops them and exits 143 with one ``interrupted`` line (the CLI's
    :func:`analysis.cli_report.interruptible`); after ``kill -9`` of it the kernel stops them
    (PR_SET_PDEATHSIG). Before this, both kept scoring as orphans."""
    script = tmp_path / "parent.py"
    script.write_text(_SCORING_PARENT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])})  # fmt: skip
    pid_files = [tmp_path / f"worker{i}.pid" for i in (0, 1)]
    deadline = time.time() + 120
    while not all(f.is_file() and f.read_text() for f in pid_files):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the scoring workers did not start in time"
        time.sleep(0.1)
    workers = [int(f.read_text()) for f in pid_files]
    assert set(workers) <= set(_children(proc.pid))
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert "interrupted" in err and "Traceback" not in err, err[-3000:]
    else:
        assert proc.returncode == -signal.SIGKILL
    deadline = time.time() + 60
    while any(_pid_alive(p) for p in workers):
        assert time.time() < deadline, f"scoring workers still alive after their parent ended: {workers}"
        time.sleep(0.2)


def test_sigterm_and_sighup_stop_the_pool_parent_like_ctrl_c():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        before = signal.getsignal(sig)
        with pytest.raises(KeyboardInterrupt) as info, stop_on_signals():
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises at once
        assert isinstance(info.value, Stopped) and info.value.signum == sig
        assert signal.getsignal(sig) == before  # restored
    # nested (the CLI's `interruptible` around the scoring workers' own): the outer one handles the stop,
    # and a repeat while the inner block unwinds is ignored instead of raising in its cleanup
    before = signal.getsignal(signal.SIGTERM)
    cleaned_up = False
    with pytest.raises(Stopped), stop_on_signals():
        try:
            with stop_on_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the repeat
            time.sleep(0.2)
            cleaned_up = True
    assert cleaned_up, "a repeated SIGTERM interrupted the cleanup"
    assert signal.getsignal(signal.SIGTERM) == before


# ------------------------------------------------------------------------------------ data errors


@pytest.fixture
def nan_data(tmp_cache) -> Any:
    """A private 3-patient tiny synth cache (tests plant NaN in it)."""
    ds = open_dataset("synth", {"size": "tiny", "patients": 3, "slices_per_patient": 2})
    ds.prepare(progress=False)
    return ds


def _plant_nan(path: Path, row: int) -> None:
    arr = np.load(path, mmap_mode="r+")
    arr[row, 5, 7] = np.nan
    arr.flush()
    del arr


@pytest.mark.slow
def test_non_finite_data_is_named_by_split_dose_and_slice(nan_data, tmp_path, cli_main):
    ds = nan_data
    ids = np.load(ds.cache_folder / "test" / "slice_ids.npy")
    _plant_nan(ds.cache_folder / "test" / "target_fbp.npy", 1)
    with pytest.raises(UserError, match=rf"test split of dose '25_360' holds NaN in the targets of slice '{ids[1]}'"):
        open_dataset("synth", ds.options.model_dump()).load("test", "25_360")
    train_ids = np.load(ds.cache_folder / "train" / "slice_ids.npy")
    _plant_nan(ds.cache_folder / "train" / "25_360.npy", 0)
    with pytest.raises(UserError, match=rf"train split of dose '25_360' holds NaN in the inputs of slice '{train_ids[0]}'"):
        open_dataset("synth", ds.options.model_dump()).load("train", "25_360")
    # a run stops with exit 2 naming it; the cell is not marked DIVERGED
    matrix = _matrix(tmp_path, dataset={"kind": "synth", "options": ds.options.model_dump()})
    code, err = cli_main("run", "--matrix", matrix, "--out", str(tmp_path / "out"), "--quiet")
    assert code == 2 and "train split of dose '25_360'" in err, err
    assert not list((tmp_path / "out").glob(f"cells/*/{DIVERGED}"))


@pytest.mark.slow
def test_a_diverged_cell_is_retried_when_asked_or_when_its_settings_or_data_changed(tmp_path, cli_main):
    out = str(tmp_path / "out")
    blow_up = [{"label": "w", "terms": [{"name": "mse", "weight": 1e40}]}]  # inf in float32 at once
    bad = _matrix(tmp_path, "bad.yaml", losses=blow_up)
    code, err = cli_main("run", "--matrix", bad, "--out", out, "--quiet")
    assert code == 0, err
    layout = RunLayout(out)
    (cid,) = [c.cell_id for c in layout.cells()]
    assert layout.marker(cid, DIVERGED).is_file()
    assert "data" in json.loads(layout.marker(cid, DIVERGED).read_text())
    # nothing changed: a rerun leaves it
    code, _ = cli_main("run", "--matrix", bad, "--out", out, "--quiet")
    assert code == 0 and not (layout.cell_dir(cid) / ATTEMPTS).exists()
    # asked: trained again (it diverges again, deterministically); the first attempt is kept
    code, err = cli_main("run", "--matrix", bad, "--out", out, "--quiet", "--retry-diverged")
    assert code == 0, err
    assert (layout.cell_dir(cid) / ATTEMPTS / "1" / DIVERGED).is_file() and layout.marker(cid, DIVERGED).is_file()
    # the data it diverged on differs from today's: retried without being asked
    marker = layout.marker(cid, DIVERGED)
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "data": "tiny-000000000000@1"}))
    code, err = cli_main("run", "--matrix", bad, "--out", out, "--quiet")
    assert code == 0, err
    assert (layout.cell_dir(cid) / ATTEMPTS / "2" / DIVERGED).is_file()
    assert (layout.cell_dir(cid) / ATTEMPTS / "2" / CELL_CONFIG).is_file()  # a fresh start: config set aside
    # its settings changed (a sane weight, same label): retried afresh, and it finishes
    good = _matrix(tmp_path, "good.yaml", losses=[{"label": "w", "terms": [{"name": "mse", "weight": 1.0}]}])
    code, err = cli_main("run", "--matrix", good, "--out", out, "--quiet")
    assert code == 0, err
    assert layout.marker(cid, DONE).is_file() and not layout.marker(cid, DIVERGED).exists()
    assert (layout.cell_dir(cid) / ATTEMPTS / "3" / DIVERGED).is_file()


# ------------------------------------------------------------------------------------ exit 2, not a traceback


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"architectures": [{"name": "dncnn", "kwargs": {"channels": -8}}]}, "architectures[0].kwargs"),
        ({"training": {**TINY["training"], "optimizer": {"name": "adam", "kwargs": {"betass": [0.9, 0.99]}}}},
         "training.optimizer.kwargs"),
        ({"training": {**TINY["training"], "scheduler": {"name": "step", "kwargs": {"gama": 0.5}}}},
         "training.scheduler.kwargs"),
        ({"training": {**TINY["training"], "patch_size": 100000}}, "training.patch_size: 100000 does not fit the 96x96"),
        ({"training": {**TINY["training"], "patch_size": 97}}, "training.patch_size: 97 does not fit the 96x96"),
        ({"training": {**TINY["training"], "batch_size": True}}, "training.batch_size: Input should be a valid integer"),
        ({"losses": [{"name": "mse", "label": "mse\n"}]}, "loss label 'mse\\n'"),
        ({"losses": [{"name": "mse", "label": "m" * 300}]}, "at most 64"),
    ],
    ids=["channels-8", "optimizer-kwargs", "scheduler-kwargs", "patch-100000", "patch-97", "batch-true",
         "label-newline", "label-300"],
)
def test_validate_refuses_what_run_would_refuse(tmp_path, cli_main, change, needle):
    code, err = cli_main("validate", "--matrix", _matrix(tmp_path, **change))
    assert code == 2, err
    assert needle in err and "Traceback" not in err


def test_a_patch_larger_than_the_slices_is_refused_by_the_sampler():
    x = torch.zeros(2, 16, 16)
    with pytest.raises(UserError, match="exceeds the image size 16x16"):
        sample_patches(x, x, 2, 17, torch.Generator().manual_seed(0))


def test_a_bad_device_option_exits_2_naming_it(tmp_path, cli_main):
    code, err = cli_main("run", "--matrix", _matrix(tmp_path), "--out", str(tmp_path / "o"), "--device", "gpu7")
    assert code == 2 and "--device" in err and "gpu7" in err and "ValidationError" not in err, err


def test_validate_warns_about_what_this_machine_lacks_and_strict_refuses_it(tmp_cache, tmp_path, cli_main):
    """No VGG weights here (a private cache): ``validate full.yaml`` checks the matrix and warns with the
    fix; ``--strict`` makes it an error. A data folder that is not on this machine likewise."""
    code, err = cli_main("validate", "--matrix", "full.yaml")
    assert code == 0, err
    assert "warning:" in err and "vgg16" in err and "ldct-bench weights fetch vgg16" in err
    code, err = cli_main("validate", "--matrix", "full.yaml", "--strict")
    assert code == 2 and "vgg16" in err
    dicom = _matrix(tmp_path, dataset={"kind": "mayo2016", "options": {"root": str(tmp_path / "not_here")}},
                    doses=["quarter"])  # fmt: skip
    code, err = cli_main("validate", "--matrix", dicom)
    assert code == 0 and "warning:" in err and "not_here" in err, err
    code, err = cli_main("validate", "--matrix", dicom, "--strict")
    assert code == 2 and "dataset.options.root" in err, err
    # a matrix error stays an error beside a warning
    code, err = cli_main("validate", "--matrix", _matrix(tmp_path, "x.yaml", dataset={"kind": "mayo2016", "options": {
        "root": str(tmp_path / "not_here")}}, doses=["quarter"], training={**TINY["training"], "optimizer": {
        "name": "adam", "kwargs": {"nope": 1}}}))  # fmt: skip
    assert code == 2 and "training.optimizer.kwargs" in err, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[str, Path]:
    """The tiny one-cell matrix, trained (in this process, native kernels)."""
    from benchmark.config import load_matrix
    from benchmark.runner import Runner

    tmp = tmp_path_factory.mktemp("finished")
    matrix = _matrix(tmp)
    summary = Runner(load_matrix(matrix), tmp / "out", quiet=True).run()
    assert len(summary.trained) == 1, summary.lines()
    return matrix, tmp / "out"


@pytest.mark.slow
def test_a_finished_run_reruns_without_writing_and_an_unwritable_folder_is_named(finished_run, cli_main, monkeypatch):
    matrix, out = finished_run
    resolved = out / "matrix.resolved.yaml"
    before = resolved.stat()
    code, err = cli_main("run", "--matrix", matrix, "--out", str(out), "--quiet")
    assert code == 0, err
    after = resolved.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten

    import benchmark.layout as layout_mod

    def read_only(path: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(layout_mod, "atomic_write_text", read_only)
    code, err = cli_main("run", "--matrix", matrix, "--out", str(out), "--quiet")  # a finished run needs no write
    assert code == 0, err
    other = _matrix(out.parent, "other.yaml", description="a new description")  # must be written
    code, err = cli_main("run", "--matrix", other, "--out", str(out), "--quiet")
    assert code == 2 and str(resolved) in err and "Permission denied" in err, err


@pytest.mark.slow
def test_garbage_cell_files_are_skipped_with_a_warning(finished_run, cli_main, tmp_path):
    import shutil

    _, src = finished_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    (out / "cells" / "plain").mkdir()
    (out / "cells" / "plain" / CELL_CONFIG).write_text("just a string\n")
    (cid,) = [p.name for p in (src / "cells").iterdir()]
    (out / "cells" / cid / DONE).write_text("[1, 2, 3]")
    table = status_table(out)
    assert list(table["cell"]) == [cid] and list(table["status"]) == ["done"]
    code, err = cli_main("status", "--out", str(out))
    assert code == 0, err
    assert f"warning: {out / 'cells' / 'plain' / CELL_CONFIG}: not a cell config" in err
    code, err = cli_main("analyze", "--out", str(out))
    assert code == 0, err
    assert "not a cell config" in err


def test_an_empty_dicom_dataset_exits_2_naming_the_folders(tmp_path, tmp_cache, cli_main):
    root = tmp_path / "mayo"
    for p in ("L067", "L109", "L506"):
        for series in ("full_1mm", "quarter_1mm"):
            (root / p / series).mkdir(parents=True)
    matrix = _matrix(tmp_path, dataset={"kind": "mayo2016", "options": {"root": str(root)}}, doses=["quarter"])
    code, err = cli_main("run", "--matrix", matrix, "--out", str(tmp_path / "out"), "--quiet")
    assert code == 2, err
    assert "no paired slices in the train split" in err and str(root / "L067" / "full_1mm") in err, err
    assert "random_" not in err
