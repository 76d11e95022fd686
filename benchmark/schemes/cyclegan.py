"""The ``cyclegan`` scheme (Zhu, Park, Isola & Efros, "Unpaired image-to-image translation using
cycle-consistent adversarial networks", ICCV 2017), on *unpaired* batches by default.

Domains: A = LDCT, B = NDCT. Networks: G: A → B (the cell's architecture, ``resnet_gen`` with 9 blocks
in the paper; its ``state_dict`` is the checkpoint's ``model``), F: B → A (a second instance of the
same architecture, built right after G from the cell's seed), and two 70×70 PatchGANs with instance
norm, D_A (judges A) and D_B (judges B). Criterion: least squares (LSGAN).

Per step on a batch ``(a, b)``, in the order of the paper's code:

1. generators, D_A and D_B frozen:
   ``L = c(D_B(G(a)), real) + c(D_A(F(b)), real)
   + λ·(‖F(G(a)) − a‖₁ + ‖G(F(b)) − b‖₁) + λ·λ_id·(‖G(b) − b‖₁ + ‖F(a) − a‖₁)
   + Σ_k w_k·[L_k(F(G(a)), a) + L_k(G(F(b)), b)]``
   with λ = 10, λ_id = 0.5 and the cell's loss entry ``Σ_k w_k L_k`` on both cycle reconstructions
   (the MSTLF study's texture loss, as in its public code; empty = the CycleGAN baseline);
2. discriminators: ``L_{D_B} = ½·[c(D_B(b), real) + c(D_B(pool_B(G(a))), fake)]`` and the same for
   D_A with ``pool_A(F(b))``: the fakes pass through 50-image history pools (Shrivastava et al., CVPR
   2017; :class:`benchmark.schemes.history.ImagePool`).

Optimizers as in the paper's code: one for G and F together (with trainable loss parameters), one for
D_A and D_B together, both from ``training.optimizer`` (paper: Adam 2e-4, β1 0.5) with the matrix's
schedule (paper: ``linear_decay``, constant then linear to 0). Logged terms: ``G_gan``, ``F_gan``,
``cycle_A``, ``cycle_B``, ``idt_A`` (‖F(a) − a‖₁), ``idt_B`` (‖G(b) − b‖₁), each extra term with
suffix ``_A``/``_B``, ``D_A``, ``D_B``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmark.config import TrainingConfig
from benchmark.core.registry import lookup
from benchmark.schemes.base import GAN_CRITERIA, Scheme, l1, parameters
from benchmark.schemes.history import ImagePool
from benchmark.step_settings import StepSettings
from losses.base import CompositeLoss
from models import DISCRIMINATORS, build_model


class CycleGAN(Scheme):
    """CycleGAN; see the module docstring."""

    name = "cyclegan"

    def __init__(self, *, model: nn.Module, loss: CompositeLoss, training: TrainingConfig, rng: torch.Generator,
                 build_network: Callable[[], nn.Module], steps: int = 1, lambda_cycle: float = 10.0,
                 lambda_identity: float = 0.5, pool_size: int = 50, gan: str = "lsgan",
                 discriminator: str = "patchgan", discriminator_kwargs: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(model=model, loss=loss, training=training, rng=rng, steps=steps)
        for key, v in (("lambda_cycle", lambda_cycle), ("lambda_identity", lambda_identity), ("pool_size", pool_size)):
            if v < 0:
                raise ValueError(f"{key} must be >= 0, got {v}")
        self.lambda_cycle, self.lambda_identity = float(lambda_cycle), float(lambda_identity)
        self.criterion = lookup(GAN_CRITERIA, gan, "GAN criterion", field="scheme_kwargs.gan")
        self.networks["F"] = build_network()
        kw = {"norm": "instance", **(discriminator_kwargs or {})}
        for role in ("D_A", "D_B"):
            self.networks[role] = build_model(discriminator, kw, registry=DISCRIMINATORS,
                                              field="scheme_kwargs.discriminator")  # fmt: skip
        self.pools = {"A": ImagePool(int(pool_size)), "B": ImagePool(int(pool_size))}
        self.add_optimizer("G", parameters(model, self.networks["F"], loss), training.optimizer,
                           field="training.optimizer")  # fmt: skip
        self.add_optimizer("D", parameters(self.networks["D_A"], self.networks["D_B"]), training.optimizer,
                           field="training.optimizer")  # fmt: skip

    def generator_losses(self, a: torch.Tensor, b: torch.Tensor
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:  # fmt: skip
        """The generators' objective, its terms, and the fakes G(a), F(b) (for the discriminators)."""
        g, f, c = self.model, self.networks["F"], self.criterion
        fake_b, fake_a = g(a), f(b)
        rec_a, rec_b = f(fake_b), g(fake_a)
        terms: dict[str, torch.Tensor] = {
            "G_gan": c(self.networks["D_B"](fake_b), True),
            "F_gan": c(self.networks["D_A"](fake_a), True),
            "cycle_A": l1(rec_a, a),
            "cycle_B": l1(rec_b, b),
        }
        total = terms["G_gan"] + terms["F_gan"] + self.lambda_cycle * (terms["cycle_A"] + terms["cycle_B"])
        if self.lambda_identity > 0:
            terms["idt_A"], terms["idt_B"] = l1(f(a), a), l1(g(b), b)
            total = total + self.lambda_cycle * self.lambda_identity * (terms["idt_A"] + terms["idt_B"])
        extra_a, terms_a = self.extra_terms(rec_a, a, "_A")
        extra_b, terms_b = self.extra_terms(rec_b, b, "_B")
        return total + extra_a + extra_b, {**terms, **terms_a, **terms_b}, fake_b, fake_a

    def generator_step(self, a: torch.Tensor, b: torch.Tensor, settings: StepSettings
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:  # fmt: skip
        """One update of G and F (and trainable loss parameters), D_A and D_B frozen; returns the
        objective, its terms and the detached fakes G(a), F(b)."""
        fakes: list[torch.Tensor] = []

        def objective() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            total, terms, fake_b, fake_a = self.generator_losses(a, b)
            fakes.extend([fake_b.detach(), fake_a.detach()])
            return total, terms

        total, terms = self.update("G", objective, settings, frozen=[self.networks["D_A"], self.networks["D_B"]],
                                   clip=True)  # fmt: skip
        return total, terms, fakes[0], fakes[1]

    def discriminator_step(self, a: torch.Tensor, b: torch.Tensor, fake_b: torch.Tensor, fake_a: torch.Tensor,
                           settings: StepSettings) -> dict[str, torch.Tensor]:  # fmt: skip
        """One update of D_A and D_B on the real images and the pooled fakes."""
        d_a, d_b, c = self.networks["D_A"], self.networks["D_B"], self.criterion
        pooled_b = self.pools["B"].query(fake_b.detach(), self.rng)
        pooled_a = self.pools["A"].query(fake_a.detach(), self.rng)

        def objective() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            loss_db = 0.5 * (c(d_b(b), True) + c(d_b(pooled_b), False))
            loss_da = 0.5 * (c(d_a(a), True) + c(d_a(pooled_a), False))
            return loss_da + loss_db, {"D_A": loss_da, "D_B": loss_db}

        _, terms = self.update("D", objective, settings)
        return {k: v.detach() for k, v in terms.items()}

    def step(self, x: torch.Tensor, y: torch.Tensor, settings: StepSettings
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
        total, terms, fake_b, fake_a = self.generator_step(x, y, settings)
        d_logs = self.discriminator_step(x, y, fake_b, fake_a, settings)
        logs = {k: v.detach() for k, v in {**terms, **d_logs}.items()}
        return total, logs, {}

    def extra_state(self) -> dict[str, Any]:
        return {"pools": {k: p.state_dict() for k, p in self.pools.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for k, p in self.pools.items():
            p.load_state_dict(state["pools"][k])
