"""The ``unit`` scheme (Liu, Breuel & Kautz, "Unsupervised image-to-image translation networks",
NeurIPS 2017), on *unpaired* batches by default.

Domains: A = LDCT, B = NDCT. The architecture must be a two-domain translator with ``encode(x, domain)``
(the latent mean μ) and ``decode(z, domain)`` whose high-level layers are shared between the domains
(the shared latent space; ``models.unit.UNIT``; ``decode(z, domain, size)`` crops back to the input's
sides); its ``forward`` is the deterministic LD → ND
translation ``decode(encode(x, 'a'), 'b')`` that validation and the analysis use. Latent codes are
``z = μ + η``, η ~ N(0, I) (the fixed-variance VAE of the paper's code, whose KL term is then
``E[μ²]``); η is drawn from the cell's generator. Two 70×70 PatchGANs with instance norm judge A and B.

Per step on a batch ``(a, b)``, in the order of the paper's code (discriminators first):

1. discriminators on detached translations: ``λ0·Σ_domains ½·[c(D(real), real) + c(D(fake), fake)]``;
2. encoders/decoders, discriminators frozen, with ``x_ab = dec_b(z_a)``, ``x_ba = dec_a(z_b)``,
   ``x_aba = dec_a(enc_b(x_ab) + η)``, ``x_bab = dec_b(enc_a(x_ba) + η)``:
   ``L = λ0·[c(D_B(x_ab), real) + c(D_A(x_ba), real)] + λ1·[KL(μ_a) + KL(μ_b)]
   + λ2·[‖dec_a(z_a) − a‖₁ + ‖dec_b(z_b) − b‖₁] + λ3·[KL(μ_ab) + KL(μ_ba)]
   + λ4·[‖x_aba − a‖₁ + ‖x_bab − b‖₁] + Σ_k w_k·[L_k(x_aba, a) + L_k(x_bab, b)]``

with the paper's weights λ0 = 10 (GAN), λ1 = 0.1 (KL), λ2 = 100 (reconstruction), λ3 = 0.1 (cycle KL),
λ4 = 100 (cycle reconstruction), the LSGAN criterion of the authors' code (``gan: vanilla`` as an
option), and the cell's loss entry on the cycle reconstructions (MSTLF study; empty = the UNIT
baseline). Not in the paper: ``lambda_identity`` (default 0) adds ``λ_idt·[‖x_ab − a‖₁ + ‖x_ba − b‖₁]``
(logged ``idt_A``, ``idt_B``), which pulls each translation towards its own input. With ``lambda_gan: 0``
the discriminators are not updated. Both serve the identity warm-up of issue #21: UNIT has no residual
path, so unlike a zero-initialised residual generator an untrained UNIT is not the identity; a warm-up
cell ``{lambda_gan: 0, lambda_cycle: 0, lambda_cycle_kl: 0, lambda_identity: 100}`` trains it to
reconstruct its inputs through both decoders, using each domain's own images only (no pairs), and the
adversarial cells start from it (``init_from``). Optimizers: one for the translator (with trainable loss
parameters), one for both
discriminators, from ``training.optimizer`` (paper: Adam 1e-4, β (0.5, 0.999)). Logged terms:
``G_gan_A``, ``G_gan_B``, ``kl_A``, ``kl_B``, ``rec_A``, ``rec_B``, ``cycle_kl_A``, ``cycle_kl_B``,
``cycle_A``, ``cycle_B``, extra terms with suffix ``_A``/``_B``, ``D_A``, ``D_B``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark.config import TrainingConfig
from benchmark.core.registry import lookup
from benchmark.schemes.base import GAN_CRITERIA, Scheme, l1, parameters
from benchmark.step_settings import StepSettings
from losses.base import CompositeLoss
from models import DISCRIMINATORS, build_model
from models.unit import UNIT

# The paper's weights (Liu et al. 2017, section 3 and the authors' configuration).
PAPER_WEIGHTS = {"lambda_gan": 10.0, "lambda_kl": 0.1, "lambda_rec": 100.0, "lambda_cycle_kl": 0.1, "lambda_cycle": 100.0}


class UNITScheme(Scheme):
    """UNIT; see the module docstring."""

    name = "unit"

    def __init__(self, *, model: nn.Module, loss: CompositeLoss, training: TrainingConfig, rng: torch.Generator,
                 steps: int = 1, lambda_gan: float = 10.0, lambda_kl: float = 0.1, lambda_rec: float = 100.0,
                 lambda_cycle_kl: float = 0.1, lambda_cycle: float = 100.0, lambda_identity: float = 0.0,
                 gan: str = "lsgan",
                 discriminator: str = "patchgan", discriminator_kwargs: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(model=model, loss=loss, training=training, rng=rng, steps=steps)
        self.weights = {"lambda_gan": lambda_gan, "lambda_kl": lambda_kl, "lambda_rec": lambda_rec,
                        "lambda_cycle_kl": lambda_cycle_kl, "lambda_cycle": lambda_cycle,
                        "lambda_identity": lambda_identity}  # fmt: skip
        for key, v in self.weights.items():
            if v < 0:
                raise ValueError(f"{key} must be >= 0, got {v}")
        self.criterion = lookup(GAN_CRITERIA, gan, "GAN criterion", field="scheme_kwargs.gan")
        kw = {"norm": "instance", **(discriminator_kwargs or {})}
        for role in ("D_A", "D_B"):
            self.networks[role] = build_model(discriminator, kw, registry=DISCRIMINATORS,
                                              field="scheme_kwargs.discriminator")  # fmt: skip
        self.add_optimizer("G", parameters(model, loss), training.optimizer, field="training.optimizer")
        self.add_optimizer("D", parameters(self.networks["D_A"], self.networks["D_B"]), training.optimizer,
                           field="training.optimizer")  # fmt: skip

    def noisy(self, mu: torch.Tensor) -> torch.Tensor:
        """``μ + η``, η ~ N(0, I) from the cell's generator (CPU, so the draw is the same on any device)."""
        return UNIT.sample_latent(mu, self.rng)

    def discriminator_step(self, a: torch.Tensor, b: torch.Tensor, settings: StepSettings) -> dict[str, torch.Tensor]:
        """One update of D_A and D_B on the real images and detached translations x_ba, x_ab."""
        m: Any = self.model  # models.unit.UNIT (encode/decode, checked by the validation)
        c, w = self.criterion, self.weights
        with torch.no_grad():
            x_ab = m.decode(self.noisy(m.encode(a, "a")), "b", a.shape[-2:])
            x_ba = m.decode(self.noisy(m.encode(b, "b")), "a", b.shape[-2:])
        d_a, d_b = self.networks["D_A"], self.networks["D_B"]

        def objective() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            loss_da = 0.5 * (c(d_a(a), True) + c(d_a(x_ba), False))
            loss_db = 0.5 * (c(d_b(b), True) + c(d_b(x_ab), False))
            return w["lambda_gan"] * (loss_da + loss_db), {"D_A": loss_da, "D_B": loss_db}

        _, terms = self.update("D", objective, settings)
        return {k: v.detach() for k, v in terms.items()}

    def generator_losses(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m: Any = self.model
        c, w = self.criterion, self.weights
        mu_a, mu_b = m.encode(a, "a"), m.encode(b, "b")
        z_a, z_b = self.noisy(mu_a), self.noisy(mu_b)
        hw_a, hw_b = a.shape[-2:], b.shape[-2:]
        x_aa, x_bb = m.decode(z_a, "a", hw_a), m.decode(z_b, "b", hw_b)
        x_ab, x_ba = m.decode(z_a, "b", hw_a), m.decode(z_b, "a", hw_b)
        mu_ab, mu_ba = m.encode(x_ab, "b"), m.encode(x_ba, "a")
        x_aba, x_bab = m.decode(self.noisy(mu_ab), "a", hw_a), m.decode(self.noisy(mu_ba), "b", hw_b)
        t = {
            "G_gan_A": c(self.networks["D_A"](x_ba), True), "G_gan_B": c(self.networks["D_B"](x_ab), True),
            "kl_A": UNIT.kl(mu_a), "kl_B": UNIT.kl(mu_b),
            "rec_A": l1(x_aa, a), "rec_B": l1(x_bb, b),
            "cycle_kl_A": UNIT.kl(mu_ab), "cycle_kl_B": UNIT.kl(mu_ba),
            "cycle_A": l1(x_aba, a), "cycle_B": l1(x_bab, b),
        }  # fmt: skip
        total = (w["lambda_gan"] * (t["G_gan_A"] + t["G_gan_B"]) + w["lambda_kl"] * (t["kl_A"] + t["kl_B"])
                 + w["lambda_rec"] * (t["rec_A"] + t["rec_B"]) + w["lambda_cycle_kl"] * (t["cycle_kl_A"] + t["cycle_kl_B"])
                 + w["lambda_cycle"] * (t["cycle_A"] + t["cycle_B"]))  # fmt: skip
        if w["lambda_identity"]:
            t["idt_A"], t["idt_B"] = l1(x_ab, a), l1(x_ba, b)
            total = total + w["lambda_identity"] * (t["idt_A"] + t["idt_B"])
        extra_a, terms_a = self.extra_terms(x_aba, a, "_A")
        extra_b, terms_b = self.extra_terms(x_bab, b, "_B")
        return total + extra_a + extra_b, {**t, **terms_a, **terms_b}

    def generator_step(self, a: torch.Tensor, b: torch.Tensor, settings: StepSettings
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """One update of the translator (and trainable loss parameters), the discriminators frozen."""
        return self.update("G", lambda: self.generator_losses(a, b), settings,
                           frozen=[self.networks["D_A"], self.networks["D_B"]], clip=True)  # fmt: skip

    def step(self, x: torch.Tensor, y: torch.Tensor, settings: StepSettings
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
        d_logs = self.discriminator_step(x, y, settings) if self.weights["lambda_gan"] else {}
        total, terms = self.generator_step(x, y, settings)
        logs = {k: v.detach() for k, v in {**terms, **d_logs}.items()}
        return total, logs, {}
