"""UNIT, the shared-latent-space image-to-image translator (Liu, Breuel & Kautz, "Unsupervised
image-to-image translation networks", NeurIPS 2017, arXiv 1703.00848), as a two-domain LDCT ↔ NDCT
network whose ``forward`` is the LD → ND translation (the denoiser the analysis scores)."""

from __future__ import annotations

import torch
from torch import nn

from models.resnet_gen import _Block, _norm
from models.unet import pad_to_multiple, smallest_side

DOMAINS = ("a", "b")  # a: low-dose CT (the input), b: normal-dose CT (the target)
NORMS = ("instance", "none")


class _PlainBlock(nn.Module):
    """The residual block of :class:`models.resnet_gen._Block` without normalisation (so with conv
    biases): ``x + conv3(pad(ReLU(conv3(pad(x)))))``, reflection padding 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _blocks(channels: int, count: int, norm: str) -> nn.Sequential:
    block = _Block if norm == "instance" else _PlainBlock
    return nn.Sequential(*[block(channels) for _ in range(count)])


def _conv_norm_relu(conv: nn.Module, channels: int, norm: str) -> list[nn.Module]:
    return [conv, _norm(channels) if norm == "instance" else nn.Identity(), nn.ReLU(inplace=True)]


class UNIT(nn.Module):
    """UNIT's coupled VAE generators: two encoders ``E_a``, ``E_b`` and two decoders ``G_a``, ``G_b`` whose
    high-level layers are shared, so both domains map to one latent space (the paper's shared-latent
    assumption, enforced by weight sharing).

    Domains: ``"a"`` = low-dose CT (the network input), ``"b"`` = normal-dose CT. Images ``(N, in_channels,
    H, W)`` in network normalisation ((HU + 1024) / 4096, ≈ [0, 1]); outputs are not clamped.

    Layers (``c`` = ``channels``, ``n`` = ``n_downsample``, ``r`` = ``n_res``, ``s`` = ``n_shared``; the
    notation of :class:`models.resnet_gen.ResNetGenerator`, the layer list of the paper's appendix and of
    the authors' code, with the CycleGAN generator's down/up-sampling convolutions):

    * encoder ``E_x`` (one per domain): ``c7s1-c``, then ``n`` × ``d(2^i c)`` (3×3 stride 2), then ``r − s``
      residual blocks ``R(2^n c)`` of its own, then the ``s`` **shared** blocks ``R(2^n c)`` (one module,
      ``enc_shared``, used by both encoders). Its output is the latent mean ``μ`` of shape
      ``(N, 2^n c, H'/2^n, W'/2^n)`` (``H'``, ``W'``: the padded sides, below).
    * decoder ``G_x`` (one per domain): the ``s`` **shared** blocks ``R(2^n c)`` (one module,
      ``dec_shared``), then ``r − s`` blocks of its own, ``n`` × ``u(2^{i-1} c)`` (3×3 transposed
      convolutions stride 1/2), and a linear ``c7s1-in_channels``.
    * ``R`` = reflection-padded 3×3 conv, norm, ReLU, 3×3 conv, norm, added to its input (the CycleGAN
      generator's block, reused); norm = InstanceNorm with learned affine (``norm="instance"``, UNIT's
      choice) or none (``norm="none"``, then the convolutions have biases).

    The latent (UNIT's VAE with a fixed unit variance, as the authors' code): ``z = μ + ε``, ``ε ~ N(0, I)``
    during training (:meth:`sample_latent`); the KL divergence to ``N(0, I)`` then reduces, up to the
    constant ½ and the sum, to ``mean(μ²)`` (:meth:`kl`). Translation and evaluation use ``z = μ``.

    ``forward(x)`` is the deterministic LD → ND translation ``G_b(E_a(x))`` (no noise, in training and in
    evaluation mode), so a UNIT maps ``(N, 1, H, W)`` → ``(N, 1, H, W)`` like every other registered
    denoiser and a checkpoint's state dict denoises in ``ldct-bench analyze``. The other three paths
    (``G_a(E_a)``, ``G_a(E_b)``, ``G_b(E_b)``) are for the ``unit`` training scheme, through
    :meth:`encode` / :meth:`decode`.

    Sizes: any ``H, W ≥`` :meth:`min_input_size` (5 at ``n_downsample = 2``). :meth:`encode` reflection-pads
    to a multiple of ``2^n`` (half before, the odd pixel after, as the other hourglasses) and
    :meth:`decode` with ``size`` crops back; the padded side must be ≥ ``2^(n+1)`` (a 2×2 latent at least:
    instance normalisation and the blocks' reflection padding fail on 1×1 maps) and ≥ 4 (the 7×7
    reflection padding of 3), which is why the smallest side is 5 and not ``2^n`` = 4.

    Deviations from the paper / the authors' code, on purpose:

    * Output: no tanh (our images are in [0, 1] with bone above and noise below, see
      :class:`models.resnet_gen.ResNetGenerator`): the last convolution is linear. And **no residual
      connection** ``x + G(E(x))``, unlike the suite's other denoisers: the decoders map the latent code to
      an image, and an input-to-output skip would bypass the shared latent space: the within-domain VAE
      reconstruction (weight λ2 = 100) would be met by a decoder that outputs zero, and nothing would tie
      the two domains' codes together any more, which is UNIT's whole mechanism. Hence no
      ``zero_init_output`` either (an untrained UNIT is not the identity).
    * Down/up-sampling as the CycleGAN generator (3×3 convolutions stride 2, transposed 3×3 stride 1/2,
      InstanceNorm, ReLU) rather than the authors' LeakyReLU / 4×4 / upsample + 5×5 + LayerNorm variants.

    Parameters at the defaults (64 channels, 2 down-samplings, 4 blocks per encoder and decoder of which 1
    shared, 1 channel): 18,019,074 (``tests/test_models_unit.py`` writes the count out).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        channels: int = 64,
        n_downsample: int = 2,
        n_res: int = 4,
        n_shared: int = 1,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if in_channels < 1 or channels < 1:
            raise ValueError(f"in_channels and channels must be >= 1, got {in_channels} and {channels}")
        if n_downsample < 0:
            raise ValueError(f"n_downsample must be >= 0, got {n_downsample}")
        if not 1 <= n_shared <= n_res:
            raise ValueError(f"n_shared must be in 1..n_res ({n_res}), got {n_shared}: UNIT shares at least one "
                             "block of its encoders and of its decoders")  # fmt: skip
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.n_downsample = n_downsample
        bias = norm == "none"
        latent = channels * 2**n_downsample
        self.latent_channels = latent

        def encoder() -> nn.Sequential:
            layers = [nn.ReflectionPad2d(3),
                      *_conv_norm_relu(nn.Conv2d(in_channels, channels, 7, bias=bias), channels, norm)]
            for i in range(n_downsample):
                cin, cout = channels * 2**i, channels * 2 ** (i + 1)
                layers += _conv_norm_relu(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=bias), cout, norm)
            layers.append(_blocks(latent, n_res - n_shared, norm))
            return nn.Sequential(*layers)

        def decoder() -> nn.Sequential:
            layers: list[nn.Module] = [_blocks(latent, n_res - n_shared, norm)]
            for i in range(n_downsample, 0, -1):
                cin, cout = channels * 2**i, channels * 2 ** (i - 1)
                up = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=bias)
                layers += _conv_norm_relu(up, cout, norm)
            layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, in_channels, 7)]
            return nn.Sequential(*layers)

        self.enc_a, self.enc_b = encoder(), encoder()
        self.enc_shared = _blocks(latent, n_shared, norm)
        self.dec_shared = _blocks(latent, n_shared, norm)
        self.dec_a, self.dec_b = decoder(), decoder()

    @staticmethod
    def min_input_size(*, n_downsample: int = 2, **_: object) -> int:
        """Reflection padding to a multiple of ``2^n`` of at least ``max(2^(n+1), 4)``: 5 at ``n = 2``."""
        return smallest_side(2**n_downsample, "reflect", min_padded=max(2 ** (n_downsample + 1), 4))

    def _check(self, x: torch.Tensor, domain: str) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        if x.dim() != 4:
            raise ValueError(f"UNIT expects (N, C, H, W), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """The latent mean ``μ = E_domain(x)``: ``(N, C, H, W)`` → ``(N, 2^n c, H'/2^n, W'/2^n)``, ``H'``,
        ``W'`` the sides reflection-padded to a multiple of ``2^n`` (``decode(..., size=(H, W))`` crops
        back). ``domain``: ``"a"`` (LDCT) or ``"b"`` (NDCT)."""
        self._check(x, domain)
        multiple = 2**self.n_downsample
        h, _ = pad_to_multiple(x, multiple, "reflect", 2, min_side=self.min_input_size(n_downsample=self.n_downsample))
        return self.enc_shared((self.enc_a if domain == "a" else self.enc_b)(h))

    def decode(self, z: torch.Tensor, domain: str, size: tuple[int, int] | torch.Size | None = None) -> torch.Tensor:
        """The image ``G_domain(z)`` of a latent ``(N, 2^n c, h, w)``: ``(N, C, 2^n h, 2^n w)``, or, with
        ``size = (H, W)`` (the input's sides before :meth:`encode` padded them), cropped back to
        ``(N, C, H, W)``."""
        self._check(z, domain)
        out = (self.dec_a if domain == "a" else self.dec_b)(self.dec_shared(z))
        if size is None:
            return out
        crops = []
        for full, want in zip(out.shape[-2:], size):
            if not full - 2**self.n_downsample < want <= full:
                raise ValueError(f"size {tuple(size)} is not the unpadded size of a {tuple(out.shape[-2:])} output")
            before = (full - want) // 2  # the padding put half before, the odd pixel after
            crops.append(slice(before, before + want))
        return out[..., crops[0], crops[1]]

    @staticmethod
    def sample_latent(mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``z = μ + ε``, ``ε ~ N(0, I)`` (the fixed unit variance of UNIT's VAE), ``ε`` drawn from
        ``generator`` on that generator's device and then moved to ``μ``'s (a CPU generator gives the same
        draw on any device: a training cell's noise is reproducible on CPU and GPU); from the global
        generator on ``μ``'s device when None."""
        if generator is None:
            return mu + torch.randn(mu.shape, device=mu.device, dtype=mu.dtype)
        eps = torch.randn(mu.shape, generator=generator, device=generator.device, dtype=mu.dtype)
        return mu + eps.to(mu.device)

    @staticmethod
    def kl(mu: torch.Tensor) -> torch.Tensor:
        """UNIT's KL term ``mean(μ²)``: ``KL(N(μ, I) ‖ N(0, I)) = ½ Σ μ²`` up to the factor and the mean."""
        return mu.pow(2).mean()

    def translate(self, x: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """``G_target(E_source(x))`` without noise, cropped to ``x``'s size."""
        return self.decode(self.encode(x, source), target, size=x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LD → ND: ``G_b(E_a(x))``, deterministic (``z = μ``), ``(N, C, H, W)`` → ``(N, C, H, W)``."""
        return self.translate(x, "a", "b")


__all__ = ["UNIT"]
