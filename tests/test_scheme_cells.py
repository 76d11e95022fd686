"""GAN-framework cells in a matrix: pix2pix, CycleGAN and UNIT, each with its baseline and with MSTLF
(average, attention), train on the tiny data, log every network's terms, resume bit-identically after
an interruption, are scored and appear in the report's tables; bad scheme input exits 2 before
training, naming the field."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from analysis.pipeline import analyze_run
from analysis.report import write_report
from analysis.scoring import ScoreOptions
from benchmark.config import parse_matrix
from benchmark.core.errors import UserError
from benchmark.layout import DONE, RunLayout
from benchmark.runner import Runner
from benchmark.validate import check_matrix

pytestmark = pytest.mark.slow

SMALL_D = {"discriminator_kwargs": {"channels": 4}}
FRAMEWORKS = [
    {"name": "unet", "label": "pix2pix", "kwargs": {"depth": 2, "channels": 4}, "scheme": "pix2pix", "scheme_kwargs": SMALL_D},
    {"name": "resnet_gen", "label": "cyclegan", "kwargs": {"channels": 4, "blocks": 1}, "scheme": "cyclegan",
     "scheme_kwargs": {**SMALL_D, "pool_size": 2}},
    {"name": "unit", "label": "unit", "kwargs": {"channels": 4, "n_res": 2}, "scheme": "unit", "scheme_kwargs": SMALL_D},
]
LOSSES = ["none", {"label": "mstlf_avg", "terms": [{"name": "mstlf", "weight": 0.001, "kwargs": {"levels": 16}}]},
          {"name": "mstlf_attention", "kwargs": {"levels": 16}}]  # fmt: skip


def _matrix(losses: list, architectures: list, *, epochs: int = 2, **training) -> dict:
    return {
        "dataset": {"kind": "synth", "options": {"size": "tiny"}},
        "losses": losses,
        "architectures": architectures,
        "doses": ["25_360"],
        "training": {"epochs": epochs, "batch_size": 2, "patch_size": 32, "patches_per_epoch": 2, "val_max_images": 2,
                     "disjoint_patients": True, "optimizer": {"name": "adam", "lr": 2e-4, "kwargs": {"betas": [0.5, 0.999]}},
                     **training},
        "evaluation": {"metrics": ["psnr", "rmse_hu"], "max_images": 2},
        "device": "cpu",
    }


def test_framework_cells_train_are_scored_and_reported(tmp_path):
    matrix = parse_matrix(_matrix(LOSSES, FRAMEWORKS))
    summary = Runner(matrix, tmp_path, quiet=True).run()
    assert len(summary.trained) == 9 and not summary.failed and not summary.diverged
    layout = RunLayout(tmp_path)
    expected = {
        "pix2pix": {"train_G_gan", "train_l1", "train_D"},
        "cyclegan": {"train_G_gan", "train_F_gan", "train_cycle_A", "train_cycle_B", "train_idt_A", "train_idt_B",
                     "train_D_A", "train_D_B"},
        "unit": {"train_G_gan_A", "train_G_gan_B", "train_kl_A", "train_rec_B", "train_cycle_kl_A", "train_cycle_A",
                 "train_D_A", "train_D_B"},
    }  # fmt: skip
    for cell in layout.cells():
        hist = layout.history(cell.cell_id)
        cols = set(hist.columns)
        assert expected[cell.architecture] <= cols, (cell.cell_id, sorted(cols))
        assert {"val_loss", "val_l1"} <= cols
        if cell.loss == "mstlf_avg":  # the texture term goes on both cycle reconstructions in the unpaired frameworks
            want = {"train_mstlf"} if cell.architecture == "pix2pix" else {"train_mstlf_A", "train_mstlf_B"}
            assert want <= cols, cell.cell_id
        assert hist.drop(columns=["seconds"], errors="ignore").notna().all().all(), cell.cell_id
    analyze_run(tmp_path, ScoreOptions(metrics=["psnr", "rmse_hu"], max_images=2, progress=False))
    report = write_report(tmp_path).read_text()
    table = pd.read_csv(tmp_path / "analysis" / "tables" / "metric_psnr.csv")
    text = table.to_string()
    for arch in ("pix2pix", "cyclegan", "unit"):
        assert arch in text and arch in report
    for loss in ("none", "mstlf_avg", "mstlf_attention"):
        assert loss in text


@pytest.mark.parametrize("framework", FRAMEWORKS, ids=[f["label"] for f in FRAMEWORKS])
def test_framework_cell_resumes_bit_identically(tmp_path, framework):
    matrix = parse_matrix(_matrix([LOSSES[2]], [framework], epochs=3))
    Runner(matrix, tmp_path / "straight", quiet=True).run()
    Runner(matrix, tmp_path / "crashed", quiet=True).run()
    crashed = RunLayout(tmp_path / "crashed")
    cell = crashed.cells()[0]
    for epoch, path in crashed.checkpoints(cell.cell_id).items():
        if epoch > 1:
            path.unlink()
    crashed.marker(cell.cell_id, DONE).unlink()
    torch.manual_seed(12345)  # whatever the process did before must not matter
    assert Runner(matrix, tmp_path / "crashed", quiet=True).run().trained == [cell.cell_id]
    a = RunLayout(tmp_path / "straight").checkpoints(cell.cell_id)
    b = crashed.checkpoints(cell.cell_id)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for epoch in a:
        assert a[epoch].read_bytes() == b[epoch].read_bytes(), f"epoch {epoch} differs"
    state = torch.load(b[3], weights_only=True)["train_state"]  # run folders never unpickle objects
    assert set(state["optimizers"]) == {"G", "D"} and all(v is not None for v in state["optimizers"].values())
    assert state["networks"], "the scheme's own networks are checkpointed"
    if framework["scheme"] == "cyclegan":
        assert {"F", "D_A", "D_B"} == set(state["networks"])
        assert len(state["scheme"]["pools"]["A"]["images"]) == 2, "the history pool is checkpointed"


def _bad(tmp_path, **changes) -> str:
    data = copy.deepcopy(_matrix(["none"], [FRAMEWORKS[1]]))
    for key, value in changes.items():
        target = data
        *path, last = key.split(".")
        for p in path:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(last) if last.isdigit() else last] = value
    matrix = parse_matrix(data)
    with pytest.raises(UserError) as err:
        check_matrix(matrix)
        Runner(matrix, tmp_path / "run", quiet=True).run()
    assert not (tmp_path / "run" / "cells").exists() or not any((tmp_path / "run" / "cells").iterdir()), "nothing trained"
    return str(err.value)


def test_bad_scheme_input_is_refused_before_training(tmp_path):
    assert "architectures[0].scheme" in _bad(tmp_path, **{"architectures.0.scheme": "cyclegann"})
    msg = _bad(tmp_path, losses=["wgan_gp"])
    assert "losses[0]" in msg and "'cyclegan'" in msg and "discriminator" in msg
    msg = _bad(tmp_path, **{"architectures.0.scheme_kwargs": {"lambda_cycl": 1}})
    assert "architectures[0].scheme_kwargs" in msg and "lambda_cycle" in msg
    msg = _bad(tmp_path, **{"architectures.0.kwargs": {"channels": 4, "blocks": 1, "out_channels": 2, "residual": False}})
    assert "architectures[0]" in msg and "(2, 2, 32, 32)" in msg
    msg = _bad(tmp_path, **{"architectures.0": {"name": "dncnn", "kwargs": {"depth": 3}, "scheme": "unit"}})
    assert "architectures[0].name" in msg and "encode" in msg and "unit" in msg
    msg = _bad(tmp_path, **{"dataset.options": {"size": "tiny", "patients": 3}})  # one training patient
    assert "training.disjoint_patients" in msg and "2 training patients" in msg
    msg = _bad(tmp_path, losses=["none"], **{"architectures.0": {"name": "dncnn", "kwargs": {"depth": 3}}})
    assert "losses[0] (none)" in msg and "supervised" in msg
