"""Sizes and paddings of the push-pull layer: the pull kernel's size, and the paddings that make
the push and pull responses align with the plain convolution's output."""

from __future__ import annotations

import math
from typing import Union

import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

Pads = tuple[int, int, int, int]  # (left, right, top, bottom), F.pad order
PaddingArg = Union[int, tuple[int, int], str]


def pull_kernel_size(kernel_size: int, scale: float) -> int:
    """Side of the pull kernel: ``floor(K * scale)``, made odd by adding 1; ``K`` when scale is 1."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    if scale == 1:
        return kernel_size
    size = math.floor(kernel_size * scale)
    return size + 1 if size % 2 == 0 else size


def push_padding(
    padding: PaddingArg, kernel_size: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> Pads:
    """Explicit (left, right, top, bottom) padding of the push convolution, as ``nn.Conv2d`` pads."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        if stride != (1, 1):
            raise ValueError("padding='same' is not supported for strided convolutions (as in nn.Conv2d)")
        (th, tw) = (dilation[0] * (kernel_size[0] - 1), dilation[1] * (kernel_size[1] - 1))
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = _pair(padding)
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return (pw, pw, ph, ph)


def pull_padding(push_pads: Pads, kernel_size: tuple[int, int], pull_size: tuple[int, int],
                 dilation: tuple[int, int]) -> Pads:
    """Padding that centres the pull kernel on the push kernel and gives the same output shape.

    For odd kernels and dilation 1 this is the original ``p//2 - K//2 + padding``; it
    generalises to dilation (offsets scale with it) and even push kernels (whose centre
    falls between pixels: the pull centre is put on the pixel before it). Negative
    values mean cropping (a pull kernel smaller than the push, scale < 1).
    """
    out = []
    for axis, (before, after) in ((1, push_pads[0:2]), (0, push_pads[2:4])):
        d, k, p = dilation[axis], kernel_size[axis], pull_size[axis]
        centre_pull = d * (p - 1) // 2  # p is odd (or equal to k)
        centre_push_twice = d * (k - 1)
        out += [before + centre_pull - centre_push_twice // 2,
                after + centre_pull - (centre_push_twice + 1) // 2]
    return (out[0], out[1], out[2], out[3])


def pad2d(x: Tensor, pads: Pads, mode: str = "zeros") -> Tensor:
    """``F.pad`` that also accepts negative amounts (crops) for every padding mode."""
    if all(p == 0 for p in pads):
        return x
    positive = tuple(max(p, 0) for p in pads)
    if any(positive):
        x = F.pad(x, positive, mode="constant" if mode == "zeros" else mode)
    if any(p < 0 for p in pads):
        left, right, top, bottom = (max(-p, 0) for p in pads)
        x = x[..., top: x.shape[-2] - bottom, left: x.shape[-1] - right]
    return x


def conv_padding(x: Tensor, pads: Pads, mode: str) -> tuple[Tensor, tuple[int, int]]:
    """Let the convolution pad when it can (symmetric zeros); otherwise pad ``x`` explicitly.

    Returns the input to convolve and the (rows, columns) padding to give ``F.conv2d``.
    """
    left, right, top, bottom = pads
    if mode == "zeros" and left == right >= 0 and top == bottom >= 0:
        return x, (top, left)
    return pad2d(x, pads, mode), (0, 0)


def check_fits(x: Tensor, pads: Pads, kernel_size: tuple[int, int], dilation: tuple[int, int]) -> None:
    """The (dilated) kernel must fit in the padded input, as ``F.conv2d`` requires; a clear error otherwise."""
    for axis, (name, extra) in enumerate((("height", pads[2] + pads[3]), ("width", pads[0] + pads[1]))):
        span = dilation[axis] * (kernel_size[axis] - 1) + 1
        size = x.shape[-2 + axis]
        if size + extra < span:
            raise ValueError(f"input {name} {size} (+{extra} padding) is smaller than the "
                             f"{'dilated ' if dilation[axis] > 1 else ''}kernel ({span})")
