"""U-Net with a residual output (Ronneberger et al., "U-Net: convolutional networks for biomedical image
segmentation", MICCAI 2015; residual output as in FBPConvNet, Jin et al., "Deep convolutional neural
network for inverse problems in imaging", IEEE TIP 26(9), 2017), in 2-D (:class:`UNet`) and 3-D
(:class:`UNet3D`), one implementation parametrised by the number of spatial dimensions.

Also the padding arithmetic shared with :mod:`models.resnet_gen`: an input whose sides are not a multiple
of the network's total down-sampling factor is padded up to one (:func:`pad_to_multiple`) and the
output cropped back, so any side from :func:`smallest_side` up is accepted.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.init import zero_init

PaddingMode = Literal["reflect", "replicate", "zeros"]
PADDING_MODES: tuple[str, ...] = ("reflect", "replicate", "zeros")


def _pad_split(n: int, multiple: int) -> tuple[int, int]:
    """(before, after) padding that brings ``n`` up to the next multiple; the extra pixel goes after."""
    total = -n % multiple
    return total // 2, total - total // 2


def smallest_side(multiple: int, mode: str, *, min_padded: int = 1) -> int:
    """The smallest side ``n`` such that every side from ``n`` up can be padded with ``mode`` to a
    multiple of ``multiple`` of at least ``min_padded`` pixels.

    ``reflect`` padding needs each pad to be shorter than the side (PyTorch's rule), the other modes
    accept any side. Sides above ``max(multiple, min_padded)`` always qualify (their pads are shorter
    than ``multiple / 2 + 1``), so the search below is finite.
    """
    top = max(multiple, min_padded)

    def fits(n: int) -> bool:
        before, after = _pad_split(n, multiple)
        reflect_ok = mode != "reflect" or max(before, after) < n
        return reflect_ok and n + before + after >= min_padded

    smallest = top + 1
    for n in range(top, 0, -1):
        if not fits(n):
            break
        smallest = n
    return smallest


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str, spatial_dims: int, *, min_side: int = 1
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the last ``spatial_dims`` axes of ``x`` up to multiples of ``multiple`` (half before, half
    after) with ``mode``; return the padded tensor and the index that crops it back to ``x``'s shape.
    A side below ``min_side`` is a ``ValueError`` naming it."""
    sides = tuple(x.shape[-spatial_dims:])
    if min(sides) < min_side:
        raise ValueError(f"input spatial size {sides} is too small: every side must be at least {min_side}")
    splits = [_pad_split(n, multiple) for n in sides]
    crop = (slice(None), slice(None), *(slice(b, b + n) for (b, _), n in zip(splits, sides)))
    if not any(b or a for b, a in splits):
        return x, crop
    pads = [p for split in reversed(splits) for p in split]  # F.pad lists the last axis first
    if mode == "zeros":
        return F.pad(x, pads, mode="constant", value=0.0), crop
    return F.pad(x, pads, mode=mode), crop


def _conv(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _double_conv(dims: int, cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    """Two 3×3(×3) convolutions (padding 1), each followed by BatchNorm (optional) and ReLU."""
    conv = _conv(dims)
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(conv(a, b, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(norm(b))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _UNet(nn.Module):
    """The U-Net of :class:`UNet` / :class:`UNet3D`; ``spatial_dims`` (2 or 3) is set by the subclass."""

    spatial_dims: ClassVar[int] = 2

    def __init__(
        self,
        *,
        in_channels: int = 1,
        depth: int = 4,
        channels: int = 64,
        batch_norm: bool = True,
        padding_mode: PaddingMode = "reflect",
        zero_init_output: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
        d = self.spatial_dims
        width = [channels * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.padding_mode = padding_mode
        self.encoder = nn.ModuleList(
            [_double_conv(d, in_channels if i == 0 else width[i - 1], width[i], batch_norm) for i in range(depth)]
        )
        self.pool = (nn.MaxPool2d if d == 2 else nn.MaxPool3d)(2)
        self.bottleneck = _double_conv(d, width[depth - 1], width[depth], batch_norm)
        up = nn.ConvTranspose2d if d == 2 else nn.ConvTranspose3d
        levels = list(reversed(range(depth)))
        self.up = nn.ModuleList([up(width[i + 1], width[i], 2, stride=2) for i in levels])
        self.decoder = nn.ModuleList([_double_conv(d, 2 * width[i], width[i], batch_norm) for i in levels])
        self.output = _conv(d)(width[0], in_channels, 1)
        if zero_init_output:
            zero_init(self.output)

    @staticmethod
    def min_input_size(*, depth: int, padding_mode: str, **_: object) -> int:
        """Sides are padded to a multiple of ``2**depth``: any side for ``replicate``/``zeros``; with
        ``reflect`` each pad must be shorter than the side (6 for depth 4, 4 for depth 3, 2 for depth 2)."""
        return smallest_side(2**depth, padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.spatial_dims
        if x.dim() != d + 2:
            shape = "(N, C, H, W)" if d == 2 else "(N, C, D, H, W)"
            raise ValueError(f"{type(self).__name__} expects {shape}, got {tuple(x.shape)}")
        need = smallest_side(2**self.depth, self.padding_mode)
        h, crop = pad_to_multiple(x, 2**self.depth, self.padding_mode, d, min_side=need)
        skips = []
        for block in self.encoder:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottleneck(h)
        for up, block in zip(self.up, self.decoder):
            h = block(torch.cat([skips.pop(), up(h)], dim=1))
        return x + self.output(h)[crop]


class UNet(_UNet):
    """2-D U-Net denoiser with a residual output: ``y = x + U(x)``.

    Input/output ``(N, 1, H, W)`` in network normalisation ((HU + 1024) / 4096, ≈ [0, 1]); the output is
    not clamped. Any H, W: the input is padded (``padding_mode``, default ``reflect``, half before and
    half after, the odd pixel after) to a multiple of ``2**depth`` and the output cropped back, so the shape round-trips for
    odd sizes too; ``reflect`` needs sides ≥ :meth:`min_input_size` (6 at depth 4).

    Design (Ronneberger et al., MICCAI 2015): ``depth`` encoder levels of two 3×3 convolutions
    (padding 1) + ReLU with ``channels·2**i`` filters at level ``i``, each followed by 2×2 max-pooling; a
    bottleneck of two 3×3 convolutions with ``channels·2**depth`` filters; ``depth`` decoder levels of a
    2×2 stride-2 transposed convolution that halves the channels (a learned up-sampling, as in the
    paper's "up-convolution"), concatenation with the encoder's feature map of the same level (the skip),
    and two 3×3 convolutions + ReLU; a final 1×1 convolution to ``in_channels``. The result is added to
    the input (FBPConvNet, Jin et al., IEEE TIP 2017: the network learns the correction, not the image).

    ``batch_norm`` (default on) inserts BatchNorm after every 3×3 convolution (whose bias is then
    dropped). On by default because FBPConvNet, the CT denoising form of this network whose residual
    output is used here, has it (as does the suite's DnCNN); ``batch_norm=False`` gives the 2015 paper's
    plain U-Net, which has none.
    ``zero_init_output`` zero-initialises the 1×1 output convolution so the untrained network is the
    identity (as :class:`models.dncnn.DnCNN`). With BatchNorm in training mode the bottleneck must hold
    more than one value per channel over the batch: a batch of one input whose sides are all ≤ ``2**depth``
    (a 1×1 bottleneck) is rejected by BatchNorm; evaluation mode takes any size ≥ :meth:`min_input_size`.

    Parameters at the defaults (depth 4, 64 channels, BatchNorm, 1 channel in/out): 31,036,481.
    """


class UNet3D(_UNet):
    """3-D U-Net denoiser with a residual output, the design of :class:`UNet` with 3×3×3 convolutions,
    2×2×2 max-pooling and 2×2×2 stride-2 transposed convolutions (as the 3-D U-Net of Çiçek et al.,
    MICCAI 2016); every spatial axis (D, H, W) is padded to a multiple of ``2**depth`` and cropped back.

    Input/output ``(N, 1, D, H, W)`` in network normalisation, any D, H, W ≥ :meth:`min_input_size`.
    ``y = x + U(x)``; same arguments and defaults as :class:`UNet`.

    Parameters at the defaults (depth 4, 64 channels, BatchNorm): 90,298,561.
    """

    spatial_dims: ClassVar[int] = 3


__all__ = ["PADDING_MODES", "UNet", "UNet3D", "pad_to_multiple", "smallest_side"]
