"""U-Net, ResNet and the CycleGAN ResNet generator (2-D; U-Net and ResNet also 3-D): shapes for odd sizes,
gradients, parameter counts from the layer lists, the skip/residual structure, the generator's layout,
the smallest input side, and training (and bit-identical resuming) in a matrix cell."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import parse_matrix
from benchmark.layout import DONE, RunLayout
from benchmark.runner import Runner
from models import ARCHITECTURES
from models.resnet import ResNet, ResNet3D
from models.resnet_gen import ResNetGenerator
from models.unet import UNet, UNet3D

SHAPE_2D = (2, 1, 37, 45)
SHAPE_3D = (2, 1, 5, 21, 19)

CASES = [
    (UNet, {"channels": 8, "depth": 2}, SHAPE_2D),
    (UNet, {"channels": 8, "depth": 3, "batch_norm": False, "padding_mode": "replicate"}, SHAPE_2D),
    (UNet, {"channels": 4, "depth": 1, "padding_mode": "zeros"}, (2, 1, 3, 1)),
    (UNet3D, {"channels": 4, "depth": 2}, SHAPE_3D),
    (ResNet, {"channels": 8, "blocks": 2}, SHAPE_2D),
    (ResNet, {"channels": 8, "blocks": 2, "batch_norm": True, "kernel_size": 5}, SHAPE_2D),
    (ResNet3D, {"channels": 4, "blocks": 2}, SHAPE_3D),
    (ResNetGenerator, {"channels": 8, "blocks": 2}, SHAPE_2D),
    (ResNetGenerator, {"channels": 4, "blocks": 1}, (2, 1, 5, 7)),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(CASES)]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(("cls", "kwargs", "shape"), CASES, ids=IDS)
def test_odd_sizes_keep_their_shape_and_every_parameter_gets_a_gradient(cls, kwargs, shape, generator):
    torch.manual_seed(0)
    model = cls(**kwargs)
    x = torch.rand(*shape, generator=generator)
    y = model(x)
    assert y.shape == x.shape
    (y - x.flip(-1)).pow(2).mean().backward()
    bad = [n for n, p in model.named_parameters()
           if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not bad, f"parameters without a finite non-zero gradient: {bad}"


# ----- parameter counts, written out from each paper's layer list ------------------------------------------


def _unet_count(*, dims: int = 2, depth: int = 4, channels: int = 64, batch_norm: bool = True) -> int:
    k = 3**dims  # weights of one 3x3 (3x3x3) kernel
    t = 2**dims  # weights of one 2x2 (2x2x2) up-convolution kernel
    w = [channels * 2**i for i in range(depth + 1)]

    def two_convs(cin: int, cout: int) -> int:  # conv-(BN)-ReLU-conv-(BN)-ReLU; BN: weight+bias, no conv bias
        return k * cin * cout + k * cout * cout + (4 if batch_norm else 2) * cout

    encoder = two_convs(1, w[0]) + sum(two_convs(w[i - 1], w[i]) for i in range(1, depth))
    bottleneck = two_convs(w[depth - 1], w[depth])
    ups = sum(t * w[i + 1] * w[i] + w[i] for i in range(depth))
    decoder = sum(two_convs(2 * w[i], w[i]) for i in range(depth))  # skip concatenation doubles the input
    output = w[0] * 1 + 1  # 1x1 convolution to one channel
    return encoder + bottleneck + ups + decoder + output


def _resnet_count(*, dims: int = 2, blocks: int = 16, channels: int = 64, kernel_size: int = 3,
                  batch_norm: bool = False) -> int:
    k, c = kernel_size**dims, channels
    head = k * 1 * c + c
    block = 2 * (k * c * c + (2 * c if batch_norm else c))
    tail = k * c * 1 + 1
    return head + blocks * block + tail


def _generator_count(*, channels: int = 64, blocks: int = 9) -> int:
    c = channels
    norm = lambda n: 2 * n  # noqa: E731  (InstanceNorm scale and shift; the conv before it has no bias)
    c7s1 = 49 * 1 * c + norm(c)
    d128 = 9 * c * 2 * c + norm(2 * c)
    d256 = 9 * 2 * c * 4 * c + norm(4 * c)
    r256 = 2 * (9 * 4 * c * 4 * c + norm(4 * c))
    u128 = 9 * 4 * c * 2 * c + norm(2 * c)
    u64 = 9 * 2 * c * c + norm(c)
    last = 49 * c * 1 + 1
    return c7s1 + d128 + d256 + blocks * r256 + u128 + u64 + last


@pytest.mark.parametrize(
    ("cls", "kwargs", "expected"),
    [
        (UNet, {}, _unet_count()),
        (UNet, {"channels": 8, "depth": 2, "batch_norm": False}, _unet_count(channels=8, depth=2, batch_norm=False)),
        (UNet3D, {}, _unet_count(dims=3)),
        (UNet3D, {"channels": 4, "depth": 3}, _unet_count(dims=3, channels=4, depth=3)),
        (ResNet, {}, _resnet_count()),
        (ResNet, {"channels": 8, "blocks": 3, "batch_norm": True, "kernel_size": 5},
         _resnet_count(channels=8, blocks=3, batch_norm=True, kernel_size=5)),
        (ResNet3D, {}, _resnet_count(dims=3)),
        (ResNetGenerator, {}, _generator_count()),
        (ResNetGenerator, {"blocks": 6, "channels": 16}, _generator_count(blocks=6, channels=16)),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_parameter_count_is_the_layer_lists(cls, kwargs, expected):
    assert _count(cls(**kwargs)) == expected


def test_defaults_match_the_registry_and_the_literal_counts():
    # the same formulas evaluated by hand at the defaults (and the registry, which ldct-bench list shows)
    assert _unet_count() == 31_036_481 == ARCHITECTURES["unet"].parameters
    assert _unet_count(dims=3) == 90_298_561 == ARCHITECTURES["unet3d"].parameters
    assert 576 + 64 + 16 * 2 * (9 * 64 * 64 + 64) + 576 + 1 == _resnet_count() == ARCHITECTURES["resnet"].parameters
    assert _resnet_count(dims=3) == 3_544_513 == ARCHITECTURES["resnet3d"].parameters
    assert _generator_count() == 11_370_881 == ARCHITECTURES["resnet_gen"].parameters
    assert {n: ARCHITECTURES[n].dims for n in ("unet", "resnet", "resnet_gen", "unet3d", "resnet3d")} == {
        "unet": (2,), "resnet": (2,), "resnet_gen": (2,), "unet3d": (3,), "resnet3d": (3,)}


# ----- U-Net: residual output, skips, padding -----------------------------------------------------------------


@pytest.mark.parametrize(("cls", "shape"), [(UNet, SHAPE_2D), (UNet3D, SHAPE_3D)])
def test_unet_with_the_output_conv_zeroed_is_the_identity(cls, shape, generator):
    model = cls(channels=4, depth=2)  # training mode: BatchNorm on batch statistics
    x = torch.rand(*shape, generator=generator)
    assert not torch.allclose(model(x), x, atol=1e-4)
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
    assert torch.equal(model(x), x)


def test_unet_decoder_concatenates_the_encoder_features_of_its_level(generator):
    depth = 3
    model = UNet(channels=4, depth=depth).eval()
    enc_out: list[torch.Tensor] = []
    dec_in: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: enc_out.append(o.clone())) for b in model.encoder]
    hooks += [b.register_forward_pre_hook(lambda m, i: dec_in.append(i[0].clone())) for b in model.decoder]
    with torch.no_grad():
        model(torch.rand(1, 1, 40, 24, generator=generator))
    for h in hooks:
        h.remove()
    assert [tuple(t.shape[1:]) for t in enc_out] == [(4, 40, 24), (8, 20, 12), (16, 10, 6)]
    for level, skip in enumerate(enc_out):
        got = dec_in[depth - 1 - level]  # the decoder runs from the deepest level up
        assert got.shape[1] == 2 * skip.shape[1]
        assert torch.equal(got[:, : skip.shape[1]], skip)


def test_unet_without_up_path_keeps_the_top_skip_only(generator):
    """Zeroed up-convolutions cut every path through the deeper levels: the output still depends on the
    input (through the level-0 skip), the deeper encoder levels get no gradient."""
    model = UNet(channels=4, depth=2)
    with torch.no_grad():
        for up in model.up:
            up.weight.zero_()
            up.bias.zero_()
    x = torch.rand(2, 1, 16, 16, generator=generator)
    y = model(x)
    assert not torch.allclose(y, x, atol=1e-4)
    y.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder[0].parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoder[1].parameters())


def _reflect_pad(x: torch.Tensor, multiple: int, dims: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """The documented padding, written out: up to a multiple, half before and the odd pixel after."""
    pads: list[int] = []
    crop: list[slice] = []
    for n in x.shape[-dims:]:
        total = (multiple - n % multiple) % multiple
        pads = [total // 2, total - total // 2, *pads]
        crop.append(slice(total // 2, total // 2 + n))
    return F.pad(x, pads, mode="reflect"), (slice(None), slice(None), *crop)


@pytest.mark.parametrize(("cls", "kwargs", "multiple", "shape"), [
    (UNet, {"channels": 4, "depth": 3}, 8, SHAPE_2D),
    (UNet3D, {"channels": 2, "depth": 2}, 4, SHAPE_3D),
    (ResNetGenerator, {"channels": 4, "blocks": 1}, 4, SHAPE_2D),
], ids=["UNet", "UNet3D", "ResNetGenerator"])
def test_odd_sizes_are_reflect_padded_and_cropped_back(cls, kwargs, multiple, shape, generator):
    """The network on an odd-sized input is the network on the reflect-padded input, cropped."""
    model = cls(**kwargs).eval()
    x = torch.rand(*shape, generator=generator)
    padded, crop = _reflect_pad(x, multiple, len(shape) - 2)
    assert padded.shape != x.shape
    with torch.no_grad():
        assert torch.equal(model(x), model(padded)[crop])


# ----- ResNet ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "shape"), [(ResNet, SHAPE_2D), (ResNet3D, SHAPE_3D)])
def test_resnet_residual_structure(cls, shape, generator):
    model = cls(channels=4, blocks=2)
    conv = nn.Conv2d if cls is ResNet else nn.Conv3d
    convs = [m for m in model.modules() if isinstance(m, conv)]
    assert len(convs) == 1 + 2 * 2 + 1 and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(c.kernel_size == (3,) * (2 if cls is ResNet else 3) and c.stride == (1,) * len(c.stride) for c in convs)
    x = torch.rand(*shape, generator=generator)
    with torch.no_grad():
        # every block with its second conv zeroed is the identity: the body passes the head's features on
        for block in model.body:
            block.body[-1].weight.zero_()
            block.body[-1].bias.zero_()
        expected = x + model.tail(model.head(x))
        assert torch.equal(model(x), expected)


# ----- ResNet generator: Zhu et al.'s layout --------------------------------------------------------------


@pytest.mark.parametrize("blocks", [9, 6])
def test_generator_layout_is_zhu_et_al(blocks):
    model = ResNetGenerator(blocks=blocks)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    r = 2 * blocks
    assert [c.kernel_size[0] for c in convs] == [7, 3, 3] + [3] * r + [3, 3, 7]
    assert [c.stride[0] for c in convs] == [1, 2, 2] + [1] * r + [2, 2, 1]
    assert [c.out_channels for c in convs] == [64, 128, 256] + [256] * r + [128, 64, 1]
    assert [isinstance(c, nn.ConvTranspose2d) for c in convs] == [False] * (3 + r) + [True, True, False]
    assert all(c.output_padding == (1, 1) and c.padding == (1, 1) for c in convs[-3:-1])  # fractional stride 1/2
    assert convs[0].padding == convs[-1].padding == (0, 0)  # the 7x7 ones are reflection padded instead
    pads = [m.padding for m in model.modules() if isinstance(m, nn.ReflectionPad2d)]
    assert pads == [(3, 3, 3, 3)] + [(1, 1, 1, 1)] * r + [(3, 3, 3, 3)]
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3 + r + 2 and all(n.affine and not n.track_running_stats for n in norms)
    banned = (nn.BatchNorm2d, nn.Tanh, nn.Sigmoid, nn.Dropout)
    assert not any(isinstance(m, banned) for m in model.modules())


def test_generator_runs_its_blocks_at_a_quarter_of_the_padded_size(generator):
    model = ResNetGenerator(channels=4, blocks=2)
    seen: list[tuple[int, ...]] = []
    model.blocks.register_forward_pre_hook(lambda m, i: seen.append(tuple(i[0].shape)))
    model(torch.rand(1, 1, 30, 45, generator=generator))  # padded to 32 x 48
    assert seen == [(1, 16, 8, 12)]


def test_generator_output_is_linear_and_residual(generator):
    x = torch.rand(2, 1, 20, 24, generator=generator)
    assert torch.equal(ResNetGenerator(channels=4, blocks=1, zero_init_output=True)(x), x)
    plain = ResNetGenerator(channels=4, blocks=1, residual=False)
    with torch.no_grad():
        plain.output[-1].weight.zero_()
        plain.output[-1].bias.fill_(-0.25)
        assert torch.equal(plain(x), torch.full_like(x, -0.25))  # no tanh/sigmoid squashing the last conv
    with pytest.raises(ValueError, match="out_channels == in_channels"):
        ResNetGenerator(out_channels=2)
    assert ResNetGenerator(channels=4, blocks=1, out_channels=2, residual=False)(x).shape == (2, 2, 20, 24)


# ----- smallest input side --------------------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "smallest"), [(1, 2), (2, 2), (3, 4), (4, 6)])
def test_unet_reflect_min_input_size_is_exact(depth, smallest, generator):
    """By hand: the side n must exceed the larger half of the pad up to a multiple of 2**depth."""
    info = ARCHITECTURES["unet"]
    assert info.min_size_for({"depth": depth, "channels": 2}) == smallest
    model = UNet(depth=depth, channels=2).eval()
    with torch.no_grad():
        for n in range(smallest, smallest + 2**depth + 1):
            assert model(torch.rand(1, 1, n, smallest, generator=generator)).shape == (1, 1, n, smallest)
        too_small = torch.rand(1, 1, smallest - 1, 40, generator=generator)
        with pytest.raises(RuntimeError, match="Padding size should be less"):  # PyTorch's own limit
            _reflect_pad(too_small, 2**depth, 2)
        with pytest.raises(ValueError, match=rf"\({smallest - 1}, 40\).*at least {smallest}"):
            model(too_small)


def test_min_input_size_of_the_other_models(generator):
    assert [ARCHITECTURES[n].min_size for n in ("unet", "unet3d", "resnet", "resnet3d", "resnet_gen")] == [6, 6, 1, 1, 5]
    for mode in ("replicate", "zeros"):
        assert ARCHITECTURES["unet"].min_size_for({"padding_mode": mode}) == 1
        assert UNet(depth=4, channels=2, padding_mode=mode).eval()(torch.rand(1, 1, 1, 3)).shape == (1, 1, 1, 3)
    assert ResNet(channels=2, blocks=1)(torch.rand(1, 1, 1, 1)).shape == (1, 1, 1, 1)
    assert ResNet3D(channels=2, blocks=1)(torch.rand(1, 1, 1, 1, 1)).shape == (1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # BatchNorm, as documented:
        UNet(depth=2, channels=2)(torch.rand(1, 1, 4, 4))  # a batch of one with a 1x1 bottleneck in training
    assert UNet(depth=2, channels=2)(torch.rand(1, 1, 5, 4)).shape == (1, 1, 5, 4)  # 2x1 bottleneck
    with pytest.raises(ValueError, match=r"\(5, 8, 8\).*at least 6"):  # the depth axis counts as well
        UNet3D(channels=2).eval()(torch.rand(1, 1, 5, 8, 8))
    gen = ResNetGenerator(channels=2, blocks=1)
    for n in range(5, 14):
        assert gen(torch.rand(1, 1, n, 5, generator=generator)).shape == (1, 1, n, 5)
    with pytest.raises(ValueError, match=r"\(4, 9\).*at least 5"):
        gen(torch.rand(1, 1, 4, 9))
    # why not 4: a 4-pixel side is already a multiple of 4, but its 1x1 quarter can neither be instance
    # normalised (one pixel per map, in training and evaluation) nor reflection padded by the blocks
    for mode in (True, False):
        with pytest.raises(ValueError, match="more than 1 spatial element"):
            gen.train(mode).encoder(torch.rand(1, 1, 4, 4))
    with pytest.raises(RuntimeError, match="Padding size should be less"):
        gen.blocks[0].body[0](torch.rand(1, 8, 1, 1))


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="padding_mode"):
        UNet(padding_mode="circular")
    with pytest.raises(ValueError, match="depth"):
        UNet3D(depth=0)
    with pytest.raises(ValueError, match="kernel_size"):
        ResNet(kernel_size=4)
    with pytest.raises(ValueError, match="blocks"):
        ResNetGenerator(blocks=0)
    with pytest.raises(ValueError, match=r"expects \(N, C, D, H, W\)"):
        UNet3D(channels=2, depth=1)(torch.rand(1, 1, 8, 8))


# ----- training in a matrix cell ------------------------------------------------------------------------

SMALL = {
    "unet": {"channels": 8, "depth": 2},
    "resnet": {"channels": 8, "blocks": 2},
    "resnet_gen": {"channels": 8, "blocks": 2},
}


@pytest.mark.slow
def test_each_architecture_trains_in_a_cell_and_resumes_bit_identically(tmp_path):
    matrix = parse_matrix({
        "dataset": {"kind": "synth", "options": {"size": "tiny", "patients": 3, "slices_per_patient": 2}},
        "losses": ["mse"],
        "architectures": [{"name": n, "kwargs": kw} for n, kw in SMALL.items()],
        "doses": ["25_360"],
        "training": {"epochs": 2, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
        "device": "cpu",
    })
    Runner(matrix, tmp_path / "straight", quiet=True).run()
    straight = RunLayout(tmp_path / "straight")
    cells = {c.architecture: c for c in straight.cells()}
    assert set(cells) == set(SMALL)
    for name, cell in cells.items():
        assert cell.status == "done", (name, cell.detail)
        hist = straight.history(cell.cell_id)
        assert list(hist["epoch"]) == [1, 2]
        assert hist[["train_loss", "val_loss"]].notna().all().all()
        assert (hist["val_loss"] > 0).all()

    # a crash after epoch 1 in every cell: only epoch 1's checkpoints survive, then the same command again
    Runner(matrix, tmp_path / "crashed", quiet=True).run()
    crashed = RunLayout(tmp_path / "crashed")
    for cell in crashed.cells():
        for epoch, path in crashed.checkpoints(cell.cell_id).items():
            if epoch > 1:
                path.unlink()
        crashed.marker(cell.cell_id, DONE).unlink()
    torch.manual_seed(12345)  # whatever the process did before must not matter
    summary = Runner(matrix, tmp_path / "crashed", quiet=True).run()
    assert sorted(summary.trained) == sorted(c.cell_id for c in cells.values())
    for cell in cells.values():
        a = straight.checkpoints(cell.cell_id)
        b = crashed.checkpoints(cell.cell_id)
        assert sorted(a) == sorted(b) == [1, 2]
        for epoch in a:
            assert a[epoch].read_bytes() == b[epoch].read_bytes(), f"{cell.architecture} epoch {epoch} differs"
