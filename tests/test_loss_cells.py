"""Every registered loss trains in a matrix cell on the tiny dataset; composites log each term;
adversarial and attention-MSTLF cells resume bit-identically after an interruption (CPU)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from benchmark.config import parse_matrix
from benchmark.layout import DONE, RunLayout
from benchmark.runner import Runner
from losses import LOSSES

pytestmark = pytest.mark.slow

# kwargs that let each loss run on 32x32 patches of a tiny network in a few seconds
SMALL_KWARGS = {
    "ms_ssim": {"scales": 2},
    "mstlf": {"levels": 32},
    "mstlf_attention": {"levels": 32},
    "vgg": {"layers": ["relu1_2", "relu2_2"]},
    "upl": {"depth": 3, "channels": 8},
}


def _matrix(losses: list, *, epochs: int = 2) -> dict:
    return {
        "dataset": {"kind": "synth", "options": {"size": "tiny"}},
        "losses": losses,
        "architectures": [{"name": "dncnn", "kwargs": {"depth": 4, "channels": 8}}],
        "doses": ["25_360"],
        "training": {"epochs": epochs, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
        "device": "cpu",
    }


def test_every_registered_loss_trains_in_a_cell(tmp_path, random_vgg16):
    entries = [{"name": name, "kwargs": SMALL_KWARGS.get(name, {})} for name in LOSSES]
    Runner(parse_matrix(_matrix(entries)), tmp_path, quiet=True).run()
    layout = RunLayout(tmp_path)
    cells = {c.loss: c for c in layout.cells()}
    assert set(cells) == set(LOSSES)
    for name, cell in cells.items():
        assert cell.status == "done", (name, cell.detail)
        hist = layout.history(cell.cell_id)
        assert hist[[f"train_{name}", f"val_{name}"]].notna().all().all()
        if LOSSES[name].adversarial:
            assert f"{name}_critic" in hist.columns  # the critic's own loss is logged


def test_composite_logs_each_term(tmp_path):
    Runner(parse_matrix(_matrix(["0.95 mse + 0.05 wgan_gp"])), tmp_path, quiet=True).run()
    cell = RunLayout(tmp_path).cells()[0]
    hist = RunLayout(tmp_path).history(cell.cell_id)
    for col in ("train_mse", "train_wgan_gp", "val_mse", "val_wgan_gp", "wgan_gp_critic", "wgan_gp_gp"):
        assert col in hist.columns
    # the total is the weighted sum of the terms on the validation set (same images, same weights)
    expected = 0.95 * hist["val_mse"] + 0.05 * hist["val_wgan_gp"]
    pd.testing.assert_series_equal(hist["val_loss"], expected, check_names=False, rtol=1e-6)


@pytest.mark.parametrize(
    "loss",
    ["0.95 mse + 0.05 wgan_gp", {"label": "pix2pix", "terms": [{"name": "l1", "weight": 100}, {"name": "vanilla"}]},
     {"name": "mstlf_attention", "kwargs": {"levels": 32}}],
    ids=["wgan_gp", "pix2pix", "mstlf_attention"],
)
def test_interrupted_cell_resumes_bit_identically(tmp_path, loss):
    matrix = parse_matrix(_matrix([loss], epochs=3))
    Runner(matrix, tmp_path / "straight", quiet=True).run()
    # a crash after epoch 1: only epoch 1's checkpoint survives, then the same command runs again
    Runner(matrix, tmp_path / "crashed", quiet=True).run()
    cell = RunLayout(tmp_path / "crashed").cells()[0]
    for epoch, path in RunLayout(tmp_path / "crashed").checkpoints(cell.cell_id).items():
        if epoch > 1:
            path.unlink()
    RunLayout(tmp_path / "crashed").marker(cell.cell_id, DONE).unlink()
    torch.manual_seed(12345)  # whatever the process did before must not matter
    summary = Runner(matrix, tmp_path / "crashed", quiet=True).run()
    assert summary.trained == [cell.cell_id]
    a = RunLayout(tmp_path / "straight").checkpoints(cell.cell_id)
    b = RunLayout(tmp_path / "crashed").checkpoints(cell.cell_id)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for epoch in a:
        assert a[epoch].read_bytes() == b[epoch].read_bytes(), f"epoch {epoch} differs"
    state = torch.load(b[3], weights_only=True)["train_state"]  # run folders never unpickle objects
    if "wgan_gp" in str(loss) or "vanilla" in str(loss):
        assert state["critic_optimizers"], "the discriminator's optimizer state is checkpointed"
        assert any(k.endswith("discriminator.net.0.weight") or ".discriminator." in k for k in state["loss"])
    if "attention" in str(loss):
        gammas = [v for k, v in state["loss"].items() if k.endswith("gamma")]
        assert gammas, "the attention parameters are checkpointed"
        assert all(float(g.abs().sum()) > 0 for g in gammas), "gamma (initialised at 0) was trained with the generator"
