"""What every training scheme shares: its metadata record, the base class with the networks, optimizers
and schedulers of one cell, and the small helpers of a step (finite checks, clipping, a GAN criterion).

A scheme (:mod:`benchmark.schemes`) is a training framework: supervised denoising, pix2pix, CycleGAN,
UNIT. It declares its networks, optimizers and losses, and exposes

* ``model``: the LDCT → NDCT generator that validation, evaluation and checkpoint selection use (its
  ``state_dict`` is the checkpoint's ``model``, rebuilt by the analysis from the cell's architecture);
* ``loss``: the cell's loss entry. In the supervised scheme it *is* the training loss; in a GAN
  framework it holds only the *extra* terms added to the framework's own objective (e.g. MSTLF), and
  an empty entry (``none``) is the framework's baseline;
* :meth:`Scheme.step`: one training step on a batch ``(x, y)`` (LD, ND; paired or not, as the runner
  samples for :attr:`SchemeInfo.pairing`) under the step's
  :class:`~benchmark.step_settings.StepSettings` (given by the caller, never read from the scheme),
  returning the generator's total, its terms and other logs;
* :meth:`Scheme.validation_terms`: the validation loss of a generator output against its paired NDCT.

The runner, checkpoints, resume, status and the analysis only use this interface, so they work
unchanged for every scheme. All randomness of a step (latent noise, history-pool draws) comes from the
cell's seeded CPU generator ``rng``, so a resumed run is bit-identical on CPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from benchmark import optim
from benchmark.config import OptimizerConfig, SchedulerConfig, TrainingConfig
from benchmark.core.precision import module_to_channels_last, no_autocast
from benchmark.step_settings import StepSettings
from losses.adversarial import frozen
from losses.base import CompositeLoss
from losses.lsgan import lsgan_loss
from losses.vanilla_gan import vanilla_gan_loss

Pairing = Literal["paired", "unpaired"]

# The GAN criteria a scheme may choose: name -> loss(score map, real?) (one definition each, in losses).
GAN_CRITERIA: dict[str, Callable[[torch.Tensor, bool], torch.Tensor]] = {
    "lsgan": lsgan_loss,
    "vanilla": vanilla_gan_loss,
}


class Diverged(Exception):
    """A loss term became NaN or infinite."""

    def __init__(self, term: str, value: float, epoch: int | None = None) -> None:
        super().__init__(f"loss term {term!r} became {value}")
        self.term = term
        self.value = value
        self.epoch = epoch


@dataclass(frozen=True)
class SchemeInfo:
    """Fixed metadata of a registered scheme; the runner and the validation read this, never name lists.

    ``pairing``: how training batches are drawn by default (``training.pairing: auto``).
    ``adversarial_terms``: whether the cell's loss entry may hold terms that own a discriminator
    (WGAN-GP, LSGAN, vanilla); a GAN framework has its own and refuses them.
    ``needs_loss``: the loss entry must name at least one term (supervised); otherwise ``none`` is the
    framework's baseline. ``needs``: methods the architecture must have (UNIT: ``encode``, ``decode``).
    ``dims``: spatial dimensions the scheme trains.
    """

    cls: type[Scheme]
    summary: str
    paper: str = ""
    pairing: Pairing = "paired"
    adversarial_terms: bool = False
    needs_loss: bool = False
    needs: tuple[str, ...] = ()
    dims: tuple[int, ...] = (2,)


def build_scheduler(opt: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, steps: int = 1) -> Any:
    """The cell's schedule on ``opt``, sized in epochs, or in optimizer steps (``epochs × steps``) when
    it is stepped per step (``interval: step``)."""
    horizon = epochs * steps if cfg.interval == "step" else epochs
    return optim.build_scheduler(opt, cfg.name, cfg.kwargs, horizon, warmup=cfg.warmup, field="training.scheduler")


def check_finite(terms: Mapping[str, torch.Tensor | float]) -> None:
    """Raise :class:`Diverged` naming the first NaN/inf term."""
    for name, v in terms.items():
        fv = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
        if not math.isfinite(fv):
            raise Diverged(name, fv)


def parameters(*modules: nn.Module | Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """The trainable parameters of ``modules`` (modules or parameter lists), each once, in order."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for m in modules:
        for p in m.parameters() if isinstance(m, nn.Module) else m:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


