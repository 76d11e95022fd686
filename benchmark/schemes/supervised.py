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
from benchmark.step_settings import StepSettings
from losses.base import CompositeLoss


class Supervised(Scheme):
    """Paired training on the cell's composite loss; see the module docstring."""

    name = "supervised"

    def __init__(self, *, model: nn.Module, loss: CompositeLoss, training: TrainingConfig, rng: torch.Generator,
                 steps: int = 1, log_output_gradients: bool = False, balance_adversarial: bool = False) -> None:  # fmt: skip
        super().__init__(model=model, loss=loss, training=training, rng=rng, steps=steps)
        self.log_output_gradients = bool(log_output_gradients)
        adversarial = loss.adversarial_terms
        # on an architecture entry it applies to every loss entry; one without adversarial terms is unchanged
        self.balance_adversarial = bool(balance_adversarial) and bool(adversarial)
        if self.balance_adversarial:
            if len(adversarial) == len(loss.names):
                raise ValueError("balance_adversarial needs pixel (non-adversarial) terms beside the adversarial "
                                 f"ones, got {loss.names}")  # fmt: skip
            pixel_w = sum(w for n, w in loss.weights.items() if n not in adversarial)
            adv_w = sum(w for n, w in loss.weights.items() if n in adversarial)
            if pixel_w <= 0 or adv_w <= 0:
                raise ValueError(f"balance_adversarial needs positive pixel and adversarial weights, got {loss.weights}")
            self.balance_ratio = adv_w / pixel_w
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

    def generator_step(self, x: torch.Tensor, y: torch.Tensor, settings: StepSettings
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """One optimizer step of the denoiser (and trainable loss parameters) on the composite loss,
        the discriminators frozen (:meth:`Scheme.update`)."""
        outputs: list[torch.Tensor] = []

        def objective() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            outputs.append(self.model(x))
            if self.balance_adversarial:
                return self.balanced_objective(outputs[0], y)
            return self.loss.compute(outputs[0], y)

        discriminators = [t.discriminator for t in self.loss.adversarial_terms.values()]
        total, terms = self.update("G", objective, settings, frozen=discriminators, clip=True)
        logs = {k: v.detach() for k, v in terms.items()}
        if self.log_output_gradients and len(self.loss.names) > 1:
            logs.update(self.output_gradient_norms(outputs[0].detach(), y))
        return total, logs

    def balanced_objective(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The composite loss with the adversarial weight set from gradients (``balance_adversarial``):
        ``P + λ_t·A``, ``P = Σ w_k·L_k`` over the pixel terms and ``A = Σ w_j·L_j`` over the adversarial
        ones, with ``λ_t = r·‖∂P/∂ŷ‖ / ‖∂A/∂ŷ‖`` (detached; ŷ the step's output) and ``r = Σw_adv / Σw_pixel``
        from the entry's weights: "0.95 MSE + 0.05 WGAN-GP" is read as shares of the pull on the image
        (the adversarial gradient on the output is r = 0.05/0.95 of the MSE's), not of loss values.

        Why (issue #21, measured): a gradient-penalised critic is 1-Lipschitz in whatever units the
        network's images have, so its gradient on the output has a norm of order 1, while the MSE's,
        ``2(ŷ − y)/N``, scales with the error in those units and with 1/√N for N pixels; a weight given as a
        loss-value share therefore means a different balance in every intensity convention and patch
        size. In this suite's units ((HU + 1024)/4096, 48² patches, RED-CNN-16 from an MSE start) the
        paper's 0.05 made ‖∇adv‖ 18–143× ‖∇MSE‖ and the output's RMSE rose from 31 to 177 HU in 60
        steps. The rule is the adaptive weight of Esser, Rombach & Ommer ("Taming transformers for
        high-resolution image synthesis", CVPR 2021), taken on the output instead of the last layer and
        with the entry's ratio instead of 1. Logged: ``adv_balance`` (λ_t)."""
        adversarial = self.loss.adversarial_terms
        values: dict[str, torch.Tensor] = {}
        pixel: torch.Tensor = pred.new_zeros(())
        adv: torch.Tensor = pred.new_zeros(())
        for name in self.loss.names:
            v = self.loss.terms[name](pred, target)
            values[name] = v.detach()
            if name in adversarial:
                adv = adv + self.loss.weights[name] * v
            else:
                pixel = pixel + self.loss.weights[name] * v
        g_pixel, g_adv = (torch.linalg.vector_norm(torch.autograd.grad(t, pred, retain_graph=True)[0]) for t in (pixel, adv))
        lam = (self.balance_ratio * g_pixel / g_adv.clamp_min(1e-12)).detach()
        values["adv_balance"] = lam
        return pixel + lam * adv, values

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

    def step(self, x: torch.Tensor, y: torch.Tensor, settings: StepSettings
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
        logs = self.critic_step(x, y)
        total, terms = self.generator_step(x, y, settings)
        return total, terms, logs

    def validation_terms(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training objective and each term on a validation output: the composite loss, or with
        ``balance_adversarial`` the balanced objective ``P + λ_t·A`` (:meth:`balanced_objective`), λ_t taken
        on this batch's output as in training (logged as ``adv_balance``). Before, a balanced cell's
        validation total used the entry's literal weights (0.95 / 0.05), an objective it was never trained
        on, dominated by the critic's value. λ_t needs the output's gradients, so they are enabled here
        (on a detached copy: no parameter gets a gradient), also under :func:`benchmark.train.validate`'s
        ``no_grad``."""
        if not self.balance_adversarial:
            with torch.no_grad():
                return self.loss.compute(pred, target)
        with torch.enable_grad():
            total, values = self.balanced_objective(pred.detach().requires_grad_(True), target)
        return total.detach(), {k: v.detach() for k, v in values.items()}

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
