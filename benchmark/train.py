"""Small training step functions; :mod:`benchmark.runner` strings them together per cell.

Nothing here owns state beyond its arguments: a :class:`TrainState` is the complete, checkpointable
state of one cell (its training scheme's networks, optimizers and schedules, the loss, RNGs,
history). What one step does is the scheme's (:mod:`benchmark.schemes`).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.checkpoint import pack_numpy_rng, unpack_numpy_rng
from benchmark.config import TrainingConfig
from benchmark.core.conventions import hu_to_net
from benchmark.core.errors import UserError
from benchmark.core.precision import Placement, autocast, float32_matmul, split_placement, to_channels_last
from benchmark.data import PairedSlices
from benchmark.evaluate import predict_batches
from benchmark.sampling import (
    disjoint_halves,
    patient_balanced_weights,
    sample_patches,
    sample_unpaired_patches,
    sample_volume_patches,
    window_starts,
)
from benchmark.schemes import Diverged, Pairing, Scheme, build_scheme
from benchmark.step_settings import StepSettings
from losses.base import CompositeLoss

__all__ = ["Diverged", "TrainData", "TrainState", "build_state", "seed_everything", "steps_per_epoch", "train_epoch",
           "validate"]

_log = logging.getLogger(__name__)


def steps_per_epoch(training: TrainingConfig, n_slices: int) -> int:
    """Optimizer steps in one epoch: ``patches_per_epoch`` (default one per training slice) in batches."""
    return math.ceil((training.patches_per_epoch or n_slices) / training.batch_size)


@dataclass
class TrainState:
    """Everything of one cell that changes during training and goes into a checkpoint: the training
    scheme (:mod:`benchmark.schemes`: networks, optimizers, schedules, pools), the cell's data/noise
    generator, the epoch counter, the history and the early-stopping state."""

    scheme: Scheme
    generator: torch.Generator  # the cell's data/noise generator (CPU), shared with the scheme
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    bad_epochs: int = 0

    @property
    def model(self) -> nn.Module:
        """The LDCT → NDCT generator (validated, checkpointed as ``model``, scored by the analysis)."""
        return self.scheme.model

    @property
    def loss(self) -> CompositeLoss:
        return self.scheme.loss

    @property
    def per_step_schedule(self) -> bool:
        return self.scheme.per_step_schedule

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.scheme.state_dict(),
            "rng": capture_rng(self.generator),
            "epoch": self.epoch,
            "history": list(self.history),
            "best_val": self.best_val,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheme.load_state_dict(state)
        restore_rng(state["rng"], self.generator)
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best_val = float(state["best_val"])
        self.bad_epochs = int(state["bad_epochs"])


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state of the process. CUDA: only the current device's state (the cell's GPU, see
    ``benchmark.runner.setup_process``), so a checkpoint resumes whatever the number of visible GPUs.
    Tensors and plain tuples only (numpy's state packed, :func:`benchmark.checkpoint.pack_numpy_rng`),
    so the checkpoint loads with ``weights_only=True``: nothing in a run folder is unpickled as an object."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(torch.cuda.current_device()) if torch.cuda.is_available() else None,
        "numpy": pack_numpy_rng(np.random.get_state()),  # noqa: NPY002 - the global state other code may use
        "python": random.getstate(),
        "data": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        device = torch.cuda.current_device()
        if isinstance(cuda, (list, tuple)):  # older checkpoints: get_rng_state_all(), one per visible GPU
            if device < len(cuda):
                torch.cuda.set_rng_state(cuda[device], device)
            else:
                _log.warning("checkpoint holds CUDA RNG states of %d GPU(s), none for the current device cuda:%d; "
                             "the CUDA RNG is not restored", len(cuda), device)
        else:
            torch.cuda.set_rng_state(cuda, device)
    np.random.set_state(unpack_numpy_rng(state["numpy"]))  # noqa: NPY002
    random.setstate(state["python"])
    generator.set_state(state["data"])


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and python; return the cell's own CPU generator for data and noise."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def build_state(
    model: nn.Module, loss: CompositeLoss, training: TrainingConfig, generator: torch.Generator, steps: int = 1,
    *, scheme: str = "supervised", scheme_kwargs: dict[str, Any] | None = None,
    build_network: Callable[[], nn.Module] | None = None, field: str = "architectures.scheme",
) -> TrainState:
    """The cell's state: scheme ``scheme`` around ``model`` and ``loss``; ``steps`` is the number of
    optimizer steps per epoch (:func:`steps_per_epoch`), which sizes a per-step schedule."""
    built = build_scheme(scheme, scheme_kwargs, model=model, loss=loss, training=training, rng=generator, steps=steps,
                         build_network=build_network, field=field)  # fmt: skip
    return TrainState(built, generator)


class TrainData:
    """The training split of one condition in network space, with the patch sampler of the model's
    dimensionality and the scheme's pairing: square slice crops for a 2-D model
    (:func:`benchmark.sampling.sample_patches`; unpaired: LD and ND crops of independently drawn slices,
    from disjoint halves of the patients with ``disjoint_patients``,
    :func:`benchmark.sampling.sample_unpaired_patches`),
    ``[d, h, w]`` crops of ``d`` consecutive slices of one contiguous volume for a 3-D model
    (:func:`benchmark.sampling.sample_volume_patches`). ``patient_balanced`` weighs slices, or windows,
    so that every patient is equally likely.

    With a CUDA ``device``, the split is moved onto it when it fits
    (:func:`benchmark.core.precision.split_placement`: under a quarter of the free GPU memory), and
    each batch is gathered there (one indexing op per batch, the same random numbers drawn as on the
    host); otherwise each batch is gathered on the host into pinned memory, for a non-blocking copy.
    On the CPU nothing moves."""

    def __init__(self, slices: PairedSlices, training: TrainingConfig, dims: int = 2, pairing: Pairing = "paired",
                 device: torch.device | None = None) -> None:  # fmt: skip
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if pairing == "unpaired" and dims != 2:
            raise UserError(f"unpaired sampling draws 2-D patches, not {dims}-D ones", field="training.pairing")
        if (training.patch_dims == 3) != (dims == 3):
            want = "[depth, height, width]" if dims == 3 else "an int (square slice patches) or null"
            raise UserError(f"{training.patch_size!r} does not fit a {dims}-D model: give {want}",
                            field="training.patch_size")  # fmt: skip
        self.x = hu_to_net(torch.from_numpy(np.array(slices.inputs, dtype=np.float32)))  # a copy: memmaps are read-only
        self.y = hu_to_net(torch.from_numpy(np.array(slices.targets, dtype=np.float32)))
        self.placement: Placement = "host"
        if device is not None:
            self.placement = split_placement(self.x.nbytes + self.y.nbytes, device)
            if self.placement == "device":
                self.x, self.y = self.x.to(device), self.y.to(device)
        self.dims = dims
        self.starts: torch.Tensor | None = None
        if dims == 3:
            assert isinstance(training.patch_size, list)
            self.starts = window_starts(slices.volumes(), training.patch_size[0])
            groups = np.asarray(slices.patients)[self.starts.numpy()]
        else:
            groups = np.asarray(slices.patients)
        self.weights = patient_balanced_weights(groups) if training.patient_balanced else None
        self.pairing = pairing
        self.halves: tuple[np.ndarray, np.ndarray] | None = None
        if pairing == "unpaired" and training.disjoint_patients:
            self.halves = disjoint_halves(groups)
        self.batch_size, self.patch_size, self.augment = training.batch_size, training.patch_size, training.augment
        n = training.patches_per_epoch or len(slices)
        self.steps = steps_per_epoch(training, len(slices))
        self.last_batch = n - (self.steps - 1) * training.batch_size

    def batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.batch_size if step < self.steps - 1 else self.last_batch
        patch = self.patch_size
        if self.starts is not None:
            assert isinstance(patch, list)
            x, y, _ = sample_volume_patches(self.x, self.y, n, patch, self.starts, generator, augment=self.augment,
                                            weights=self.weights)  # fmt: skip
        elif self.pairing == "unpaired":
            assert not isinstance(patch, list)
            ld, nd = self.halves if self.halves is not None else (None, None)
            x, y, _ = sample_unpaired_patches(self.x, self.y, n, patch, generator, augment=self.augment, ld_rows=ld,
                                              nd_rows=nd, weights_ld=self.weights, weights_nd=self.weights)  # fmt: skip
        else:
            assert not isinstance(patch, list)
            x, y, _ = sample_patches(self.x, self.y, n, patch, generator, augment=self.augment,
                                     weights=self.weights)  # fmt: skip
        if self.placement == "pinned":
            x, y = x.pin_memory(), y.pin_memory()
        return x, y


def train_epoch(
    state: TrainState, data: TrainData, device: torch.device, settings: StepSettings, progress: Any = None
) -> dict[str, float]:
    """One pass of ``data.steps`` batches through the scheme's step under ``settings`` (the runner's
    :func:`benchmark.runner.step_settings` of the matrix's ``training``); returns epoch means of the
    total (``train_loss``), each term (``train_<term>``) and the other logs (e.g. critic values).

    The hot path does not wait for the device: the loss values are summed on it (float64, so the means
    equal those of summing them one by one on the host) and read back only every
    ``settings.check_every`` steps and after the last one. Each read-back checks the sums: a NaN or
    infinite one raises :class:`Diverged` naming its term (``total`` for ``train_loss``) and the epoch
    (``state.epoch + 1``), and calls ``progress(step, steps, mean train_loss so far)``. With
    ``check_every: 1`` every update also checks its terms before its backward pass, as a scheme does
    on its own. ``settings.precision`` (tf32 settings, bf16 autocast of the step) and
    ``settings.channels_last`` (the batches' layout) apply here, to training only; the scheme's step
    gets ``settings`` too (``grad_clip``, the deferred checks)."""
    scheme = state.scheme
    every = settings.check_every
    scheme.train()
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    sums: dict[str, torch.Tensor] = {}
    values: dict[str, float] = {}
    count = 0
    with float32_matmul(settings.precision):
        for step in range(data.steps):
            x, y = data.batch(step, state.generator)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if settings.channels_last:
                x, y = to_channels_last(x), to_channels_last(y)
            try:
                with autocast(settings.precision, device.type):
                    total, terms, logs = scheme.step(x, y, settings)
            except Diverged:
                raise
            except Exception as exc:  # e.g. an index computed from NaN weights of a diverged step
                if settings.defer_checks:
                    _check_sums(_read_sums(sums), state.epoch + 1, cause=exc)
                raise
            if scheme.per_step_schedule:
                scheme.step_schedules()
            n = x.shape[0]
            count += n
            for k, v in {"train_loss": total, **{f"train_{t}": v for t, v in terms.items()}, **logs}.items():
                term = _on(v, device, acc_dtype) * n
                sums[k] = sums[k] + term if k in sums else term
            if (step + 1) % every == 0 or step + 1 == data.steps:
                values = _read_sums(sums)
                _check_sums(values, state.epoch + 1)
                if progress is not None:
                    progress(step + 1, data.steps, values["train_loss"] / count)
    return {k: v / count for k, v in values.items()}


def _on(v: torch.Tensor | float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A logged value as a 0-d ``dtype`` tensor on ``device`` (exact: float32 values fit in float64)."""
    if isinstance(v, torch.Tensor):
        return v.detach().reshape(()).to(device=device, dtype=dtype)
    return torch.tensor(float(v), dtype=dtype, device=device)


def _read_sums(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """The device sums on the host, with one synchronisation."""
    if not sums:
        return {}
    return dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True))