@contextlib.contextmanager
def all_frozen(*modules: nn.Module) -> Iterator[None]:
    """:func:`losses.adversarial.frozen` for several modules (the discriminators during a generator step)."""
    with contextlib.ExitStack() as stack:
        for m in modules:
            stack.enter_context(frozen(m))
        yield


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (the frameworks' L1 reconstruction/cycle/identity terms)."""
    return (a - b).abs().mean()


class Scheme:
    """Base of the training schemes: the generator ``model``, the loss entry ``loss``, extra
    ``networks`` by role, and named ``optimizers`` with one learning-rate schedule each (the matrix's
    ``training.scheduler``, applied to every optimizer of the scheme unless a subclass says otherwise).

    Subclasses implement :meth:`step`; :meth:`validation_terms` defaults to the L1 distance of the
    generator output to the paired NDCT (``l1``, the validation loss) plus each non-adversarial term
    of ``loss`` on the same pair (logged, not summed in).

    ``training`` is read at construction only (optimizers, schedules); what a step needs comes with
    each call as :class:`~benchmark.step_settings.StepSettings`.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, model: nn.Module, loss: CompositeLoss, training: TrainingConfig, rng: torch.Generator,
                 steps: int = 1) -> None:  # fmt: skip
        self.model = model
        self.loss = loss
        self.scheduler_config = training.scheduler  # construction only: the schedules of add_optimizer
        self.epochs = training.epochs
        self.rng = rng
        self.steps = steps  # optimizer steps per epoch (sizes a per-step schedule)
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.per_step_schedule = training.scheduler.interval == "step"

    # ------------------------------------------------------------------ building
    def add_optimizer(self, role: str, params: list[nn.Parameter], cfg: OptimizerConfig, *, field: str,
                      schedule: bool = True) -> torch.optim.Optimizer:  # fmt: skip
        """Register optimizer ``role`` over ``params`` (and, with ``schedule``, its schedule)."""
        opt = optim.build_optimizer(params, cfg.name, cfg.lr, cfg.kwargs, field=field)
        self.optimizers[role] = opt
        if schedule:
            self.schedulers[role] = build_scheduler(opt, self.scheduler_config, self.epochs, self.steps)
        return opt

    def modules(self) -> list[nn.Module]:
        return [self.model, self.loss, *self.networks.values()]

    def to(self, device: torch.device, settings: StepSettings) -> Scheme:
        """Every module onto ``device`` (in channels-last layout with ``settings.channels_last``)."""
        for m in self.modules():
            m.to(device)
            if settings.channels_last:
                module_to_channels_last(m)
        return self

    def train(self, mode: bool = True) -> None:
        for m in self.modules():
            m.train(mode)

    def eval(self) -> None:
        self.train(False)

    # ------------------------------------------------------------------ training
    def step(self, x: torch.Tensor, y: torch.Tensor, settings: StepSettings
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
        """One training step on LD ``x`` and ND ``y`` under ``settings`` (clipping, deferred checks).
        Returns the generator objective's value, its terms (logged as ``train_<term>``) and other logs
        (logged under their own names), as detached 0-d tensors on the training device (reading them
        back is the caller's synchronisation)."""
        raise NotImplementedError

    def update(self, role: str, objective: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]],
               settings: StepSettings, *, frozen: Sequence[nn.Module] = (), clip: bool = False
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """One step of optimizer ``role`` on ``objective()`` → ``(total, terms)``, evaluated with the
        parameters of ``frozen`` (the other side's discriminators) not requiring grad, so they get no
        gradients: zero the gradients, evaluate, check every term is finite (:class:`Diverged`),
        backward, clip (with ``clip``, to ``settings.grad_clip``: the generator's updates; a
        discriminator's are not clipped), step. Returns the detached total and the terms.

        The finite check is skipped with ``settings.defer_checks`` (``check_every`` > 1:
        ``train_epoch`` checks the summed values every ``check_every`` steps). Under bf16 autocast
        (``train_epoch``) only ``objective()`` runs in it; backward, clipping and the step run outside."""
        opt = self.optimizers[role]
        with all_frozen(*frozen):
            opt.zero_grad(set_to_none=True)
            total, terms = objective()
            if not settings.defer_checks:
                check_finite({**terms, "total": total})
            with no_autocast(total.device.type):
                total.backward()
                self.clip(role, settings.grad_clip if clip else None)
                opt.step()
        return total.detach(), terms

    def clip(self, role: str, grad_clip: float | None) -> None:
        if grad_clip is not None:
            opt = self.optimizers[role]
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip)

    def extra_terms(self, pred: torch.Tensor, target: torch.Tensor, suffix: str = ""
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """The weighted sum of the loss entry's terms on ``(pred, target)`` and each term (named with
        ``suffix``); 0 for an empty entry (the framework's baseline)."""
        total, terms = self.loss.compute(pred, target)
        return total, {f"{k}{suffix}": v for k, v in terms.items()}

    @torch.no_grad()
    def validation_terms(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(validation loss, terms)`` of a generator output against its paired NDCT."""
        loss = l1(pred, target)
        _, extra = self.extra_terms(pred, target)
        return loss, {"l1": loss, **extra}

    def step_schedules(self, val_loss: float | None = None) -> None:
        """Step every schedule once (after each optimizer step for ``interval: step``, else per epoch;
        ``plateau`` with the validation loss)."""
        for s in self.schedulers.values():
            if s is None:
                continue
            if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if val_loss is None:
                    raise ValueError("the plateau schedule steps on the validation loss")
                s.step(val_loss)
            else:
                s.step()

    @property
    def lr(self) -> float:
        """The generator's current learning rate (the first optimizer's)."""
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        """Further state of a subclass (e.g. history pools); restored by :meth:`load_extra_state`."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.checkpoint_state(),
            "networks": {k: m.state_dict() for k, m in self.networks.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: (s.state_dict() if s is not None else None) for k, s in self.schedulers.items()},
            "scheme": {"name": self.name, **self.extra_state()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_checkpoint_state(state["loss"])
        for k, m in self.networks.items():
            m.load_state_dict(state["networks"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            if s is not None and state["schedulers"].get(k) is not None:
                s.load_state_dict(state["schedulers"][k])
        self.load_extra_state(state["scheme"])
