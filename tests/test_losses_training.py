"""Every registered loss decreases when a small denoiser is trained on it for a few steps; adversarial
terms: the generator term decreases against a fixed D and the critic loss against a fixed G."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.core.compat import ensure_torchvision
from losses import LOSSES, build_term

CASES: dict[str, dict] = {
    "mse": {},
    "l1": {},
    "charbonnier": {},
    "ssim": {"window": "abdomen"},
    "ms_ssim": {"scales": 2, "window": "abdomen"},
    "vgg": {"layers": ["relu1_2", "relu2_2"]},
    "upl": {},
    "mstlf": {"aggregation": "max", "features": ["contrast", "correlation"], "levels": 32},
    "mstlf_attention": {"levels": 32},
}
ADVERSARIAL = {"wgan_gp": {"channels": 8}, "lsgan": {"channels": 8}, "vanilla": {"channels": 8}}


class TinyDenoiser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _data(n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    clean = 0.25 + 0.02 * torch.sin(8 * xx + torch.rand(n, 1, 1, 1, generator=g) * 6) * torch.cos(5 * yy)
    clean = clean + 0.04 * (((xx - 0.5) ** 2 + (yy - 0.4) ** 2) < 0.06)
    noisy = clean + 0.01 * torch.randn(n, 1, size, size, generator=g)
    return noisy, clean


@pytest.fixture
def random_vgg(monkeypatch):
    """VGG features with seeded random weights (structure of torchvision's vgg16; no weights file)."""
    vgg = ensure_torchvision().models.vgg

    def build(arch: str, *_: object) -> nn.Sequential:  # (arch, backbone, init_seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            features = vgg.make_layers(vgg.cfgs["D"])
        return features.requires_grad_(False).eval()

    monkeypatch.setattr("losses.vgg.build_vgg_features", build)


def test_every_registered_loss_is_covered():
    assert set(CASES) | set(ADVERSARIAL) == set(LOSSES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_loss_decreases_when_trained(name, random_vgg):
    torch.manual_seed(0)
    noisy, clean = _data()
    model = TinyDenoiser()
    loss = build_term(name, CASES[name])
    params = list(model.parameters()) + [p for p in loss.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3)
    values = []
    for _ in range(20):
        opt.zero_grad()
        value = loss(model(noisy), clean)
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < 0.9 * values[0], values


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_terms_decrease(name):
    torch.manual_seed(0)
    noisy, clean = _data()
    term = build_term(name, {"discriminator_kwargs": ADVERSARIAL[name]})
    gen = torch.Generator().manual_seed(1)
    model = TinyDenoiser()
    d_opt = torch.optim.Adam(term.discriminator.parameters(), lr=1e-3)
    critic = []
    fake = model(noisy).detach()
    for _ in range(15):  # D against a fixed G
        d_opt.zero_grad()
        value, _ = term.critic_loss(clean, fake, generator=gen)
        value.backward()
        d_opt.step()
        critic.append(value.item())
    assert critic[-1] < critic[0], critic
    g_opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g_values = []
    for _ in range(15):  # G against a fixed D
        g_opt.zero_grad()
        value = term(model(noisy), clean)
        value.backward()
        g_opt.step()
        g_values.append(value.item())
    assert g_values[-1] < g_values[0], g_values
