"""Trajectory scoring on a tiny real run folder (real checkpoints of small DnCNNs, an in-memory dataset):
values match scikit-image on the denoised slices, reruns compute nothing, new metrics and rewritten
checkpoints are scored alone, the reference cache is shared, unavailable metrics are recorded; the
LDCT-input baseline equals the metrics of the dataset's inputs against its targets and is scored once."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

import analysis.metrics as metrics_pkg
import analysis.scoring_exec as scoring_exec
from analysis.metrics.engine import compute_metrics as unspied_compute_metrics
from analysis.schema import BASELINE_COLUMNS, COLUMNS
from analysis.scoring import ScoreOptions, load_input_baseline, load_trajectories, score_run
from analysis.scoring_exec import select_images
from analysis.scoring_plan import epochs_to_score
from benchmark.cells import cell_config, expand_cells
from benchmark.checkpoint import FORMAT_VERSION, load_model, save_checkpoint
from benchmark.config import parse_matrix
from benchmark.core.conventions import window_to_unit
from benchmark.core.errors import UserError
from benchmark.data import DATASETS, Dataset, DatasetInfo, DatasetOptions, PairedSlices
from benchmark.evaluate import denoise
from benchmark.layout import DONE, UNAVAILABLE, RunLayout
from models import build_model

SIZE = 40
ARCH_KW = {"depth": 3, "channels": 8}


class TinyOptions(DatasetOptions):
    slices: int = 6


class TinyDataset(Dataset):
    """Three patients of smooth phantoms with Gaussian noise whose sd grows as the dose falls."""

    kind = "tiny_test"
    Options = TinyOptions

    def conditions(self) -> list[str]:
        return ["25_360", "10_180"]

    def load(self, split, condition, *, epoch=None, seed=None) -> PairedSlices:
        n = self.options.slices  # type: ignore[attr-defined]
        gen = np.random.default_rng(zlib.crc32(f"{split}/{condition}".encode()))
        yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
        targets = np.stack([-1000 + 1040 * (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.16) + 60 * np.sin(6 * xx + i)
                            for i in range(n)]).astype(np.float32)  # fmt: skip
        sd = {"25_360": 20.0, "10_180": 45.0}[condition]
        inputs = (targets + gen.normal(0, sd, targets.shape)).astype(np.float32)
        patients = np.array([f"P{i % 3}" for i in range(n)])
        ids = np.array([f"P{i % 3}/{i:03d}" for i in range(n)])
        return PairedSlices(inputs, targets, patients, ids, condition, split)


def make_run(out: Path, monkeypatch, *, losses=("mse", "l1"), doses=("25_360",), epochs: int = 3,
             metrics=("psnr", "ssim", "rmse_hu", "pique", "lpips"), every: int = 1) -> RunLayout:  # fmt: skip
    """Write a finished run folder as the runner does (resolved matrix, cell configs, one checkpoint per
    epoch, history.csv, DONE) with small randomly initialised DnCNNs instead of training."""
    monkeypatch.setitem(DATASETS, TinyDataset.kind, DatasetInfo(TinyDataset, "three patients of noisy phantoms"))
    matrix = parse_matrix({
        "dataset": {"kind": TinyDataset.kind}, "losses": list(losses), "doses": list(doses),
        "architectures": [{"name": "dncnn", "kwargs": ARCH_KW}],
        "training": {"epochs": epochs}, "evaluation": {"metrics": list(metrics), "every": every, "batch_size": 4},
    })  # fmt: skip
    layout = RunLayout(out, must_exist=False)
    layout.write_matrix(matrix)
    for k, cell in enumerate(expand_cells(matrix)):
        cfg = cell_config(cell, matrix)
        layout.write_cell_config(cell.cell_id, cfg)
        torch.manual_seed(k)
        model = build_model("dncnn", ARCH_KW)
        rows = []
        for e in range(1, epochs + 1):
            with torch.no_grad():
                model.body[-1].weight.mul_(0.5)  # the residual shrinks: outputs change every epoch
            save_checkpoint(layout.checkpoint_path(cell.cell_id, e),
                            {"format_version": FORMAT_VERSION, "epoch": e, "cell": cfg, "model": model.state_dict()})  # fmt: skip
            layout.append_timing(cell.cell_id, e, 1.0)
            rows.append({"epoch": e, "train_loss": 1 / e + k, "val_loss": 1.1 / e + k, "lr": 1e-4})
        layout.write_history(cell.cell_id, rows)
        layout.write_marker(cell.cell_id, DONE, {"epochs": epochs})
    return layout


class Spy:
    """Counts the (metric) work handed to ``compute_metrics`` and the reference caches it gets."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[list[str]] = []
        self.caches: set[int] = set()
        real = scoring_exec.compute_metrics

        def spy(names, *args, **kwargs):
            self.calls.append(list(names))
            self.caches.add(id(kwargs.get("ref_cache")))
            return real(names, *args, **kwargs)

        monkeypatch.setattr(scoring_exec, "compute_metrics", spy)  # where the scoring calls it

    @property
    def evaluations(self) -> int:
        return sum(len(c) for c in self.calls)


