"""Discriminators: the WGAN-GP study's CNN critic and the 70x70 PatchGAN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.core.errors import UnknownNameError, UserError
from models import DISCRIMINATORS, build_model
from models.discriminators import PatchGAN, WGANCritic, receptive_field


def _convs(model: nn.Module) -> list[tuple[int, int, int, int, int]]:
    return [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
            for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_wgan_critic_layers_as_specified():
    critic = build_model("wgan_critic", registry=DISCRIMINATORS)
    assert _convs(critic) == [(1, 64, 3, 1, 1), (64, 128, 5, 3, 1), (128, 128, 3, 1, 1), (128, 128, 5, 3, 1),
                              (128, 1, 3, 1, 0)]
    acts = [m for m in critic.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.2 for a in acts)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in critic.modules())
    # 64 → 64 → 21 → 21 → 7 → 5
    assert critic(torch.rand(2, 1, 64, 64)).shape == (2, 1, 5, 5)


def test_patchgan_is_70x70():
    d = PatchGAN()
    assert receptive_field(d) == 70
    assert _convs(d) == [(1, 64, 4, 2, 1), (64, 128, 4, 2, 1), (128, 256, 4, 2, 1), (256, 512, 4, 1, 1),
                         (512, 1, 4, 1, 1)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3
    assert d(torch.rand(2, 1, 64, 64)).shape == (2, 1, 6, 6)
    assert d(torch.rand(1, 1, 256, 256)).shape == (1, 1, 30, 30)  # pix2pix's 30x30 map on 256 px
    conv_w = torch.cat([m.weight.flatten() for m in d.modules() if isinstance(m, nn.Conv2d)])
    assert conv_w.std().item() == pytest.approx(0.02, rel=0.05)  # pix2pix init N(0, 0.02)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in PatchGAN(norm="none").modules())
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in PatchGAN(norm="instance").modules()) == 3
    assert _convs(PatchGAN(in_channels=2))[0][0] == 2


@pytest.mark.parametrize("name", ["wgan_critic", "patchgan"])
def test_registered_min_size_is_the_smallest_that_works(name):
    info = DISCRIMINATORS[name]
    d = build_model(name, registry=DISCRIMINATORS).eval()
    assert d(torch.rand(1, 1, info.min_size, info.min_size)).shape[-2:] == (1, 1)
    with pytest.raises(RuntimeError):
        d(torch.rand(1, 1, info.min_size - 1, info.min_size - 1))


def test_registry_errors():
    with pytest.raises(UnknownNameError, match="patchgan"):
        build_model("patchgann", registry=DISCRIMINATORS)
    with pytest.raises(UserError, match="norm"):
        build_model("patchgan", {"norm": "group"}, registry=DISCRIMINATORS)
    assert isinstance(build_model("wgan_critic", {"channels": 8}, registry=DISCRIMINATORS), WGANCritic)
