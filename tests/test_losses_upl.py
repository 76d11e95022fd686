"""uPL: random frozen network, seeded by its own init_seed, 2-D and 3-D."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from benchmark.core.errors import UserError
from losses import LOSSES, build_loss, build_term
from losses.upl import INITS, PROBE_SEED, UPLLoss


def _pair(generator: torch.Generator, shape: tuple[int, ...] = (2, 1, 24, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    target = 0.25 + 0.05 * torch.rand(shape, generator=generator)
    return target + 0.02 * torch.randn(shape, generator=generator), target


def test_formula_against_a_hand_built_network(generator):
    # depth 3, one channel, kernel 3, no pooling: φ_j = relu(conv_j(φ_{j-1})) with the loss's own weights
    loss = UPLLoss(depth=3, channels=1, layers=[1, 3], distance="l2", init_seed=4)
    pred, target = _pair(generator)
    convs = [block[0] for block in loss.net]

    def phi(x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for c in convs:
            x = F.relu(F.conv2d(x, c.weight, c.bias, padding=1))
            out.append(x)
        return out

    fp, ft = phi(pred), phi(target)
    raw = ((fp[0] - ft[0]) ** 2).mean() + ((fp[2] - ft[2]) ** 2).mean()
    # the scale: the same distance between the probe, U(0, 1) 32x32 from its own seed, and a blank image
    probe = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(PROBE_SEED))
    fz = phi(probe)
    assert loss.scale == pytest.approx(((fz[0] ** 2).mean() + (fz[2] ** 2).mean()).item(), rel=1e-6)
    torch.testing.assert_close(loss(pred, target), raw / loss.scale)
    torch.testing.assert_close(UPLLoss(depth=3, channels=1, layers=[1, 3], init_seed=4, normalize=False)(pred, target),
                               raw)
    l1 = UPLLoss(depth=3, channels=1, layers=[2], distance="l1", init_seed=4)
    assert l1.scale == pytest.approx(fz[1].abs().mean().item(), rel=1e-6)
    torch.testing.assert_close(l1(pred, target), (fp[1] - ft[1]).abs().mean() / l1.scale)


def test_normalisation_removes_the_scale_of_the_initialisation(generator):
    """Raw, the four initialisations' values span orders of magnitude (N(0, 0.02²) shrinks the features ~6x
    per layer); normalised, they are within a factor of 10 of each other, and each is the raw value over
    one constant (the gradients are proportional: the minimiser is unchanged)."""
    pred, target = _pair(generator, (4, 1, 48, 48))
    raw = {i: UPLLoss(depth=5, channels=16, init=i, normalize=False)(pred, target).item() for i in INITS}
    assert max(raw.values()) / min(raw.values()) > 100
    norm = {}
    for init in INITS:
        x = pred.clone().requires_grad_()
        scaled = UPLLoss(depth=5, channels=16, init=init)
        value = scaled(x, target)
        (grad,) = torch.autograd.grad(value, x)
        x_raw = pred.clone().requires_grad_()
        (grad_raw,) = torch.autograd.grad(UPLLoss(depth=5, channels=16, init=init, normalize=False)(x_raw, target),
                                          x_raw)
        torch.testing.assert_close(grad, grad_raw / scaled.scale, rtol=1e-4, atol=1e-5 * grad.abs().max().item())
        norm[init] = value.item()
    assert max(norm.values()) / min(norm.values()) < 10


def test_probe_size_with_pooling_and_a_dead_network():
    """With pooling the probe is at least 2^(depth-1) a side (never smaller than without pooling); a network
    that is zero on every compared block for the probe (here: one channel whose weights are all negative, so
    its ReLU is dead on a positive image) is refused instead of dividing by zero."""
    torch.manual_seed(0)
    deep = UPLLoss(depth=7, channels=4, pooling="max", init_seed=3)
    probe = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(PROBE_SEED))
    assert deep.scale == pytest.approx(UPLLoss(depth=7, channels=4, pooling="max", init_seed=3,
                                               normalize=False)(probe, torch.zeros_like(probe)).item(), rel=1e-6)
    small = UPLLoss(depth=3, channels=4, pooling="avg", init_seed=3)  # 32 x 32, not 4 x 4
    probe = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(PROBE_SEED))
    assert small.scale == pytest.approx(UPLLoss(depth=3, channels=4, pooling="avg", init_seed=3,
                                                normalize=False)(probe, torch.zeros_like(probe)).item(), rel=1e-6)
    dead = next(s for s in range(5000)
                if (UPLLoss(depth=3, channels=1, init_seed=s, normalize=False).net[0][0].weight < 0).all())
    with pytest.raises(ValueError, match=f"init_seed {dead}.*zero on every compared block"):
        UPLLoss(depth=3, channels=1, init_seed=dead)


def test_zero_for_identical_positive_otherwise(generator):
    pred, target = _pair(generator)
    loss = build_term("upl")
    assert loss(target, target).item() == 0.0
    assert loss(pred, target).item() > 0.0


def test_same_seed_same_network_regardless_of_global_rng(generator):
    pred, target = _pair(generator)
    torch.manual_seed(0)
    a = UPLLoss(init_seed=11)(pred, target)
    torch.manual_seed(1)
    b = UPLLoss(init_seed=11)(pred, target)
    c = UPLLoss(init_seed=12)(pred, target)
    assert a.item() == b.item()
    assert a.item() != c.item()


@pytest.mark.parametrize("init", INITS)
def test_initialisations_have_their_documented_scale(init):
    w = UPLLoss(depth=3, channels=64, kernel_size=5, init=init).net[1][0].weight  # 64 x 64 x 5 x 5
    fan_in, fan_out = 64 * 25, 64 * 25
    expected_std = {
        "kaiming": math.sqrt(2.0 / fan_in),
        "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
        "normal": 0.02,
        "uniform": fan_in**-0.5 / math.sqrt(3.0),
    }[init]
    assert w.std().item() == pytest.approx(expected_std, rel=0.03)
    assert abs(w.mean().item()) < 0.05 * expected_std * 10


def test_frozen_and_not_in_checkpoints(generator):
    comp = build_loss([("mse", 1.0, {}), ("upl", 0.1, {"init_seed": 3})])
    term = comp.terms["upl"]
    assert all(not p.requires_grad for p in term.parameters())
    assert comp.generator_parameters() == [] and comp.checkpoint_state() == {}
    before = {k: v.clone() for k, v in term.state_dict().items()}
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    comp.train()
    assert not term.net.training
    pred, target = _pair(generator)
    for _ in range(3):
        opt.zero_grad()
        comp(net(pred), target).backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in term.state_dict().items())
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0  # gradients reach the denoiser


@pytest.mark.parametrize("pooling", ["none", "max", "avg"])
def test_3d_variant(generator, pooling):
    pred, target = _pair(generator, (1, 1, 8, 16, 16))
    loss = UPLLoss(dims=3, depth=4, channels=[4, 8, 8, 16], pooling=pooling, kernel_size=3)
    assert isinstance(loss.net[0][0], torch.nn.Conv3d)
    pred.requires_grad_(True)
    value = loss(pred, target)
    value.backward()
    assert value.item() > 0 and pred.grad is not None and torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match=r"\(N, 1, D, H, W\)"):
        loss(pred[:, :, 0], target[:, :, 0])
    assert 3 in LOSSES["upl"].dims


@pytest.mark.parametrize(
    "kwargs,match",
    [({"depth": 8}, "depth"), ({"kernel_size": 4}, "kernel_size"), ({"pooling": "lp"}, "pooling"),
     ({"init": "orthogonal"}, "init"), ({"layers": [6]}, "layers"), ({"channels": [8, 8]}, "channels"),
     ({"distance": "l3"}, "distance"), ({"dims": 1}, "dims")],
)
def test_bad_kwargs(kwargs, match):
    with pytest.raises(UserError, match=match):
        build_term("upl", kwargs)
