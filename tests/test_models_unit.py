"""UNIT (Liu, Breuel & Kautz, NeurIPS 2017): shapes, the parameter count from the layer list, the shared
encoder/decoder blocks (one module, gradients through either domain), every parameter trained by UNIT's
loss pattern, the deterministic LD → ND forward, the smallest input side and the registry entry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import ARCHITECTURES, build_model
from models.unit import UNIT

SMALL = {"channels": 4, "n_res": 3, "n_shared": 1}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _unit_count(*, in_channels: int = 1, channels: int = 64, n_downsample: int = 2, n_res: int = 4,
                n_shared: int = 1, norm: str = "instance") -> int:
    """The layer list written out: InstanceNorm has a scale and a shift and the conv before it no bias;
    without normalisation the convolutions have biases instead (the same count per layer)."""
    c, latent = channels, channels * 2**n_downsample
    post = lambda n: 2 * n if norm == "instance" else n  # noqa: E731  (IN scale+shift, or a conv bias)
    block = 2 * (9 * latent * latent + post(latent))
    stem = 49 * in_channels * c + post(c)
    downs = sum(9 * c * 2**i * c * 2 ** (i + 1) + post(c * 2 ** (i + 1)) for i in range(n_downsample))
    ups = sum(9 * c * 2**i * c * 2 ** (i - 1) + post(c * 2 ** (i - 1)) for i in range(n_downsample, 0, -1))
    last = 49 * c * in_channels + in_channels
    private = n_res - n_shared
    encoder = stem + downs + private * block
    decoder = private * block + ups + last
    return 2 * encoder + 2 * decoder + 2 * n_shared * block  # + the shared encoder and decoder blocks


@pytest.mark.parametrize("kwargs", [
    {}, {"channels": 8, "n_downsample": 3, "n_res": 5, "n_shared": 2}, {"channels": 8, "norm": "none"},
    {"channels": 4, "n_downsample": 1, "n_res": 1, "n_shared": 1, "in_channels": 2},
])  # fmt: skip
def test_parameter_count_is_the_layer_list(kwargs):
    assert _count(UNIT(**kwargs)) == _unit_count(**kwargs)


def test_defaults_match_the_registry():
    c = 64
    by_hand = 2 * (49 * c + 2 * c + 9 * c * 2 * c + 4 * c + 9 * 2 * c * 4 * c + 8 * c)  # two encoders' stems
    by_hand += 2 * (9 * 4 * c * 2 * c + 4 * c + 9 * 2 * c * c + 2 * c + 49 * c + 1)  # two decoders' ups + output
    by_hand += (2 * 3 + 2 * 3 + 2) * 2 * (9 * 256 * 256 + 2 * 256)  # 3 + 3 private, 1 + 1 shared blocks
    assert by_hand == _unit_count() == 18_019_074 == ARCHITECTURES["unit"].parameters == _count(build_model("unit"))
    info = ARCHITECTURES["unit"]
    assert info.cls is UNIT and info.dims == (2,) and "unit" in info.summary and "NeurIPS 2017" in info.paper


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 1, 37, 45), (1, 1, 5, 6)])
def test_shapes_of_every_path(shape, generator):
    model = UNIT(**SMALL)
    x = torch.rand(*shape, generator=generator)
    mu = model.encode(x, "a")
    hp, wp = (-(-n // 4) * 4 for n in shape[-2:])  # padded up to a multiple of 2**2
    assert mu.shape == (shape[0], 16, hp // 4, wp // 4) and model.latent_channels == 16
    assert model.decode(mu, "b").shape == (shape[0], 1, hp, wp)
    for src in "ab":
        for dst in "ab":
            assert model.translate(x, src, dst).shape == x.shape
    assert model(x).shape == x.shape


def test_decode_crops_back_what_encode_padded(generator):
    """With size, the decoded image is the centre crop that undoes the reflection padding (half before)."""
    model = UNIT(**SMALL).eval()
    x = torch.rand(1, 1, 29, 30, generator=generator)  # padded to 32 x 32: 1 before, 2 after; 1 and 1
    with torch.no_grad():
        full = model.decode(model.encode(x, "a"), "b")
        assert torch.equal(model(x), full[..., 1:30, 1:31])
    with pytest.raises(ValueError, match="unpadded size"):
        model.decode(model.encode(x, "a"), "b", size=(28, 30))


def test_shared_blocks_are_one_module_and_private_ones_are_not():
    model = UNIT(**SMALL)
    shared_enc = {id(p) for p in model.enc_shared.parameters()}
    shared_dec = {id(p) for p in model.dec_shared.parameters()}
    own = {d: {id(p) for p in getattr(model, f"enc_{d}").parameters()} | {id(p) for p in getattr(model, f"dec_{d}").parameters()}
           for d in "ab"}  # fmt: skip
    assert shared_enc and shared_dec and not shared_enc & shared_dec
    assert not own["a"] & own["b"] and not (own["a"] | own["b"]) & (shared_enc | shared_dec)
    # every parameter is in exactly one of the six parts, and the model holds each once
    assert len(own["a"] | own["b"] | shared_enc | shared_dec) == len(list(model.parameters()))
    # the private blocks: n_res - n_shared per encoder and per decoder, the shared ones n_shared
    assert len(model.enc_shared) == len(model.dec_shared) == 1
    assert len(model.enc_a[-1]) == len(model.enc_b[-1]) == len(model.dec_a[0]) == len(model.dec_b[0]) == 2


def test_both_encoders_run_the_same_shared_block(generator):
    """The shared block sees both domains' features: a forward hook on the one module fires for each."""
    model = UNIT(**SMALL)
    seen: list[int] = []
    model.enc_shared.register_forward_hook(lambda m, i, o: seen.append(id(m)))
    model.dec_shared.register_forward_hook(lambda m, i, o: seen.append(id(m)))
    x = torch.rand(1, 1, 16, 16, generator=generator)
    model.translate(x, "a", "a")
    model.translate(x, "b", "b")
    assert seen == [id(model.enc_shared), id(model.dec_shared)] * 2


