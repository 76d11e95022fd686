"""Small training step functions; :mod:`benchmark.runner` strings them together per cell.

Nothing here owns state beyond its arguments: a :class:`TrainState` is the complete, checkpointable
state of one cell (model, optimizers, scheduler, loss, RNGs, history).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark import optim
from benchmark.config import OptimizerConfig, SchedulerConfig, TrainingConfig
from benchmark.core.conventions import hu_to_net
from benchmark.core.errors import UserError
from benchmark.data import PairedSlices
from benchmark.evaluate import predict_batches
from benchmark.sampling import patient_balanced_weights, sample_patches, sample_volume_patches, window_starts
from losses.adversarial import frozen
from losses.base import CompositeLoss

_log = logging.getLogger(__name__)


class Diverged(Exception):
    """A loss term became NaN or infinite."""

    def __init__(self, term: str, value: float, epoch: int | None = None) -> None:
        super().__init__(f"loss term {term!r} became {value}")
        self.term = term
        self.value = value
        self.epoch = epoch


def build_optimizer(params: list[nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return optim.build_optimizer(params, cfg.name, cfg.lr, cfg.kwargs, field="training.optimizer")


def steps_per_epoch(training: TrainingConfig, n_slices: int) -> int:
    """Optimizer steps in one epoch: ``patches_per_epoch`` (default one per training slice) in batches."""
    return math.ceil((training.patches_per_epoch or n_slices) / training.batch_size)


def build_scheduler(opt: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, steps: int = 1) -> Any:
    """The cell's schedule, sized in epochs, or in optimizer steps (``epochs × steps``) when it is
    stepped per step (``interval: step``)."""
    horizon = epochs * steps if cfg.interval == "step" else epochs
    return optim.build_scheduler(opt, cfg.name, cfg.kwargs, horizon, warmup=cfg.warmup, field="training.scheduler")


@dataclass
class TrainState:
    """Everything of one cell that changes during training and goes into a checkpoint."""

    model: nn.Module
    loss: CompositeLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    critic_optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator  # the cell's data/noise generator (CPU)
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    bad_epochs: int = 0
    per_step_schedule: bool = False  # the scheduler steps after every optimizer step (interval: step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.checkpoint_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "critic_optimizers": {k: o.state_dict() for k, o in self.critic_optimizers.items()},
            "rng": capture_rng(self.generator),
            "epoch": self.epoch,
            "history": list(self.history),
            "best_val": self.best_val,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_checkpoint_state(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for k, o in self.critic_optimizers.items():
            o.load_state_dict(state["critic_optimizers"][k])
        restore_rng(state["rng"], self.generator)
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best_val = float(state["best_val"])
        self.bad_epochs = int(state["bad_epochs"])


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state of the process. CUDA: only the current device's state (the cell's GPU, see
    ``benchmark.runner.setup_process``), so a checkpoint resumes whatever the number of visible GPUs."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(torch.cuda.current_device()) if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global state other code may use
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
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    generator.set_state(state["data"])


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and python; return the cell's own CPU generator for data and noise."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def build_state(
    model: nn.Module, loss: CompositeLoss, training: TrainingConfig, generator: torch.Generator, steps: int = 1
) -> TrainState:
    """The cell's state; ``steps`` is the number of optimizer steps per epoch (:func:`steps_per_epoch`),
    which sizes a per-step schedule."""
    params = list(model.parameters()) + loss.generator_parameters()
    opt = build_optimizer(params, training.optimizer)
    critic_opts = {}
    for name, term in loss.adversarial_terms.items():
        cfg = dict(term.optimizer_config)
        cfg_name = cfg.pop("name", "adam")
        lr = cfg.pop("lr", 1e-4)
        critic_opts[name] = optim.build_optimizer(
            list(term.discriminator.parameters()), cfg_name, lr, cfg, field=f"losses.{name}.optimizer"
        )
    return TrainState(model, loss, opt, build_scheduler(opt, training.scheduler, training.epochs, steps), critic_opts,
                      generator, per_step_schedule=training.scheduler.interval == "step")


class TrainData:
    """The training split of one condition in network space, with the patch sampler of the model's
    dimensionality: square slice crops for a 2-D model (:func:`benchmark.sampling.sample_patches`),
    ``[d, h, w]`` crops of ``d`` consecutive slices of one contiguous volume for a 3-D model
    (:func:`benchmark.sampling.sample_volume_patches`). ``patient_balanced`` weighs slices, or windows,
    so that every patient is equally likely."""

    def __init__(self, slices: PairedSlices, training: TrainingConfig, dims: int = 2) -> None:
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if (training.patch_dims == 3) != (dims == 3):
            want = "[depth, height, width]" if dims == 3 else "an int (square slice patches) or null"
            raise UserError(f"{training.patch_size!r} does not fit a {dims}-D model: give {want}",
                            field="training.patch_size")  # fmt: skip
        self.x = hu_to_net(torch.from_numpy(np.array(slices.inputs, dtype=np.float32)))  # a copy: memmaps are read-only
        self.y = hu_to_net(torch.from_numpy(np.array(slices.targets, dtype=np.float32)))
        self.dims = dims
        self.starts: torch.Tensor | None = None
        if dims == 3:
            assert isinstance(training.patch_size, list)
            self.starts = window_starts(slices.volumes(), training.patch_size[0])
            groups = np.asarray(slices.patients)[self.starts.numpy()]
        else:
            groups = np.asarray(slices.patients)
        self.weights = patient_balanced_weights(groups) if training.patient_balanced else None
        self.training = training
        n = training.patches_per_epoch or len(slices)
        self.steps = steps_per_epoch(training, len(slices))
        self.last_batch = n - (self.steps - 1) * training.batch_size

    def batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.training
        n = t.batch_size if step < self.steps - 1 else self.last_batch
        if self.starts is not None:
            assert isinstance(t.patch_size, list)
            x, y, _ = sample_volume_patches(self.x, self.y, n, t.patch_size, self.starts, generator, augment=t.augment,
                                            weights=self.weights)  # fmt: skip
        else:
            assert not isinstance(t.patch_size, list)
            x, y, _ = sample_patches(self.x, self.y, n, t.patch_size, generator, augment=t.augment,
                                     weights=self.weights)  # fmt: skip
        return x, y


def critic_step(
    state: TrainState, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> dict[str, float]:
    """``critic_steps`` discriminator updates per adversarial term, on a detached fake."""
    logs: dict[str, float] = {}
    if not state.loss.adversarial_terms:
        return logs
    with torch.no_grad():
        fake = state.model(x).detach()
    for name, term in state.loss.adversarial_terms.items():
        opt = state.critic_optimizers[name]
        for _ in range(term.critic_steps):
            opt.zero_grad(set_to_none=True)
            d_loss, d_logs = term.critic_loss(y, fake, generator=state.generator)
            d_loss.backward()
            opt.step()
        for k, v in d_logs.items():
            logs[f"{name}_{k}"] = float(v)
    return logs


def generator_step(
    state: TrainState, x: torch.Tensor, y: torch.Tensor, grad_clip: float | None
) -> tuple[float, dict[str, float]]:
    """One optimizer step of the denoiser (and trainable loss parameters) on the composite loss; the
    discriminators are frozen meanwhile (:func:`losses.adversarial.frozen`), so they get no gradients."""
    with contextlib.ExitStack() as stack:
        for term in state.loss.adversarial_terms.values():
            stack.enter_context(frozen(term.discriminator))
        state.optimizer.zero_grad(set_to_none=True)
        pred = state.model(x)
        total, terms = state.loss.compute(pred, y)
        for name, v in terms.items():
            fv = float(v)
            if not math.isfinite(fv):
                raise Diverged(name, fv)
        if not torch.isfinite(total):
            raise Diverged("total", float(total))
        total.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for g in state.optimizer.param_groups for p in g["params"]], grad_clip)
        state.optimizer.step()
    return float(total.detach()), {k: float(v) for k, v in terms.items()}


def train_epoch(
    state: TrainState, data: TrainData, device: torch.device, grad_clip: float | None, progress: Any = None
) -> dict[str, float]:
    """One pass of ``data.steps`` batches; returns epoch means of the total, each term and critic logs."""
    state.model.train()
    state.loss.train()
    sums: dict[str, float] = {}
    count = 0
    for step in range(data.steps):
        x, y = data.batch(step, state.generator)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logs = critic_step(state, x, y, device)
        total, terms = generator_step(state, x, y, grad_clip)
        if state.per_step_schedule and state.scheduler is not None:
            state.scheduler.step()
        n = x.shape[0]
        count += n
        for k, v in {"train_loss": total, **{f"train_{t}": v for t, v in terms.items()}, **logs}.items():
            sums[k] = sums.get(k, 0.0) + v * n
        if progress is not None:
            progress(step + 1, data.steps, total)
    return {k: v / count for k, v in sums.items()}


@torch.no_grad()
def validate(
    state: TrainState, slices: PairedSlices, device: torch.device, batch_size: int, max_images: int | None
) -> dict[str, float]:
    """The composite loss and each term on whole validation slices (mean over slices), on the outputs
    :func:`benchmark.evaluate.predict_batches` gives the analysis's denoising too: batches of
    ``batch_size`` slices for a 2-D model; for a 3-D model, chunks of about ``batch_size`` consecutive
    slices of one volume, denoised in their slab and compared as ``(1, 1, b, H, W)`` volumes."""
    state.model.eval()
    state.loss.eval()
    sums: dict[str, float] = {}
    n_total = 0
    for rows, pred, (y,) in predict_batches(state.model, [slices.inputs, slices.targets], batch_size=batch_size,
                                            device=device, limit=max_images, volumes=slices.volumes()):  # fmt: skip
        total, terms = state.loss.compute(pred, y)
        n = len(rows)
        n_total += n
        for k, v in {"val_loss": float(total), **{f"val_{t}": float(v) for t, v in terms.items()}}.items():
            sums[k] = sums.get(k, 0.0) + v * n
    return {k: v / n_total for k, v in sums.items()}


def step_scheduler(state: TrainState, val_loss: float) -> None:
    """The end-of-epoch step of an epoch-interval schedule (per-step schedules step in :func:`train_epoch`)."""
    if state.scheduler is None or state.per_step_schedule:
        return
    if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        state.scheduler.step(val_loss)
    else:
        state.scheduler.step()


def current_lr(state: TrainState) -> float:
    return float(state.optimizer.param_groups[0]["lr"])
