"""Images stay on the scoring device: the GPU path's denoised tensor (``denoise_images(..., as_tensor=True)``) is
``denoise``'s output row for row (2-D and 3-D models, rows in any order), ``compute_metrics`` keeps a
tensor on its device and windows it once per call, and on a GPU every scorer gets GPU tensors and the
values are the CPU's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import analysis.metrics.engine as engine
from analysis.metrics import compute_metrics
from analysis.scoring_exec import EvalSet, denoise_images
from benchmark.data.base import contiguous_volumes
from models import build_model
from models.dncnn import DnCNN3D

CHEAP = ["psnr", "ssim", "rmse_hu", "gmsd", "niqe", "pique", "vif"]


def _eval_set(rng: np.random.Generator, rows: np.ndarray) -> EvalSet:
    patients = np.array(["A"] * 7 + ["B"] * 5)
    source = rng.normal(40, 150, (12, 24, 24)).astype(np.float32)
    return EvalSet(dose="d", inputs=source[rows], targets=source[rows], patients=patients[rows],
                   images=np.array([f"i{r}" for r in rows]), stamp="", source=source, rows=rows,
                   volumes=contiguous_volumes(list(patients)))  # fmt: skip


@pytest.mark.parametrize("three_d", [False, True])
def test_denoise_as_tensor_is_denoise_row_for_row(rng, three_d):
    torch.manual_seed(0)
    model = (DnCNN3D(depth=3, channels=4) if three_d else build_model("dncnn", {"depth": 3, "channels": 4})).eval()
    ev = _eval_set(rng, np.array([0, 3, 5, 6, 8, 11]))
    for part in (slice(0, 6), slice(1, 4), slice(4, 6)):
        want = denoise_images(model, ev, part, batch_size=2, device="cpu")
        got = denoise_images(model, ev, part, batch_size=2, device="cpu", as_tensor=True)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), want)


def test_compute_metrics_windows_once_and_keeps_tensors(rng, monkeypatch):
    ref = rng.normal(40, 120, (3, 64, 64)).astype(np.float32)
    pred = torch.from_numpy(ref + rng.normal(0, 30, ref.shape).astype(np.float32))
    names = ["psnr", "ssim", "gmsd", "rmse_hu"]
    want = {n: compute_metrics([n], pred.numpy(), ref, batch_size=2)[n] for n in names}  # one metric per call
    calls = []
    real = engine.window_to_unit
    monkeypatch.setattr(engine, "window_to_unit", lambda x, w: calls.append(tuple(x.shape)) or real(x, w))
    got = compute_metrics(names, pred, ref, batch_size=2)
    pred_calls = [c for c in calls if c[0] == 3]  # the whole prediction, once; reference chunks are cached
    assert pred_calls == [(3, 1, 64, 64)]
    for n in names:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)
    assert engine.as_nchw(pred, "pred").data_ptr() == pred.data_ptr()  # no copy of a float32 tensor


@pytest.mark.gpu
def test_gpu_scoring_stays_on_the_gpu_and_equals_the_cpu(rng, monkeypatch):
    ref = rng.normal(40, 120, (4, 256, 256)).astype(np.float32)
    pred_cpu = ref + rng.normal(0, 30, ref.shape).astype(np.float32)
    want = compute_metrics(CHEAP, pred_cpu, ref, device="cpu")
    seen: list[str] = []
    real = engine.get_scorer

    def spying(name, device="cpu"):
        scorer = real(name, device)
        score = scorer.score

        def check(pred, state):
            seen.append(f"{name}:{pred.device.type}")
            return score(pred, state)

        monkeypatch.setattr(scorer, "score", check)
        return scorer

    monkeypatch.setattr(engine, "get_scorer", spying)
    got = compute_metrics(CHEAP, torch.from_numpy(pred_cpu).cuda(), ref, device="cuda")
    assert seen and all(s.endswith(":cuda") for s in seen), seen
    for n in CHEAP:  # float32 GPU kernels: close to the CPU, not bit-equal
        np.testing.assert_allclose(got[n], want[n], rtol=1e-3, atol=1e-3, err_msg=n)

    torch.manual_seed(0)
    model = build_model("dncnn", {"depth": 3, "channels": 4}).eval()
    ev = _eval_set(rng, np.arange(12))
    out = denoise_images(model.cuda(), ev, slice(0, 12), batch_size=4, device="cuda", as_tensor=True)
    assert out.device.type == "cuda"
    np.testing.assert_allclose(out.cpu().numpy(), denoise_images(model.cpu(), ev, slice(0, 12), batch_size=4,
                                                                   device="cpu"), atol=1e-2)  # fmt: skip
