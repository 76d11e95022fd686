"""VGG perceptual loss on a seeded random backbone written to a temporary TORCH_HOME."""

from __future__ import annotations

import pytest
import torch

from benchmark.core.compat import ensure_torchvision
from benchmark.core.errors import UserError
from benchmark.core.weights import weight_path, write_random_weights
from losses import LOSSES, build_loss, build_term
from losses.vgg import IMAGENET_MEAN, IMAGENET_STD, layer_names


def test_layer_names_match_torchvision_indices():
    vgg = ensure_torchvision().models.vgg
    names16 = layer_names(vgg.make_layers(vgg.cfgs["D"]))  # the features stack of vgg16
    names19 = layer_names(vgg.make_layers(vgg.cfgs["E"]))  # vgg19
    # torchvision's features indices of the usual layers (Johnson et al.; WGAN-VGG's relu5_4 = index 35)
    assert [names16.index(n) for n in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "pool5")] == [3, 8, 15, 22, 30]
    assert [names19.index(n) for n in ("relu3_4", "relu4_4", "relu5_4")] == [17, 26, 35]


def test_missing_weights_file_is_a_user_error(tmp_cache):
    with pytest.raises(UserError, match=r"vgg16-397923af\.pth") as err:
        build_term("vgg")
    assert "ldct-bench weights fetch vgg16" in str(err.value)


@pytest.mark.slow
def test_vgg16_loss_on_random_backbone(tmp_cache, generator):
    path = write_random_weights("vgg16", seed=0)
    assert path == weight_path("vgg16") and path.name == "vgg16-397923af.pth"
    comp = build_loss([("mse", 1.0, {}), ("vgg", 0.1, {})])
    loss = comp.terms["vgg"]
    assert loss.layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    assert len(loss.features) == 23  # truncated after relu4_3
    # frozen, eval mode, not in checkpoints, loaded from the file
    assert all(not p.requires_grad for p in loss.parameters())
    comp.train()
    assert not loss.features.training
    assert comp.checkpoint_state() == {} and comp.generator_parameters() == []
    state = torch.load(path, weights_only=True)
    torch.testing.assert_close(loss.features[0].weight, state["features.0.weight"], rtol=0, atol=0)

    target = 0.25 + 0.05 * torch.rand(2, 1, 32, 32, generator=generator)
    pred = (target + 0.02 * torch.randn(2, 1, 32, 32, generator=generator)).requires_grad_()
    assert loss(target, target).item() == 0.0
    value = loss(pred, target)
    value.backward()
    assert value.item() > 0 and pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())

    # the documented input mapping: repeat to 3 channels, ImageNet normalisation
    x = loss.to_vgg_input(target)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (target.repeat(1, 3, 1, 1) - mean) / std)
    raw = build_term("vgg", {"imagenet_norm": False, "window": "abdomen", "layers": ["conv1_1"], "distance": "l1"})
    hu = target * 4096 - 1024
    torch.testing.assert_close(raw.to_vgg_input(target), ((hu.clamp(-160, 240) + 160) / 400).repeat(1, 3, 1, 1))

    with pytest.raises(UserError, match="relu5_4"):
        build_term("vgg", {"layers": ["relu5_4"]})  # VGG16 has relu5_3, not relu5_4
    with pytest.raises(UserError, match="preset"):
        build_term("vgg", {"preset": "srgan"})


def test_wgan_vgg_preset_selects_vgg19_relu5_4(monkeypatch):
    vgg = ensure_torchvision().models.vgg
    built = []

    def fake_features(arch: str, *_: object) -> torch.nn.Sequential:  # stands in for the weights file: structure only
        built.append(arch)
        return vgg.make_layers(vgg.cfgs["E" if arch == "vgg19" else "D"]).requires_grad_(False).eval()

    monkeypatch.setattr("losses.vgg.build_vgg_features", fake_features)
    loss = build_term("vgg", {"preset": "wgan_vgg"})
    assert built == ["vgg19"] and loss.layers == ("relu5_4",) and loss.distance == "l2"
    assert len(loss.features) == 36
    assert build_term("vgg", {"arch": "vgg19"}).layers == ("relu1_2", "relu2_2", "relu3_4", "relu4_4")


def test_metadata():
    info = LOSSES["vgg"]
    assert info.needs_weights and info.differentiable and not info.has_parameters


def test_random_backbone_needs_no_file_and_is_seeded(tmp_cache):
    """``backbone: random`` builds an untrained VGG from a local seeded generator: no weight file (the
    empty temporary cache has none), the same network for the same seed, another for another seed, and
    the global RNG is left alone."""
    from losses import build_term

    kw = {"backbone": "random", "layers": ["relu1_2", "relu2_2"]}
    state = torch.get_rng_state()
    a, b = build_term("vgg", kw), build_term("vgg", kw)
    assert torch.equal(state, torch.get_rng_state())
    c = build_term("vgg", {**kw, "init_seed": 1})
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=gen, requires_grad=True)
    y = torch.rand(2, 1, 32, 32, generator=gen)
    a(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert float(a(y, y)) == 0.0
    with pytest.raises(UserError, match="backbone"):
        build_term("vgg", {"backbone": "imagenett"})
