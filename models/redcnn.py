"""RED-CNN: residual encoder-decoder CNN (Chen et al., "Low-dose CT with a residual encoder-decoder
convolutional neural network", IEEE TMI 36(12), 2017).

Five 5×5 convolutions (stride 1, no padding, no pooling) shrink the image by 4 pixels each; five 5×5
transposed convolutions grow it back. Three residual shortcuts: input → output, after conv2 → after
deconv3, after conv4 → after deconv1. ReLU after every layer (and, as in the paper, on the output).
Input/output ``(N, 1, H, W)`` in network normalisation; any H, W ≥ 21.

``zero_init_output=True`` zero-initialises the last transposed convolution, so the untrained network
is the identity (its input shortcut) and training starts from the low-dose image rather than from a
random image hundreds of HU away (the "zero-γ" trick, Goyal et al. 2017). Off by default: the paper
uses the framework's default initialisation.

``init``: ``"default"`` (PyTorch's: its fan-in of the 1-channel last deconvolution is 25 instead of
``channels · 25``, so that layer starts ~√channels too large) or ``"he"`` (He et al. 2015 with each
layer's real fan-in); see :mod:`models.init`.
"""

from __future__ import annotations

import torch
from torch import nn

from models.init import InitName, init_weights, zero_init
from models.sizes import min_input_size


class REDCNN(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int = 1,
        channels: int = 96,
        kernel_size: int = 5,
        output_relu: bool = True,
        zero_init_output: bool = False,
        init: InitName = "default",
    ) -> None:
        super().__init__()
        k = kernel_size
        self.enc = nn.ModuleList(
            [nn.Conv2d(in_channels if i == 0 else channels, channels, k) for i in range(5)]
        )
        self.dec = nn.ModuleList(
            [nn.ConvTranspose2d(channels, in_channels if i == 4 else channels, k) for i in range(5)]
        )
        self.output_relu = output_relu
        self.act = nn.ReLU()
        init_weights(self, init)
        if zero_init_output:
            zero_init(self.dec[4])

    @staticmethod
    def min_input_size(*, kernel_size: int, **_: object) -> int:
        """Five unpadded ``kernel_size`` convolutions: ``5·(k − 1) + 1`` (21 for k = 5)."""
        return min_input_size([(kernel_size, 1, 0)] * 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r1 = x
        out = self.act(self.enc[0](x))
        out = self.act(self.enc[1](out))
        r2 = out
        out = self.act(self.enc[2](out))
        out = self.act(self.enc[3](out))
        r3 = out
        out = self.act(self.enc[4](out))
        out = self.dec[0](out) + r3
        out = self.dec[1](self.act(out))
        out = self.dec[2](self.act(out)) + r2
        out = self.dec[3](self.act(out))
        out = self.dec[4](self.act(out)) + r1
        return self.act(out) if self.output_relu else out
