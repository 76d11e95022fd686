"""The training hot path and its precision settings (``training.precision``, ``channels_last``,
``check_every``): fp32 trains exactly as the step-by-step loop with a read-back per step did, bf16
autocast trains on the CPU, a NaN is still caught within its epoch when checks are deferred, the
split goes onto the GPU when it fits, and D4 augmentation is one gather per batch."""

from __future__ import annotations

import copy
import json
import math
import platform
from typing import Any

import numpy as np
import pytest
import torch

from benchmark.config import TrainingConfig, parse_matrix
from benchmark.core.errors import UserError
from benchmark.core.precision import (
    cpu_model,
    device_name,
    environment,
    float32_matmul,
    record_environment,
    split_placement,
)
from benchmark.data import PairedSlices
from benchmark.runner import step_settings
from benchmark.sampling import sample_volume_patches
from benchmark.train import Diverged, TrainData, build_state, seed_everything, train_epoch
from losses import build_loss
from models import build_model

CPU = torch.device("cpu")


class Batches:
    """The part of :class:`benchmark.train.TrainData` that ``train_epoch`` uses: seeded random batches,
    NaN inputs from step ``nan_at`` on; counts the batches drawn."""

    def __init__(self, steps: int = 12, nan_at: int | None = None, n: int = 3, side: int = 12) -> None:
        self.steps, self.nan_at, self.n, self.side, self.drawn = steps, nan_at, n, side, 0

    def batch(self, step, generator):
        self.drawn += 1
        x = torch.rand(self.n, 1, self.side, self.side, generator=generator)
        y = (x + 0.1 * torch.rand(x.shape, generator=generator)).clamp(0, 1)
        if self.nan_at is not None and step >= self.nan_at:
            x = torch.full_like(x, float("nan"))
        return x, y


def _epoch(state, data: Any, training: TrainingConfig, progress: Any = None) -> dict[str, float]:
    """An epoch under the step settings the runner builds from ``training``."""
    return train_epoch(state, data, CPU, step_settings(training), progress)


def _state(training: TrainingConfig, seed: int = 0, loss: str = "mse"):
    gen = seed_everything(seed)
    model = build_model("dncnn", {"depth": 3, "channels": 4})
    return build_state(model, build_loss([(loss, 1.0, {})]), training, gen, steps=Batches().steps)


# ---------------------------------------------------------------------------------------------- config


def test_precision_settings_are_validated_and_default_to_fp32():
    t = TrainingConfig()
    assert (t.precision, t.channels_last, t.check_every) == ("fp32", False, 16)
    assert TrainingConfig(precision="bf16", channels_last=True).precision == "bf16"
    base = {"losses": ["mse"], "architectures": ["dncnn"], "doses": ["25_360"]}
    with pytest.raises(UserError, match=r"training\.precision"):
        parse_matrix({**base, "training": {"precision": "fp16"}})
    with pytest.raises(UserError, match=r"training\.check_every"):
        parse_matrix({**base, "training": {"check_every": 0}})
    with pytest.raises(UserError, match=r"training\.channel_last.*unknown key"):
        parse_matrix({**base, "training": {"channel_last": True}})


# ---------------------------------------------------------------------------------------------- fp32


def _old_epoch(state, data) -> tuple[dict[str, float], float]:
    """The epoch as the runner trained it before: per step zero, evaluate, float() every term,
    backward, step, and the sums on the host; returns the epoch means and the last step's loss."""
    scheme = state.scheme
    scheme.train()
    opt = scheme.optimizers["G"]
    sums: dict[str, float] = {}
    count = 0
    last = math.nan
    for step in range(data.steps):
        x, y = data.batch(step, state.generator)
        opt.zero_grad(set_to_none=True)
        total, terms = state.loss.compute(state.model(x), y)
        values = {"train_loss": float(total.detach()), **{f"train_{k}": float(v.detach()) for k, v in terms.items()}}
        assert all(math.isfinite(v) for v in values.values())
        total.backward()
        opt.step()
        count += x.shape[0]
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * x.shape[0]
        last = values["train_loss"]
    return {k: v / count for k, v in sums.items()}, last


