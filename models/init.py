"""Weight initialisation schemes shared by the convolutional denoisers (the ``init`` keyword argument).

* ``"default"``: PyTorch's own initialisation, as every model had until now. For ``Conv2d``/``Conv3d``
  it is Kaiming-uniform with ``a = √5``, i.e. weight variance ``1 / (3 · fan_in)``: after a ReLU each
  layer passes on ``1/6`` of its input's second moment, so the activations of a plain 8-layer ReLU stack
  shrink by ~``0.41⁷ ≈ 2e-3`` before the output layer. For ``ConvTranspose2d`` PyTorch computes the
  fan-in from the *output* channels (``weight.size(1) · k²``), so a 1-channel output deconvolution
  (RED-CNN's last layer) is drawn for a fan-in of 25 instead of its real ``channels · 25``.
* ``"he"``: He et al. (ICCV 2015, "Delving deep into rectifiers") normal initialisation for ReLU
  networks, ``std = √(2 / fan_in)`` with the fan-in a unit really sums over (``in_channels · kᵈ`` for a
  convolution; the input channels ``weight.size(0) · kᵈ`` for a transposed convolution, PyTorch's
  ``mode="fan_out"`` on its weight layout), zero biases. It keeps the activation scale through depth.
  DnCNN's paper initialises this way (Zhang et al., IEEE TIP 2017, Sec. III-B).

Written here (a few lines around ``torch.nn.init``) because PyTorch offers the per-tensor initialisers,
not a per-network policy that gets transposed convolutions' fan-in right.

:func:`zero_init` zeroes one layer (the output layer of the residual denoisers' ``zero_init_output``).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

InitName = Literal["default", "he"]
INITS: tuple[str, ...] = ("default", "he")

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DECONV = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def init_weights(module: nn.Module, init: str) -> None:
    """Apply the scheme ``init`` (see the module docstring) to every (transposed) convolution of
    ``module`` in place; ``"default"`` leaves PyTorch's initialisation. Normalisation layers keep
    theirs (weight 1, bias 0)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "default":
        return
    for m in module.modules():
        if isinstance(m, _CONV + _DECONV):
            if isinstance(m, _DECONV):  # PyTorch's "fan_out" of a transposed conv's weight is its fan-in
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def zero_init(layer: nn.Module) -> None:
    """Zero the weight and the bias (when it has one) of a convolution, transposed convolution or linear
    layer, in place. Applied to the output layer of a network that adds its output to its input (residual
    learning), it makes the untrained network the identity: training starts from "return the low-dose image"
    rather than from that image plus random noise of the initialisation, and the residual branch still learns
    (the gradient reaching the zeroed layer is not zero). Call it after :func:`init_weights`, so that it wins
    over the scheme. Draws no random numbers: the other layers' initialisation is unchanged."""
    if not isinstance(layer, _CONV + _DECONV + (nn.Linear,)):
        raise TypeError(f"zero_init expects a convolution or linear layer, got {type(layer).__name__}")
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
