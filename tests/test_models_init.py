"""``init: he`` (models/init.py): every (transposed) convolution gets He-normal weights with the fan-in
its units really sum over, zero biases; the activation scale survives depth (PyTorch's default shrinks
it); ``zero_init_output`` still wins over the scheme; bad names fail with the valid ones. ``zero_init``
zeroes one layer (bias or not) and draws no random numbers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.core.errors import UserError
from models import build_model
from models.init import init_weights, zero_init


def _std_ok(w: torch.Tensor, fan_in: int) -> None:
    expected = math.sqrt(2.0 / fan_in)
    n = w.numel()
    # sample std of n normal draws: relative standard error ~ 1/sqrt(2n); 6 of them as tolerance
    assert abs(w.std().item() / expected - 1) < 6 / math.sqrt(2 * n), (w.shape, w.std().item(), expected)
    assert abs(w.mean().item()) < 6 * expected / math.sqrt(n)


def test_he_uses_the_true_fan_in_of_convolutions_and_transposed_convolutions():
    torch.manual_seed(0)
    m = build_model("redcnn", {"channels": 32, "init": "he"})
    for conv in m.enc:
        _std_ok(conv.weight, conv.in_channels * 25)
        assert torch.count_nonzero(conv.bias) == 0
    for deconv in m.dec:  # a transposed conv's output unit sums over in_channels · k² inputs
        _std_ok(deconv.weight, deconv.in_channels * 25)
        assert torch.count_nonzero(deconv.bias) == 0
    # PyTorch's default (variance 1/(3·fan_in)) draws the last, 1-channel deconvolution for a fan-in of
    # 25 (its output channels · k²) instead of 32 · 25: sqrt(32) wider than its own rule intends
    torch.manual_seed(0)
    default = build_model("redcnn", {"channels": 32})
    w = default.dec[4].weight
    assert abs(w.std().item() / math.sqrt(1 / (3 * 25)) - 1) < 0.1
    assert w.std().item() > 5 * math.sqrt(1 / (3 * 32 * 25))


def test_he_keeps_the_activation_scale_through_depth_and_default_shrinks_it():
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))

    def last_hidden_rms(init: str) -> float:
        torch.manual_seed(0)
        m = build_model("dncnn", {"depth": 8, "channels": 32, "batch_norm": False, "init": init})
        h = m.body[:-1](x)  # everything but the output convolution
        return h.pow(2).mean().sqrt().item()

    he, default = last_hidden_rms("he"), last_hidden_rms("default")
    # He: second moment preserved per conv+ReLU (within a factor 3 over 7 layers);
    # default: 1/6 per layer, i.e. ~0.41 in RMS -> 0.41^6 ≈ 5e-3 after the 6 further layers
    assert he > 0.1 * x.pow(2).mean().sqrt().item()
    assert default < 0.05 * he


def test_zero_init_output_wins_and_the_default_is_untouched():
    m = build_model("dncnn", {"depth": 5, "channels": 8, "init": "he", "zero_init_output": True})
    assert torch.count_nonzero(m.body[-1].weight) == 0
    torch.manual_seed(3)
    a = build_model("dncnn", {"depth": 5, "channels": 8})
    torch.manual_seed(3)
    b = build_model("dncnn", {"depth": 5, "channels": 8, "init": "default"})
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_unknown_init_names_the_valid_ones():
    with pytest.raises(UserError, match="default, he"):
        build_model("dncnn", {"init": "xavier"})
    with pytest.raises(ValueError, match="default, he"):
        init_weights(nn.Conv2d(1, 1, 3), "orthogonal")


@pytest.mark.parametrize("layer", [nn.Conv2d(2, 1, 3), nn.Conv3d(2, 1, 3, bias=False), nn.ConvTranspose2d(2, 1, 5),
                                   nn.Linear(4, 2)])
def test_zero_init_zeroes_weight_and_bias_and_draws_no_random_numbers(layer):
    torch.manual_seed(5)
    zero_init(layer)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # the RNG stream is untouched: the other layers draw as before
    assert torch.count_nonzero(layer.weight) == 0
    assert layer.bias is None or torch.count_nonzero(layer.bias) == 0


def test_zero_init_rejects_a_layer_without_a_weight_to_zero():
    with pytest.raises(TypeError, match="BatchNorm2d"):
        zero_init(nn.BatchNorm2d(3))
