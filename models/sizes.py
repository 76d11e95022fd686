"""Input-size arithmetic of convolution stacks: the smallest input side a model accepts, derived from
its layers' kernels, strides and paddings (registry metadata ``ModelInfo.min_size``)."""

from __future__ import annotations

from collections.abc import Sequence

Layer = tuple[int, int, int]  # (kernel, stride, padding) of one convolution along one axis


def conv_output(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution over ``n`` samples (PyTorch's ``floor((n + 2p − k) / s) + 1``)."""
    return (n + 2 * padding - kernel) // stride + 1


def min_input_size(layers: Sequence[Layer]) -> int:
    """The smallest input side for which every layer of the chain has an output of at least 1."""
    n = 1
    while True:
        m = n
        for kernel, stride, padding in layers:
            m = conv_output(m, kernel, stride, padding)
            if m < 1:
                break
        else:
            return n
        n += 1
