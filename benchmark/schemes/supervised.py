"""The ``supervised`` scheme: a denoiser trained on paired (LDCT, NDCT) patches with the cell's loss,
a weighted sum of registered terms. Adversarial terms (WGAN-GP, LSGAN, vanilla) bring their own
discriminator, trained first in each step by its own optimizer for ``critic_steps`` updates on a
detached fake (:meth:`Supervised.critic_step`); the denoiser's step then sees the discriminators
frozen (:func:`losses.adversarial.frozen`), so they get no gradients from it.

A discriminator's rate is the denoiser's base rate (``training.optimizer.lr``) unless its term sets
``lr`` (:mod:`losses.adversarial`). The learning-rate schedule applies to the denoiser's optimizer only:
the critics keep that base rate constant (with a warm-up or a decay the two rates differ in between). A
cell resumed from a checkpoint written before this default keeps the rate stored in its optimizer state.
Checkpoints keep the keys of the first format (``model``, ``loss``, ``optimizer``, ``scheduler``,
``critic_optimizers``), so older cells resume.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark import optim
from benchmark.config import TrainingConfig
from benchmark.core.precision import no_autocast
from benchmark.schemes.base import Scheme
from losses.base import CompositeLoss


class Supervised(Scheme):
    """Paired training on the cell's composite loss; see the module docstring."""

    name = "supervised"

    def __init__(self, *, model: nn.Module, loss: CompositeLoss, training: TrainingConfig, rng: torch.Generator,
                 steps: int = 1, log_output_gradients: bool = False) -> None:  # fmt: skip
        super().__init__(model=model, loss=loss, training=training, rng=rng, steps=steps)
        self.log_output_gradients = bool(log_output_gradients)
        self.add_optimizer("G", list(model.parameters()) + loss.generator_parameters(), training.optimizer,
                           field="training.optimizer")  # fmt: skip
        for name, term in loss.adversarial_terms.items():
            cfg = dict(term.optimizer_config)
            cfg_name = cfg.pop("name", "adam")
            lr = cfg.pop("lr", training.optimizer.lr)  # the generator's rate unless the term sets one
            self.optimizers[name] = optim.build_optimizer(list(term.discriminator.parameters()), cfg_name, lr, cfg,
                                                          field=f"losses.{name}.optimizer")  # fmt: skip

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers["G"]

    @property
    def scheduler(self) -> Any:
        return self.schedulers.get("G")

    @property
    def critic_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {k: o for k, o in self.optimizers.items() if k != "G"}

    def critic_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``critic_steps`` discriminator updates per adversarial term, on a detached fake."""
        logs: dict[str, torch.Tensor] = {}
        if not self.loss.adversarial_terms:
            return logs
        with torch.no_grad():
            fake = self.model(x).detach()
        for name, term in self.loss.adversarial_terms.items():
            opt = self.optimizers[name]
            for _ in range(term.critic_steps):
                opt.zero_grad(set_to_none=True)
                d_loss, d_logs = term.critic_loss(y, fake, generator=self.rng)
                with no_autocast(d_loss.device.type):
                    d_loss.backward()
                    opt.step()
            for k, v in d_logs.items():
                logs[f"{name}_{k}"] = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
        return logs

    def generator_step(self, x: torch.Tensor, y: torch.Tensor, grad_clip: float | None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """One optimizer step of the denoiser (and trainable loss parameters) on the composite loss,
        the discriminators frozen (:meth:`Scheme.update`)."""
        outputs: list[torch.Tensor] = []

        def objective() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            outputs.append(self.model(x))
            return self.loss.compute(outputs[0], y)

        total, terms = self.update("G", objective, frozen=[t.discriminator for t in self.loss.adversarial_terms.values()],
                                   grad_clip=grad_clip)  # fmt: skip
        logs = {k: v.detach() for k, v in terms.items()}
        if self.log_output_gradients and len(self.loss.names) > 1:
            logs.update(self.output_gradient_norms(outputs[0].detach(), y))
        return total, logs

    def output_gradient_norms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``gradnorm_<term>`` = ‖∂(w_k·L_k)/∂ŷ‖₂ of each weighted term on the denoiser's output ``ŷ`` (the
        output of this step, before its update): how hard each term pulls the image, the diagnostic of an
        adversarial weight (issue #21: ‖∇adv‖ / ‖∇pixel‖). Gradients are taken with respect to the output
        only (``torch.autograd.grad``), so no parameter's ``.grad`` changes. On with ``scheme_kwargs:
        {log_output_gradients: true}``; logged per step and averaged per epoch in ``history.csv``
        (``train_gradnorm_<term>``)."""
        out = pred.requires_grad_(True)
        norms = {}
        for name in self.loss.names:
            (grad,) = torch.autograd.grad(self.loss.weights[name] * self.loss.terms[name](out, target), out)
            norms[f"gradnorm_{name}"] = torch.linalg.vector_norm(grad).detach()
        return norms

    def step(self, x: torch.Tensor, y: torch.Tensor, grad_clip: float | None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
        logs = self.critic_step(x, y)
        total, terms = self.generator_step(x, y, grad_clip)
        return total, terms, logs

    @torch.no_grad()
    def validation_terms(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The composite training loss and each term."""
        return self.loss.compute(pred, target)

    def state_dict(self) -> dict[str, Any]:
        sched = self.schedulers.get("G")
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.checkpoint_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "critic_optimizers": {k: o.state_dict() for k, o in self.critic_optimizers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_checkpoint_state(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        sched = self.schedulers.get("G")
        if sched is not None and state["scheduler"] is not None:
            sched.load_state_dict(state["scheduler"])
        for k, o in self.critic_optimizers.items():
            o.load_state_dict(state["critic_optimizers"][k])
