"""Fast runner checks on a one-cell matrix: settings guard, TensorBoard scalars, status, device errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from benchmark.config import parse_matrix
from benchmark.core.device import resolve_device
from benchmark.core.errors import UserError
from benchmark.layout import RunLayout
from benchmark.runner import Runner

ONE = {
    "dataset": {"kind": "synth", "options": {"size": "tiny"}},
    "losses": ["mse"],
    "architectures": [{"name": "dncnn", "kwargs": {"depth": 4, "channels": 8}}],
    "doses": ["25_360"],
    "training": {"epochs": 2, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
    "device": "cpu",
}


def test_changed_training_settings_are_refused_and_nothing_is_lost(tmp_path):
    Runner(parse_matrix(ONE), tmp_path, quiet=True).run()
    before = sorted(p.name for p in tmp_path.rglob("*.pt"))
    changed = {**ONE, "training": {**ONE["training"], "batch_size": 8}}
    with pytest.raises(UserError, match=r"training\.batch_size"):
        Runner(parse_matrix(changed), tmp_path, quiet=True).run()
    assert sorted(p.name for p in tmp_path.rglob("*.pt")) == before


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Runner(parse_matrix({**ONE, "tensorboard": True}), tmp_path, quiet=True).run()
    cell = RunLayout(tmp_path).cells()[0]
    acc = EventAccumulator(str(cell.dir / "tensorboard"))
    acc.Reload()
    hist = RunLayout(tmp_path).history(cell.cell_id)
    assert [e.value for e in acc.Scalars("val_loss")] == pytest.approx(list(hist["val_loss"]), rel=1e-6)


def test_status_cli_lists_cells(tmp_path):
    Runner(parse_matrix(ONE), tmp_path, quiet=True).run()
    r = subprocess.run([sys.executable, "-m", "benchmark.cli", "status", "--out", str(tmp_path), "--csv"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("cell,loss,architecture,dose,seed,status,epochs")
    assert ",done,2/2," in lines[1]


def test_status_of_a_folder_without_run_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmark.cli", "status", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no run here" in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_gpu_is_a_user_error():
    with pytest.raises(UserError, match="no CUDA device"):
        resolve_device("cuda")


def test_a_cell_started_before_a_new_setting_existed_still_resumes(tmp_path):
    """A cell config written before a setting was added (here the scheduler's ``interval``/``warmup``)
    matches today's config with that setting at its default; a real change is still refused."""
    from benchmark.cells import cell_config, expand_cells
    from benchmark.config import parse_matrix
    from benchmark.core.errors import UserError
    from benchmark.layout import RunLayout

    matrix = parse_matrix({"losses": ["mse"], "architectures": ["dncnn"], "doses": ["25_360"]})
    cell = expand_cells(matrix)[0]
    old = cell_config(cell, matrix)
    for key in ("interval", "warmup"):
        del old["training"]["scheduler"][key]
    layout = RunLayout(tmp_path, must_exist=False)
    layout.write_cell_config(cell.cell_id, old)
    layout.write_cell_config(cell.cell_id, cell_config(cell, matrix))  # no error: only defaults were added
    changed = parse_matrix({"losses": ["mse"], "architectures": ["dncnn"], "doses": ["25_360"],
                            "training": {"optimizer": {"lr": 1e-3}}})  # fmt: skip
    with pytest.raises(UserError, match=r"training\.optimizer\.lr"):
        layout.write_cell_config(cell.cell_id, cell_config(expand_cells(changed)[0], changed))