def test_epoch_and_image_selection():
    assert epochs_to_score([1, 2, 3, 4, 5], 2) == [2, 4, 5]
    assert epochs_to_score([3, 1, 2], 1) == [1, 2, 3]
    assert epochs_to_score([], 3) == []
    np.testing.assert_array_equal(select_images(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(select_images(3, None), [0, 1, 2])


@pytest.mark.slow
def test_score_run_values_cache_and_incremental(tmp_path, tmp_cache, monkeypatch):
    layout = make_run(tmp_path / "run", monkeypatch, every=2)
    spy = Spy(monkeypatch)
    s1 = score_run(layout.out, ScoreOptions(progress=False))
    assert s1.checkpoints == 4 and s1.checkpoints_scored == 4  # epochs 2 and 3 of two cells
    assert "lpips" in s1.unavailable and "weights fetch" in s1.unavailable["lpips"]
    assert s1.metric_evaluations == 4 * 4 and s1.baseline_evaluations == 4  # + the LDCT input, once per dose
    assert spy.evaluations == s1.metric_evaluations + s1.baseline_evaluations
    assert len(spy.caches) == 1  # one reference cache for the dose, shared by the input, both cells and all epochs
    traj = load_trajectories(layout.out)
    assert list(traj.columns) == COLUMNS
    met = traj[traj["source"] == "metric"]
    assert sorted(met["epoch"].unique()) == [2, 3] and set(met["metric"]) == {"psnr", "ssim", "rmse_hu", "pique"}
    hist = traj[traj["source"] == "history"]
    assert sorted(hist["epoch"].unique()) == [1, 2, 3] and set(hist["metric"]) == {"train_loss", "val_loss"}
    # the stored PSNR is scikit-image's on the windowed denoised slice
    cell = "l1__dncnn__25_360__s0"
    ds = TinyDataset(TinyOptions())
    sl = ds.load("test", "25_360")
    pred = denoise(load_model(layout.checkpoints(cell)[3]), sl.inputs)
    ref = [peak_signal_noise_ratio(window_to_unit(sl.targets[i]), window_to_unit(pred[i]), data_range=1.0)
           for i in range(len(sl))]  # fmt: skip
    got = met[(met["cell"] == cell) & (met["epoch"] == 3) & (met["metric"] == "psnr")].set_index("image")["value"]
    np.testing.assert_allclose(got.loc[sl.slice_ids].to_numpy(), ref, rtol=1e-4)
    assert set(met["patient"]) == {"P0", "P1", "P2"}
    ex = np.load(layout.example(cell))
    assert int(ex["epoch"]) == 3 and ex["output"].shape == (SIZE, SIZE)
    unav = pd.read_csv(layout.analysis_file(UNAVAILABLE))
    assert list(unav["metric"]) == ["lpips"]

    # the LDCT-input baseline: its own file, the metrics of the dataset's inputs vs targets (computed here
    # independently, without the scorer's chunks or reference cache), on the same images; not in trajectories
    base = load_input_baseline(layout.out)
    assert list(base.columns) == BASELINE_COLUMNS and set(base["dose"]) == {"25_360"}
    assert set(base["metric"]) == set(met["metric"]) and set(base["image"]) == set(met["image"])
    assert not traj["cell"].astype(str).str.contains("input").any()
    direct = unspied_compute_metrics(["psnr", "ssim", "rmse_hu", "pique"], sl.inputs, sl.targets)
    for name, values in direct.items():
        got = base[base["metric"] == name].set_index("image")["value"].loc[sl.slice_ids].to_numpy()
        np.testing.assert_allclose(got, values, rtol=1e-5, err_msg=name)
    ref = [peak_signal_noise_ratio(window_to_unit(sl.targets[i]), window_to_unit(sl.inputs[i]), data_range=1.0)
           for i in range(len(sl))]  # fmt: skip
    got = base[base["metric"] == "psnr"].set_index("image")["value"].loc[sl.slice_ids].to_numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    rmse = np.sqrt(((sl.inputs.astype(np.float64) - sl.targets) ** 2).mean(axis=(1, 2)))
    got = base[base["metric"] == "rmse_hu"].set_index("image")["value"].loc[sl.slice_ids].to_numpy()
    np.testing.assert_allclose(got, rmse, rtol=1e-4)
    assert abs(rmse.mean() - 20.0) < 1.0  # the planted input noise sd of the tiny dataset at 25_360

    # a rerun computes nothing, neither checkpoints nor the input baseline
    spy.calls.clear()
    s2 = score_run(layout.out, ScoreOptions(progress=False))
    assert s2.metric_evaluations == s2.baseline_evaluations == 0 and spy.evaluations == 0
    pd.testing.assert_frame_equal(load_trajectories(layout.out), traj)
    pd.testing.assert_frame_equal(load_input_baseline(layout.out), base)

    # a new metric is scored alone (4 checkpoints + the input); a rewritten checkpoint is rescored
    spy.calls.clear()
    s3 = score_run(layout.out, ScoreOptions(progress=False, metrics=["psnr", "gmsd"]))
    assert spy.calls == [["gmsd"]] * 5 and s3.metric_evaluations == 4 and s3.baseline_evaluations == 1
    assert set(load_input_baseline(layout.out)["metric"]) == {"psnr", "gmsd"}
    path = layout.checkpoints("mse__dncnn__25_360__s0")[2]
    path.write_bytes(path.read_bytes())  # same content, new modification time
    spy.calls.clear()
    score_run(layout.out, ScoreOptions(progress=False, metrics=["psnr", "gmsd"]))
    assert spy.calls == [["psnr", "gmsd"]]

    # a fixed metric (a new implementation version in the registry) is recomputed everywhere, alone
    from dataclasses import replace

    monkeypatch.setitem(metrics_pkg.METRICS, "gmsd", replace(metrics_pkg.METRICS["gmsd"], version=7))
    spy.calls.clear()
    score_run(layout.out, ScoreOptions(progress=False, metrics=["psnr", "gmsd"]))
    assert spy.calls == [["gmsd"]] * 5
    spy.calls.clear()
    score_run(layout.out, ScoreOptions(progress=False, metrics=["psnr", "gmsd"]))
    assert spy.calls == []


def test_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no cells/"):
        score_run(tmp_path)
    layout = make_run(tmp_path / "run", monkeypatch, epochs=1, losses=("mse",))
    with pytest.raises(UserError, match=r"unknown metric 'psnrr'.*'psnr'"):
        score_run(layout.out, ScoreOptions(metrics=["psnrr"], progress=False))
    with pytest.raises(UserError, match="run `ldct-bench analyze"):
        load_trajectories(layout.out)
