"""``benchmarks/preset_cost.py`` (issue #21 §4): its step count is the runner's, its hours are the plain
arithmetic of cells x steps x step time, and every shipped preset gets a count."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import preset_cost

from benchmark.cells import expand_cells
from benchmark.config import dump_yaml, load_matrix, preset_names
from benchmark.layout import RunLayout
from benchmark.runner import Runner
from benchmark.train import steps_per_epoch

CRITIC_STEPS = 2


def _tiny_matrix(tmp_path: Path) -> Path:
    """2 cells on the 96² tiny data: 2 training patients x 4 slices = 8 slices, batch 3, no
    patches_per_epoch, so its one epoch is ceil(8 / 3) = 3 steps, the last one short; one cell adds a WGAN-GP
    critic with ``CRITIC_STEPS`` updates per step."""
    data = {
        "name": "cost",
        "dataset": {"kind": "synth", "options": {"size": "tiny", "patients": 4, "val_patients": 1, "test_patients": 1}},
        "losses": ["l1", {"label": "l1_wgan", "terms": [
            {"name": "l1", "weight": 0.9},
            {"name": "wgan_gp", "weight": 0.1, "kwargs": {"critic_steps": CRITIC_STEPS, "discriminator_kwargs": {"channels": 4}}},
        ]}],
        "architectures": [{"name": "dncnn", "kwargs": {"depth": 3, "channels": 8}}],
        "doses": ["25_720"],
        "training": {"epochs": 1, "batch_size": 3, "patch_size": 32, "val_max_images": 2},
        "evaluation": {"metrics": ["psnr"]},
        "device": "cpu",
    }  # fmt: skip
    path = tmp_path / "cost.yaml"
    path.write_text(dump_yaml(data))
    return path


def _adam_steps(state: dict) -> int:
    return int(next(iter(state["state"].values()))["step"])


def test_step_count_is_the_runners(tmp_path, tmp_cache):
    """The runner trains the tiny matrix; each cell's optimizer took exactly the steps the script counts,
    and its critic ``CRITIC_STEPS`` times as many, which the timed step's update count says too."""
    path = _tiny_matrix(tmp_path)
    c = preset_cost.count(str(path))
    assert (c.cells, c.train_slices, c.steps_per_epoch, c.steps_per_cell) == (2, 8, 3, 3)
    assert c.total_steps == 6
    out = tmp_path / "run"
    summary = Runner(load_matrix(path), out, quiet=True).run()
    assert len(summary.trained) == 2, summary.lines()
    layout = RunLayout(out)
    for cell in expand_cells(load_matrix(path)):
        ckpt = torch.load(layout.checkpoint_path(cell.cell_id, 1), weights_only=True)
        ts = ckpt["train_state"]
        assert _adam_steps(ts["optimizer"]) == c.steps_per_cell, cell.cell_id
        critics = list(ts["critic_optimizers"].values())
        assert [_adam_steps(o) for o in critics] == ([c.steps_per_cell * CRITIC_STEPS] if "wgan" in cell.cell_id else [])
    for i, combo in enumerate(c.combinations):  # the timed step is the runner's step: same updates
        r = preset_cost.time_combination({"matrix": str(path), "combo": i, "device": "cpu", "warmup": 1, "repeats": 1,
                                          "eval": "all"})  # fmt: skip
        assert r["updates_per_step"] == (1 + CRITIC_STEPS if "wgan" in combo.label else 1)
        assert r["step_ms"] > 0 and r["step_cpu_ms"] > 0
        assert min(r["fwd_ms_per_slice"]) > 0 and min(r["terms_ms_per_slice"]) > 0  # [wall, CPU] per slice


def test_assumed_step_times_are_plain_arithmetic(capsys):
    """redcnn_wgan: 12 cells per loss, 50 epochs x ceil(16384 / 64) = 256 steps; 10 ms and 60 ms a step."""
    code = preset_cost.main(["--preset", "redcnn_wgan", "--assume-step-ms", "10",
                             "--assume-step-ms", "redcnn/mse_wgan_gp=60", "--json"])  # fmt: skip
    assert code == 0
    (p,) = json.loads(capsys.readouterr().out)["presets"]
    assert (p["cells"], p["steps_per_cell"], p["total_steps"]) == (24, 50 * 256, 24 * 50 * 256)
    hours = {x["label"]: x["train_hours"] for x in p["combinations"]}
    assert hours["redcnn/mse"] == pytest.approx(12 * 12800 * 0.010 / 3600)  # 0.4267 h
    assert hours["redcnn/mse_wgan_gp"] == pytest.approx(12 * 12800 * 0.060 / 3600)  # 2.56 h
    assert p["train_hours"] == pytest.approx((12 * 12800 * 0.010 + 12 * 12800 * 0.060) / 3600)
    # a combination without a time is refused, naming it
    assert preset_cost.main(["--preset", "redcnn_wgan", "--assume-step-ms", "redcnn/mse=10"]) == 2
    assert "redcnn/mse_wgan_gp" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n.removesuffix(".yaml") for n in preset_names()])
def test_every_preset_gets_a_count(name):
    matrix = load_matrix(name)
    c = preset_cost.count(name)
    sizes = preset_cost.split_sizes(matrix)
    assert c.cells == len(expand_cells(matrix)) > 0
    assert c.steps_per_epoch == steps_per_epoch(matrix.training, sizes["train"]) > 0
    assert c.steps_per_cell == matrix.training.epochs * c.steps_per_epoch
    assert c.total_steps == c.cells * c.steps_per_cell
    assert sum(x.cells for x in c.combinations) == c.cells
    if matrix.training.patches_per_epoch:
        assert c.steps_per_epoch == math.ceil(matrix.training.patches_per_epoch / matrix.training.batch_size)
    assert c.scored_epochs >= 1 and c.val_reads_per_epoch and c.eval_reads_per_scoring