@pytest.mark.parametrize("domain", ["a", "b"])
def test_a_gradient_through_either_encoder_reaches_the_shared_block_only_with_its_own(domain, generator):
    model = UNIT(**SMALL)
    x = torch.rand(2, 1, 16, 16, generator=generator)
    model.encode(x, domain).pow(2).mean().backward()
    other = "b" if domain == "a" else "a"

    def trained(module: nn.Module) -> bool:
        return all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    def untouched(module: nn.Module) -> bool:
        return all(p.grad is None for p in module.parameters())

    assert trained(model.enc_shared) and trained(getattr(model, f"enc_{domain}"))
    assert untouched(getattr(model, f"enc_{other}")) and untouched(model.dec_shared)
    assert untouched(model.dec_a) and untouched(model.dec_b)


def test_every_parameter_gets_a_gradient_from_the_unit_loss_pattern(generator):
    """UNIT's generator objective (paper eq. 7, without the GAN terms, which need discriminators):
    VAE reconstruction and KL of both domains, and both cycles with their KL; every parameter of both
    encoders, both decoders and the shared blocks is trained by it."""
    torch.manual_seed(0)
    model = UNIT(**SMALL)
    noise = torch.Generator().manual_seed(5)
    xa = torch.rand(2, 1, 24, 24, generator=generator)
    xb = torch.rand(2, 1, 24, 24, generator=generator)
    mu_a, mu_b = model.encode(xa, "a"), model.encode(xb, "b")
    za, zb = model.sample_latent(mu_a, noise), model.sample_latent(mu_b, noise)
    size = xa.shape[-2:]
    rec_a, rec_b = model.decode(za, "a", size), model.decode(zb, "b", size)
    ab, ba = model.decode(za, "b", size), model.decode(zb, "a", size)  # cross-domain translations
    mu_aba, mu_bab = model.encode(ab, "b"), model.encode(ba, "a")
    aba = model.decode(model.sample_latent(mu_aba, noise), "a", size)
    bab = model.decode(model.sample_latent(mu_bab, noise), "b", size)
    loss = (100 * ((rec_a - xa).abs().mean() + (rec_b - xb).abs().mean())
            + 0.1 * (model.kl(mu_a) + model.kl(mu_b)) + 0.1 * (model.kl(mu_aba) + model.kl(mu_bab))
            + 100 * ((aba - xa).abs().mean() + (bab - xb).abs().mean()))  # fmt: skip
    loss.backward()
    bad = [n for n, p in model.named_parameters()
           if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not bad, f"parameters without a finite non-zero gradient: {bad}"


def test_forward_is_the_deterministic_ld_to_nd_translation(generator):
    """forward = G_b(E_a(x)) with z = mu, in training and in evaluation mode, and it is not the identity."""
    torch.manual_seed(0)
    model = UNIT(**SMALL)
    x = torch.rand(2, 1, 20, 20, generator=generator)
    with torch.no_grad():
        expected = model.decode(model.encode(x, "a"), "b", x.shape[-2:])
        for mode in (True, False, True):
            model.train(mode)
            torch.manual_seed(1 + mode)  # the global generator must not matter either
            assert torch.equal(model(x), expected)
        assert not torch.allclose(model(x), x, atol=1e-3)
        assert not torch.allclose(model(x), model.translate(x, "a", "a"))  # G_b differs from G_a
        assert not torch.allclose(model(x), model.translate(x, "b", "b"))  # E_a differs from E_b


def test_latent_sampling_adds_unit_variance_noise_from_the_generator():
    mu = torch.full((4, 8, 32, 32), 0.5)
    z1 = UNIT.sample_latent(mu, torch.Generator().manual_seed(3))
    z2 = UNIT.sample_latent(mu, torch.Generator().manual_seed(3))
    assert torch.equal(z1, z2)
    eps = z1 - mu
    assert abs(eps.mean().item()) < 0.02 and abs(eps.std().item() - 1) < 0.02
    assert not torch.equal(z1, UNIT.sample_latent(mu, torch.Generator().manual_seed(4)))
    assert UNIT.kl(mu).item() == pytest.approx(0.25)
    assert UNIT.kl(torch.zeros(3)).item() == 0


def test_smallest_input_side(generator):
    assert ARCHITECTURES["unit"].min_size == 5
    assert [ARCHITECTURES["unit"].min_size_for({"n_downsample": n}) for n in range(4)] == [4, 3, 5, 9]
    for n_down, smallest in [(1, 3), (2, 5), (3, 9)]:
        model = UNIT(channels=2, n_res=1, n_downsample=n_down)
        for side in range(smallest, smallest + 2**n_down + 1):
            assert model(torch.rand(1, 1, side, smallest, generator=generator)).shape == (1, 1, side, smallest)
        with pytest.raises(ValueError, match=f"at least {smallest}"):
            model(torch.rand(1, 1, smallest - 1, 16))
    # why 5 and not 4 at two down-samplings: a 4-pixel side gives 1x1 latent maps, which instance
    # normalisation rejects
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        UNIT(channels=2, n_res=1).enc_a(torch.rand(1, 1, 4, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_shared"):
        UNIT(n_res=2, n_shared=3)
    with pytest.raises(ValueError, match="n_shared"):
        UNIT(n_shared=0)
    with pytest.raises(ValueError, match="norm"):
        UNIT(norm="batch")
    with pytest.raises(ValueError, match="domain"):
        UNIT(**SMALL).encode(torch.rand(1, 1, 8, 8), "c")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        UNIT(**SMALL)(torch.rand(1, 8, 8))
