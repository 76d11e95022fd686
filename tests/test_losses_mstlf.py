"""MSTLF texture loss: grid, aggregations, attention parameters, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from benchmark.core.conventions import hu_to_net
from benchmark.core.errors import UserError
from losses import LOSSES, build_loss, build_term
from losses.glcm import glcm_features, glcm_offsets
from losses.mstlf import MSTLFAttentionLoss, MSTLFLoss, mstlf_offsets

STATIC = ["max", "average", "frobenius"]


def _pair(generator: torch.Generator, n: int = 2, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    target = 0.25 + 0.03 * torch.randn(n, 1, size, size, generator=generator)
    pred = target + 0.02 * torch.randn(n, 1, size, size, generator=generator)
    return pred, target


def test_grid_is_the_papers_4x4_layout():
    offs = mstlf_offsets()
    assert len(offs) == 16
    assert offs[:4] == [(0, 1), (0, 3), (0, 5), (0, 7)]  # 0°: distances 1, 3, 5, 7
    assert offs[4:8] == [(1, 1), (2, 2), (4, 4), (6, 6)]  # 45°: 1, 2, 4, 6 diagonal steps
    assert offs[8:12] == [(1, 0), (3, 0), (5, 0), (7, 0)]  # 90°
    assert offs[12:] == [(1, -1), (2, -2), (4, -4), (6, -6)]  # 135°
    # the diagonal steps are scikit-image distances d·√2
    assert glcm_offsets([2 * 2**0.5], [45, 135]) == [(2, 2), (2, -2)]


def test_grid_values_match_glcm_features(generator):
    pred, _ = _pair(generator)
    loss = MSTLFLoss(features=["contrast", "asm"], levels=64)
    grid = loss.grid(pred)
    assert grid.shape == (2, 2, 4, 4)
    ref = glcm_features(pred, mstlf_offsets(), ["contrast", "asm"], 64)
    torch.testing.assert_close(grid[:, 0].reshape(2, 16), ref["contrast"])
    torch.testing.assert_close(grid[:, 1].reshape(2, 16), ref["asm"])


@pytest.mark.parametrize("aggregation", STATIC)
def test_static_aggregations(generator, aggregation):
    pred, target = _pair(generator)
    loss = MSTLFLoss(aggregation=aggregation, features=["contrast", "homogeneity"], levels=64)
    delta = (loss.grid(pred) - loss.grid(target)).abs().flatten(2)  # (N, F, 16)
    expected = {
        "max": delta.amax(-1),
        "average": delta.mean(-1),
        "frobenius": delta.pow(2).sum(-1).sqrt(),
    }[aggregation].sum(1).mean()
    value = loss(pred, target)
    torch.testing.assert_close(value, expected)
    assert value > 0
    assert loss(target, target).item() == 0.0


def test_attention_starts_as_average_and_is_zero_for_identical_inputs(generator):
    pred, target = _pair(generator)
    att = MSTLFAttentionLoss(levels=64)
    avg = MSTLFLoss(aggregation="average", levels=64)
    torch.testing.assert_close(att(pred, target), avg(pred, target))  # γ = 0 at init
    with torch.no_grad():
        att.attention.gamma.fill_(0.7)
    assert att(pred, target).item() != pytest.approx(avg(pred, target).item())
    assert att(target, target).item() == 0.0  # value projection has no bias


def test_attention_init_is_seeded_locally():
    torch.manual_seed(1)
    a = MSTLFAttentionLoss(init_seed=5).state_dict()
    torch.manual_seed(2)
    b = MSTLFAttentionLoss(init_seed=5).state_dict()
    c = MSTLFAttentionLoss(init_seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["attention.query.weight"], c["attention.query.weight"])


def test_attention_parameters_join_generator_and_checkpoint(generator):
    comp = build_loss([("mse", 1.0, {}), ("mstlf_attention", 0.001, {"levels": 32})])
    params = comp.generator_parameters()
    assert len(params) == 6  # query w/b, key w/b, value w, gamma
    pred, target = _pair(generator)
    pred.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        comp(pred, target).backward()
        opt.step()
    assert comp.terms["mstlf_attention"].attention.gamma.item() != 0.0
    state = comp.checkpoint_state()
    assert "terms.mstlf_attention.attention.gamma" in state
    fresh = build_loss([("mse", 1.0, {}), ("mstlf_attention", 0.001, {"levels": 32, "init_seed": 99})])
    fresh.load_checkpoint_state(state)
    torch.testing.assert_close(fresh(pred, target), comp(pred, target), rtol=0, atol=0)


def test_static_loss_has_no_state():
    comp = build_loss([("mstlf", 1.0, {"aggregation": "max"})])
    assert comp.generator_parameters() == []
    assert comp.checkpoint_state() == {}


def test_metadata():
    assert LOSSES["mstlf_attention"].has_parameters and not LOSSES["mstlf"].has_parameters
    assert LOSSES["mstlf"].differentiable and not LOSSES["mstlf"].needs_weights


def test_gradcheck_float64(generator):
    pred = (0.5 + 0.1 * torch.randn(1, 1, 9, 9, generator=generator, dtype=torch.float64)).requires_grad_()
    target = 0.5 + 0.1 * torch.randn(1, 1, 9, 9, generator=generator, dtype=torch.float64)
    for loss in (MSTLFLoss(levels=8, features=["contrast", "correlation"]), MSTLFLoss(aggregation="frobenius", levels=8)):
        assert torch.autograd.gradcheck(lambda p, loss=loss: loss(p, target), (pred,), fast_mode=True)


@pytest.mark.parametrize("aggregation", [*STATIC, "attention"])
def test_finite_gradients_on_constant_images(aggregation):
    cls = MSTLFAttentionLoss if aggregation == "attention" else MSTLFLoss
    kwargs = {} if aggregation == "attention" else {"aggregation": aggregation}
    loss = cls(features=["contrast", "homogeneity", "correlation", "asm"], levels=64, **kwargs)
    pred = torch.full((2, 1, 16, 16), 0.25, requires_grad=True)
    target = torch.full((2, 1, 16, 16), 0.3)
    value = loss(pred, target)
    value.backward()
    assert torch.isfinite(value) and pred.grad is not None and torch.isfinite(pred.grad).all()


def test_window_sets_the_bin_range():
    loss = MSTLFLoss(window="abdomen")
    assert loss.value_range == pytest.approx((hu_to_net(-160.0), hu_to_net(240.0)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"aggregation": "median"}, "aggregation"),
        ({"aggregation": "attention"}, "mstlf_attention"),
        ({"features": ["energy"]}, "features"),
        ({"sigma": 0}, "sigma"),
        ({"value_range": [1, 0]}, "value_range"),
        ({"window": "nonsense"}, "window"),
        ({"levels": 300, "bins": 3}, "bins"),
    ],
)
def test_bad_kwargs_are_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        build_term("mstlf", kwargs)
