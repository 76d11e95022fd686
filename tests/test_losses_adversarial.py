"""Adversarial terms: WGAN-GP, LSGAN, vanilla GAN (formulas, randomness, protocol with the runner)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.core.errors import UnknownNameError, UserError
from losses import LOSSES, AdversarialLoss, build_loss, build_term
from losses.wgan_gp import gradient_penalty

NAMES = ["wgan_gp", "lsgan", "vanilla"]
SMALL_D = {"wgan_gp": {"channels": 8}, "lsgan": {"channels": 8}, "vanilla": {"channels": 8}}


def _term(name: str, **kwargs):
    return build_term(name, {"discriminator_kwargs": SMALL_D[name], **kwargs})


def _pair(generator: torch.Generator, n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    real = 0.25 + 0.05 * torch.rand(n, 1, size, size, generator=generator)
    return real, real + 0.03 * torch.randn(n, 1, size, size, generator=generator)


def test_metadata_and_defaults():
    for name in NAMES:
        assert LOSSES[name].adversarial
        term = build_term(name)
        assert isinstance(term, AdversarialLoss)
    wgan = build_term("wgan_gp")
    assert wgan.critic_steps == 5 and wgan.gp_weight == 10.0
    assert wgan.optimizer_config == {"name": "adam", "betas": (0.9, 0.999), "weight_decay": 2e-5}  # lr: G's
    assert type(wgan.discriminator).__name__ == "WGANCritic"
    for name in ("lsgan", "vanilla"):
        term = build_term(name)
        assert term.critic_steps == 1 and type(term.discriminator).__name__ == "PatchGAN"
        assert term.optimizer_config == {"name": "adam", "betas": (0.5, 0.999)}
    custom = build_term("wgan_gp", {"lr": 5e-5, "betas": [0.5, 0.9], "weight_decay": 0, "critic_steps": 3})
    assert custom.optimizer_config == {"name": "adam", "lr": 5e-5, "betas": (0.5, 0.9), "weight_decay": 0.0}
    assert custom.critic_steps == 3
    assert LOSSES["wgan_gp"].value_domain[0] == float("-inf")


def test_gradient_penalty_of_linear_and_quadratic_critics():
    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    y = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    linear = nn.Conv2d(1, 1, 5, bias=False)  # D(x) = <w, x>, ∇ = w for every x̂
    gp = gradient_penalty(linear, x, y, torch.Generator().manual_seed(5))
    torch.testing.assert_close(gp, (linear.weight.norm() - 1.0) ** 2)

    class Quadratic(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return (z * z).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)  # ∇ = 2 x̂

    gp = gradient_penalty(Quadratic(), x, y, torch.Generator().manual_seed(5))
    eps = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(5))  # the same CPU draw
    mixed = eps * x + (1 - eps) * y
    expected = ((2 * mixed.flatten(1).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gp, expected)


def test_wgan_critic_loss_formula_and_logs(generator):
    term = _term("wgan_gp")
    real, fake = _pair(generator)
    loss, logs = term.critic_loss(real, fake, generator=torch.Generator().manual_seed(3))
    d = term.discriminator
    d_real, d_fake = d(real).mean(), d(fake).mean()
    gp = gradient_penalty(d, real, fake, torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, d_fake - d_real + 10.0 * gp)
    assert set(logs) == {"critic", "gp", "wasserstein"}
    assert logs["wasserstein"] == pytest.approx((d_real - d_fake).item(), abs=1e-6)
    torch.testing.assert_close(term(fake, real), -d(fake).mean())


def test_interpolation_weights_come_from_the_given_generator(generator):
    term = _term("wgan_gp")
    real, fake = _pair(generator)
    a, _ = term.critic_loss(real, fake, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(123)  # the global RNG must not matter
    b, _ = term.critic_loss(real, fake, generator=torch.Generator().manual_seed(9))
    c, _ = term.critic_loss(real, fake, generator=torch.Generator().manual_seed(10))
    assert a.item() == b.item() and a.item() != c.item()


def test_lsgan_and_vanilla_formulas(generator):
    real, fake = _pair(generator)
    ls = _term("lsgan")
    dr, df = ls.discriminator(real), ls.discriminator(fake)
    torch.testing.assert_close(ls(fake, real), 0.5 * ((df - 1) ** 2).mean())
    torch.testing.assert_close(ls.critic_loss(real, fake)[0], 0.5 * ((dr - 1) ** 2).mean() + 0.5 * (df**2).mean())
    va = _term("vanilla")
    dr, df = va.discriminator(real), va.discriminator(fake)
    torch.testing.assert_close(va(fake, real), -F.logsigmoid(df).mean())
    expected = 0.5 * (-F.logsigmoid(dr).mean() - torch.log1p(-torch.sigmoid(df)).mean())
    torch.testing.assert_close(va.critic_loss(real, fake)[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_generator_step_leaves_the_discriminator_alone(generator, name):
    term = _term(name)
    real, fake = _pair(generator)
    fake.requires_grad_(True)
    term(fake, real).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in term.discriminator.parameters())
    assert all(p.requires_grad for p in term.discriminator.parameters())  # restored
    loss, _ = term.critic_loss(real, fake, generator=torch.Generator().manual_seed(0))
    fake.grad = None
    loss.backward()
    assert fake.grad is None  # the fake is detached in the critic loss
    assert all(p.grad is not None for p in term.discriminator.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_composite_protocol_and_checkpoint_round_trip(generator, name):
    torch.manual_seed(0)
    comp = build_loss([("mse", 0.95, {}), (name, 0.05, {"discriminator_kwargs": SMALL_D[name]})])
    assert list(comp.adversarial_terms) == [name]
    assert comp.generator_parameters() == []  # D has its own optimizer
    term = comp.adversarial_terms[name]
    opt = torch.optim.Adam(term.discriminator.parameters(), lr=1e-4,
                           **{k: v for k, v in term.optimizer_config.items() if k != "name"})
    real, fake = _pair(generator)
    for _ in range(2):
        opt.zero_grad()
        term.critic_loss(real, fake, generator=generator)[0].backward()
        opt.step()
    state = comp.checkpoint_state()
    assert any(k.startswith(f"terms.{name}.discriminator.") for k in state)
    torch.manual_seed(1)
    fresh = build_loss([("mse", 0.95, {}), (name, 0.05, {"discriminator_kwargs": SMALL_D[name]})])
    fresh.load_checkpoint_state(state)
    comp.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(fake, real), comp(fake, real), rtol=0, atol=0)


def test_bad_kwargs():
    with pytest.raises(UnknownNameError, match="wgan_critic"):
        build_term("wgan_gp", {"discriminator": "critic"})
    for kwargs, match in [({"lr": -1}, "lr"), ({"betas": [0.9]}, "betas"), ({"critic_steps": 0}, "critic_steps"),
                          ({"gp_weight": -1}, "gp_weight"), ({"lambda": 10}, "lambda")]:
        with pytest.raises(UserError, match=match):
            build_term("wgan_gp", kwargs)
