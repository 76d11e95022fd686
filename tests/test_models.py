"""Architectures: shapes, published sizes, and every parameter gets a gradient."""

from __future__ import annotations

import pytest
import torch

from benchmark.core.errors import UserError
from models import ARCHITECTURES, DISCRIMINATORS, build_model

# the transformer/SSM hourglasses at their default width take seconds a step on a CPU: a smaller slice (padded
# to 24 inside, so the padding and cropping are exercised too)
SIDE_2D = {"restormer": 20, "denomamba": 20}
# two-domain translators (UNIT): forward is the LD -> ND path only, the other paths are ``translate``'s; they have
# no residual output, so no zero_init_output (models/unit.py says why)
TWO_DOMAIN = {n for n, info in ARCHITECTURES.items() if callable(getattr(info.cls, "translate", None))}


def _input(name: str, generator: torch.Generator) -> torch.Tensor:
    """A small input of the architecture's dimensionality: 2 slices of 40x40 (``SIDE_2D`` for the slow ones),
    or 2 volumes of 6x12x12."""
    if 3 in ARCHITECTURES[name].dims:
        return torch.rand(2, 1, 6, 12, 12, generator=generator)
    side = SIDE_2D.get(name, 40)
    return torch.rand(2, 1, side, side, generator=generator)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_shape_and_every_parameter_gets_a_gradient(name, generator):
    torch.manual_seed(0)
    model = build_model(name)
    x = _input(name, generator)
    y = model(x)
    assert y.shape == x.shape
    loss = (y - x.flip(-1)).pow(2).mean()
    if name in TWO_DOMAIN:  # every encoder and decoder: the in-domain and the B -> A paths as well
        loss = loss + sum((model.translate(x, s, t) - x).pow(2).mean() for s, t in ("aa", "bb", "ba"))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_redcnn_matches_paper_layout():
    m = build_model("redcnn")
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert len(convs) == 10
    assert all(c.kernel_size == (5, 5) and c.stride == (1, 1) and c.padding == (0, 0) for c in convs)
    assert {c.out_channels for c in convs[:-1]} == {96}
    # 5 conv + 5 deconv of 96 filters 5x5: (1*96 + 4*96*96 + 4*96*96 + 96*1) * 25 weights + biases
    expected = (96 + 8 * 96 * 96 + 96) * 25 + 9 * 96 + 1
    assert sum(p.numel() for p in m.parameters()) == expected


def test_dncnn_depth_and_residual():
    m = build_model("dncnn", {"depth": 17, "channels": 64})
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert len(convs) == 17
    with torch.no_grad():
        for p in m.body[-1].parameters():
            p.zero_()
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(m(x), x)  # zero noise estimate returns the input: residual learning


def test_bad_kwargs_name_the_field():
    with pytest.raises(UserError, match=r"architectures.*allowed kwargs: .*channels"):
        build_model("redcnn", {"chanels": 32})


@pytest.mark.parametrize("name", sorted(set(ARCHITECTURES) - TWO_DOMAIN))
def test_zero_init_output_starts_at_the_identity(name, generator):
    model = build_model(name, {"zero_init_output": True}).eval()
    x = _input(name, generator)  # network space is non-negative: RED-CNN's output ReLU keeps it
    with torch.no_grad():
        assert torch.equal(model(x), x)
    default = build_model(name).eval()
    with torch.no_grad():
        assert not torch.allclose(default(x), x, atol=1e-3)


@pytest.mark.parametrize(("name", "registry"), [(n, ARCHITECTURES) for n in ARCHITECTURES]
                         + [(n, DISCRIMINATORS) for n in DISCRIMINATORS])  # fmt: skip
def test_registered_parameter_count_is_the_built_models(name, registry):
    """The registry's ``parameters`` (shown by ``ldct-bench list``) is the default model's count."""
    model = build_model(name, registry=registry)
    assert registry[name].parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