def _check_sums(values: dict[str, float], epoch: int, cause: BaseException | None = None) -> None:
    """:class:`Diverged` for the first non-finite sum: the terms, then the total, then the other logs."""
    terms = [k for k in values if k.startswith("train_") and k != "train_loss"]
    rest = [k for k in values if not k.startswith("train_")]
    for k in [*terms, *(["train_loss"] if "train_loss" in values else []), *rest]:
        if not math.isfinite(values[k]):
            name = "total" if k == "train_loss" else k.removeprefix("train_")
            raise Diverged(name, values[k], epoch) from cause


@torch.no_grad()
def validate(
    state: TrainState, slices: PairedSlices, device: torch.device, batch_size: int, max_images: int | None
) -> dict[str, float]:
    """The scheme's validation loss and terms (:meth:`benchmark.schemes.base.Scheme.validation_terms`:
    the composite loss for supervised cells, the L1 to the NDCT plus the extra terms for GAN
    frameworks) on whole validation slices (mean over slices), on the outputs
    :func:`benchmark.evaluate.predict_batches` gives the analysis's denoising too: batches of
    ``batch_size`` slices for a 2-D model; for a 3-D model, chunks of about ``batch_size`` consecutive
    slices of one volume, denoised in their slab and compared as ``(1, 1, b, H, W)`` volumes."""
    state.scheme.eval()
    sums: dict[str, float] = {}
    n_total = 0
    for rows, pred, (y,) in predict_batches(state.model, [slices.inputs, slices.targets], batch_size=batch_size,
                                            device=device, limit=max_images, volumes=slices.volumes()):  # fmt: skip
        total, terms = state.scheme.validation_terms(pred, y)
        n = len(rows)
        n_total += n
        for k, v in {"val_loss": float(total), **{f"val_{t}": float(v) for t, v in terms.items()}}.items():
            sums[k] = sums.get(k, 0.0) + v * n
    return {k: v / n_total for k, v in sums.items()}


def step_scheduler(state: TrainState, val_loss: float) -> None:
    """The end-of-epoch step of epoch-interval schedules (per-step schedules step in :func:`train_epoch`)."""
    if not state.per_step_schedule:
        state.scheme.step_schedules(val_loss)


def current_lr(state: TrainState) -> float:
    return state.scheme.lr
