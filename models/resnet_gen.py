"""The ResNet generator of CycleGAN/pix2pix (Johnson et al., "Perceptual losses for real-time style
transfer and super-resolution", ECCV 2016; Zhu et al., "Unpaired image-to-image translation using
cycle-consistent adversarial networks", ICCV 2017), as a residual denoiser."""

from __future__ import annotations

import torch
from torch import nn

from models.init import zero_init
from models.unet import pad_to_multiple, smallest_side

# The two stride-2 down-samplings need sides that are multiples of 4; the residual blocks' reflection
# padding of 1 (and instance normalisation) at a quarter of the side needs that quarter to be
# ≥ 2, i.e. a padded side ≥ 8.
_MULTIPLE = 4
_MIN_PADDED = 8


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


class _Block(nn.Module):
    """R``c``: ``x + IN(conv3(pad(ReLU(IN(conv3(pad(x)))))))`` with reflection padding 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), _norm(channels), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """CycleGAN ResNet generator ``c7s1-64, d128, d256, R256 × blocks, u128, u64, c7s1-1`` with a
    residual output: ``y = x + G(x)``.

    Input/output ``(N, in_channels, H, W)`` / ``(N, out_channels, H, W)`` (1 and 1 by default) in network
    normalisation ((HU + 1024) / 4096, ≈ [0, 1]); the output is not clamped. Any H, W ≥ 5: the two
    stride-2 down-samplings need multiples of 4, so the input is reflection-padded (half before, half
    after) to the next multiple of 4 and the output cropped back; a side below 5 would leave the
    residual blocks' maps at 1×1, too small for instance normalisation and for their reflection padding,
    and is a ``ValueError``.

    Layers (Zhu et al., ICCV 2017, appendix 7.2; ``channels`` = 64 by default): ``c7s1-k`` = reflection
    pad 3, 7×7 convolution stride 1 with k filters, InstanceNorm, ReLU; ``dk`` = 3×3 convolution stride 2
    (zero padding 1), InstanceNorm, ReLU; ``Rk`` = residual block of two reflection-padded 3×3
    convolutions with InstanceNorm, ReLU between them, added to its input; ``uk`` = 3×3 fractional-strided
    (transposed) convolution stride 1/2 (padding 1, output padding 1), InstanceNorm, ReLU; the last
    ``c7s1-out_channels`` has neither normalisation nor activation. ``blocks``: 9 (the paper's choice for
    256² images, the default) or 6 (its 128² choice), or any other count ≥ 1.

    Deviations from the paper, on purpose:

    * Output: the original ends with tanh on images scaled to [−1, 1]. Our images are in [0, 1] with
      bone and metal above 1 (3072 HU ↦ 1) and noise below 0, so tanh would clip the range and need a
      rescaling; a sigmoid could never return exactly air (0) or values above 1. Instead the last
      convolution is linear and, with ``residual=True`` (the default), added to the input: the generator
      learns the noise correction, as every other denoiser of the suite (DnCNN, RED-CNN, FBPConvNet),
      and ``zero_init_output`` makes the untrained network the identity. ``residual=False`` returns the
      linear output itself (then ``out_channels`` may differ from ``in_channels``).
    * Normalisation: InstanceNorm with a learned scale and shift (Ulyanov et al.'s formulation), and no
      bias in the convolutions in front of it (a per-channel constant that the normalisation subtracts
      exactly, so it could never learn anything).

    Parameters at the defaults (64 channels, 9 blocks, 1 channel in and out): 11,370,881.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 64,
        blocks: int = 9,
        residual: bool = True,
        zero_init_output: bool = False,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if residual and out_channels != in_channels:
            raise ValueError(f"a residual output needs out_channels == in_channels, got {out_channels} and {in_channels}")
        if zero_init_output and not residual:
            raise ValueError("zero_init_output makes the identity only with residual=True")
        c = channels
        self.residual = residual
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c, 7, bias=False), _norm(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), _norm(2 * c), nn.ReLU(inplace=True),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1, bias=False), _norm(4 * c), nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[_Block(4 * c) for _ in range(blocks)])
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * c, 2 * c, 3, stride=2, padding=1, output_padding=1, bias=False), _norm(2 * c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * c, c, 3, stride=2, padding=1, output_padding=1, bias=False), _norm(c),
            nn.ReLU(inplace=True),
        )
        self.output = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c, out_channels, 7))
        if zero_init_output:
            zero_init(self.output[1])

    @staticmethod
    def min_input_size(**_: object) -> int:
        """Reflection padding to a multiple of 4 that is at least 8: any side ≥ 5."""
        return smallest_side(_MULTIPLE, "reflect", min_padded=_MIN_PADDED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"ResNetGenerator expects (N, C, H, W), got {tuple(x.shape)}")
        need = smallest_side(_MULTIPLE, "reflect", min_padded=_MIN_PADDED)
        h, crop = pad_to_multiple(x, _MULTIPLE, "reflect", 2, min_side=need)
        out = self.output(self.decoder(self.blocks(self.encoder(h))))[crop]
        return x + out if self.residual else out


__all__ = ["ResNetGenerator"]