@pytest.mark.parametrize("check_every", [1, 5, 16])
def test_fp32_epoch_is_bit_identical_to_the_per_step_loop(check_every):
    training = TrainingConfig(check_every=check_every)
    state = _state(training)
    ref_state = copy.deepcopy(state)
    seen: list[tuple[int, float]] = []
    got = _epoch(state, Batches(steps=12), training, lambda s, n, loss: seen.append((s, loss)))
    want, _ = _old_epoch(ref_state, Batches(steps=12))
    assert got == want  # exact: the device sums are float64, summed in the same order
    for a, b in zip(state.model.parameters(), ref_state.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(state.generator.get_state(), ref_state.generator.get_state())
    # the progress callback runs at the read-backs only: every check_every steps and the last
    assert [s for s, _ in seen] == sorted({*range(check_every, 13, check_every), 12})
    assert seen[-1][1] == got["train_loss"]


# ---------------------------------------------------------------------------------------------- NaN


@pytest.mark.parametrize(("check_every", "drawn"), [(1, 6), (4, 8), (100, 12)])
def test_a_nan_is_caught_within_the_epoch_at_the_next_check(check_every, drawn):
    """A NaN from step 5 (0-based) on: immediately with check_every 1, at the next read-back otherwise
    (at the latest the epoch's end), as Diverged naming the term and the epoch."""
    training = TrainingConfig(check_every=check_every)
    state = _state(training)
    state.epoch = 2
    data = Batches(steps=12, nan_at=5)
    with pytest.raises(Diverged) as info:
        _epoch(state, data, training)
    assert info.value.term == "mse"
    assert math.isnan(info.value.value)
    assert data.drawn == drawn
    if check_every > 1:
        assert info.value.epoch == 3


def test_an_error_after_a_deferred_nan_is_reported_as_divergence():
    """Deferred checks let a NaN reach the weights; an error it then causes in a later step (here an
    index computed from the output) is reported as the divergence it follows from."""
    training = TrainingConfig(check_every=50)
    state = _state(training)
    inner = state.model

    class Indexing(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            if torch.isfinite(x).all() and torch.isnan(out).any():  # NaN weights, from the step before
                raise IndexError("index computed from NaN")
            return out

    state.scheme.model = Indexing()
    state.scheme.loss = build_loss([("mse", 1.0, {})])

    class NanOnce(Batches):
        def batch(self, step, generator):
            _, y = super().batch(step, generator)
            return (torch.full_like(y, float("nan")) if step == 3 else y), y

    with pytest.raises(Diverged) as info:
        _epoch(state, NanOnce(steps=12), training)
    assert isinstance(info.value.__cause__, IndexError)


# ---------------------------------------------------------------------------------------------- bf16, tf32, channels_last


def test_bf16_trains_on_the_cpu_under_autocast():
    training = TrainingConfig(precision="bf16")
    state = _state(training)
    dtypes: set[torch.dtype] = set()
    conv = next(m for m in state.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    before = [p.detach().clone() for p in state.model.parameters()]
    logs = _epoch(state, Batches(steps=6), training)
    assert dtypes == {torch.bfloat16}
    assert math.isfinite(logs["train_loss"]) and logs["train_loss"] > 0
    assert all(p.dtype == torch.float32 for p in state.model.parameters())  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(before, state.model.parameters(), strict=True))
    fp32 = _epoch(_state(TrainingConfig()), Batches(steps=6), TrainingConfig())
    assert logs["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)
    assert not torch.is_autocast_enabled("cpu")


def test_channels_last_trains_the_same_values():
    training = TrainingConfig(channels_last=True)
    state = _state(training)
    state.scheme.to(CPU, step_settings(training))
    conv = next(m for m in state.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    got = _epoch(state, Batches(steps=4), training)
    want = _epoch(_state(TrainingConfig()), Batches(steps=4), TrainingConfig())
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)


def test_tf32_is_switched_on_for_the_block_and_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    with float32_matmul("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
    after = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    assert after == before
    with float32_matmul("fp32"):
        assert torch.get_float32_matmul_precision() == before[2]


# ---------------------------------------------------------------------------------------------- placement


def test_split_placement_from_free_memory():
    cuda = torch.device("cuda", 0)
    gib = 2**30
    assert split_placement(10 * gib, CPU) == "host"  # the CPU never moves anything
    assert split_placement(1 * gib, cuda, free_bytes=40 * gib) == "device"
    assert split_placement(9 * gib, cuda, free_bytes=40 * gib) == "device"
    assert split_placement(10 * gib, cuda, free_bytes=40 * gib) == "pinned"  # not under a quarter
    assert split_placement(11 * gib, cuda, free_bytes=40 * gib) == "pinned"
    assert split_placement(1, cuda, free_bytes=0) == "pinned"
    assert split_placement(10 * gib, cuda, free_bytes=40 * gib, fraction=0.5) == "device"


def _slices(n: int = 6, side: int = 24) -> PairedSlices:
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(n, side, side, generator=g) * 1000 - 500).numpy()
    y = (torch.rand(n, side, side, generator=g) * 1000 - 500).numpy()
    return PairedSlices(inputs=x, targets=y, patients=np.array([f"p{i // 3}" for i in range(n)]),
                        slice_ids=np.arange(n), condition="25_360", split="train")  # fmt: skip


def test_train_data_stays_on_the_host_on_cpu():
    data = TrainData(_slices(), TrainingConfig(patch_size=8, batch_size=4, augment=True), device=CPU)
    assert data.placement == "host" and data.x.device.type == "cpu"


@pytest.mark.gpu
def test_training_split_is_on_the_gpu_and_draws_the_same_patches():
    cuda = torch.device("cuda")
    training = TrainingConfig(patch_size=8, batch_size=4, augment=True)
    on_gpu = TrainData(_slices(), training, device=cuda)
    on_cpu = TrainData(_slices(), training)
    assert on_gpu.placement == "device" and on_gpu.x.is_cuda and on_gpu.y.is_cuda
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for step in range(on_cpu.steps):
        (xg, yg), (xc, yc) = on_gpu.batch(step, g1), on_cpu.batch(step, g2)
        assert xg.is_cuda and torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)


# ---------------------------------------------------------------------------------------------- augmentation


def test_volume_augmentation_matches_the_per_patch_rotations(generator):
    """3-D patches: the one-gather D4 augmentation equals rot90/flip patch by patch, drawing the same numbers."""
    inputs, targets = torch.rand(10, 12, 12, generator=generator), torch.rand(10, 12, 12, generator=generator)
    starts = torch.arange(0, 8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x, y, first = sample_volume_patches(inputs, targets, 9, [3, 6, 6], starts, g1, augment=True)
    x0, y0, first0 = sample_volume_patches(inputs, targets, 9, [3, 6, 6], starts, g2)
    k = torch.randint(0, 4, (9,), generator=g2)
    flip = torch.randint(0, 2, (9,), generator=g2)
    assert torch.equal(first, first0) and torch.equal(g1.get_state(), g2.get_state())
    for i in range(9):
        want_x, want_y = torch.rot90(x0[i], int(k[i]), (-2, -1)), torch.rot90(y0[i], int(k[i]), (-2, -1))
        if flip[i]:
            want_x, want_y = want_x.flip(-1), want_y.flip(-1)
        assert torch.equal(x[i], want_x) and torch.equal(y[i], want_y)


# ---------------------------------------------------------------------------------------------- environment


def test_environment_is_recorded_once_per_environment(tmp_path):
    env = environment(CPU, "bf16", True)
    assert env["precision"] == "bf16" and env["channels_last"] is True
    assert env["torch"] == torch.__version__ and env["device_name"].startswith("cpu")
    assert set(env) >= {"device", "device_name", "cuda", "cudnn"}
    assert environment(CPU, "bf16", True) == env  # nothing that changes between two runs
    path = tmp_path / "environment.json"
    record_environment(path, 1, env)
    record_environment(path, 4, env)  # resumed on the same machine: nothing new
    assert json.loads(path.read_text()) == [{"from_epoch": 1, **env}]
    other = {**env, "torch": "0.0"}
    record_environment(path, 6, other)
    assert json.loads(path.read_text()) == [{"from_epoch": 1, **env}, {"from_epoch": 6, **other}]


CPUINFO_TWO_PROCESSORS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx512f

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: other
"""


def test_cpu_model_names_the_first_processor_with_vendor_family_and_model():
    """A cell records the processor, not ``platform.processor()``'s ``x86_64``: two AVX-512 hosts of other
    vendors or generations round native kernels differently. Parsed from ``/proc/cpuinfo`` text (first block
    only); without it, the platform's name."""
    assert cpu_model(CPUINFO_TWO_PROCESSORS) == "Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel family 6 model 143)"
    assert cpu_model("vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n") == "AMD EPYC (AuthenticAMD)"
    assert cpu_model("") == (platform.processor() or platform.machine())
    assert device_name(CPU) == f"cpu {cpu_model()}"
