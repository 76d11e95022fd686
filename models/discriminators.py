"""Discriminators (critics) for the adversarial loss terms (:mod:`losses.wgan_gp`, :mod:`losses.lsgan`,
:mod:`losses.vanilla_gan`).

Both take ``(N, C, H, W)`` images in network normalisation (C = 1 unconditional, the default; C = 2
for a pix2pix-style conditional D on (input, output) pairs) and return a map of raw scores
``(N, 1, h, w)``, one per receptive field; the losses average over it. No sigmoid: the vanilla GAN
uses ``BCEWithLogits``, WGAN-GP needs an unbounded critic.
"""

from __future__ import annotations

import torch
from torch import nn

from models.sizes import min_input_size


class WGANCritic(nn.Module):
    """The plain CNN critic of the benchmark's RED-CNN + WGAN-GP configuration (issue #5: Adam 1e-4,
    0.95·MSE + 0.05·adversarial, 5 critic steps).

    Layers: Conv 1→64 k3 s1 p1, LeakyReLU(0.2); Conv 64→128 k5 s3 p1, LReLU; Conv 128→128 k3 s1 p1,
    LReLU; Conv 128→128 k5 s3 p1, LReLU; Conv 128→1 k3 s1 p0. No normalisation layers (the WGAN-GP
    penalty is per sample, Gulrajani et al., NeurIPS 2017). A 64×64 patch gives a 5×5 score map;
    inputs must be at least 27 px a side.
    """

    def __init__(self, *, in_channels: int = 1, channels: int = 64, slope: float = 0.2) -> None:
        super().__init__()
        c1, c2 = channels, 2 * channels
        act = lambda: nn.LeakyReLU(slope)  # noqa: E731
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, 1, 1), act(),
            nn.Conv2d(c1, c2, 5, 3, 1), act(),
            nn.Conv2d(c2, c2, 3, 1, 1), act(),
            nn.Conv2d(c2, c2, 5, 3, 1), act(),
            nn.Conv2d(c2, 1, 3, 1, 0),
        )

    @staticmethod
    def min_input_size(**_: object) -> int:
        """From the fixed layer geometry (27)."""
        return min_input_size([(3, 1, 1), (5, 3, 1), (3, 1, 1), (5, 3, 1), (3, 1, 0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


_NORMS = {
    "batch": lambda c: nn.BatchNorm2d(c),
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "none": lambda c: nn.Identity(),
}


class PatchGAN(nn.Module):
    """70×70 PatchGAN of pix2pix (Isola et al., "Image-to-image translation with conditional adversarial
    networks", CVPR 2017): C64-C128-C256-C512 then a 1-channel conv, all 4×4 kernels.

    C64, C128, C256 have stride 2, C512 and the output stride 1, padding 1; LeakyReLU(0.2); no
    normalisation on C64; ``norm`` (``batch`` as in pix2pix, ``instance``, or ``none``, which suits
    WGAN-GP) on the others. Each output sees a 70×70 input patch; a 64×64 input gives a 6×6 map; inputs
    must be at least 24 px a side. Weights are drawn from N(0, 0.02) as in pix2pix (global RNG, i.e. the
    cell's seed).
    """

    def __init__(self, *, in_channels: int = 1, channels: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {', '.join(_NORMS)}, got {norm!r}")
        make_norm = _NORMS[norm]
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, n_layers + 1):
            c_out = channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride, 1, bias=bias), make_norm(c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.weight is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @staticmethod
    def min_input_size(*, n_layers: int, **_: object) -> int:
        """``n_layers`` stride-2 4×4 convolutions (the last stride 1) and the output conv (24 for 3)."""
        strides = [2] + [2 if i < n_layers else 1 for i in range(1, n_layers + 1)] + [1]
        return min_input_size([(4, s, 1) for s in strides])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def receptive_field(model: nn.Module) -> int:
    """Receptive field (pixels) of a plain stack of convolutions, from kernel sizes and strides."""
    rf, jump = 1, 1
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            rf += (m.kernel_size[0] - 1) * jump
            jump *= m.stride[0]
    return rf
