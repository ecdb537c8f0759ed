"""Anti-aliasing (Zhang 2019, "Making convolutional networks shift-invariant again").

A binomial low-pass filter applied before sub-sampling. Padding follows Zhang's code:
reflect, ``floor((n-1)/2)`` before and ``ceil((n-1)/2)`` after, so with stride 2 an
even input halves exactly for every filter size (Rect-2 pads 0/1: 32 px -> 16 px).
timm's ``BlurPool2d`` pads symmetrically, which gives 17 px for Rect-2, hence this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FILTER_NAMES = {2: "Rect-2", 3: "Tri-3", 5: "Bin-5"}


def binomial_filter(size: int) -> Tensor:
    """Normalised 2-D binomial filter: outer product of row ``size`` of Pascal's triangle."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"blur filter size must be a positive integer, got {size!r}")
    row = torch.tensor([math.comb(size - 1, i) for i in range(size)], dtype=torch.float64)
    kernel = torch.outer(row, row)
    return kernel / kernel.sum()


class BlurPool2d(nn.Module):
    """Low-pass filter (binomial, ``filt_size`` taps) then sub-sample by ``stride``, per channel.

    No learned parameters; the filter is a non-persistent buffer, so it adds nothing to
    state dicts and parameter counts.
    """

    def __init__(self, filt_size: int = 3, stride: int = 2, pad_mode: str = "reflect") -> None:
        super().__init__()
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        self.filt_size = filt_size
        self.stride = stride
        self.pad_mode = pad_mode
        self.pads = ((filt_size - 1) // 2, filt_size // 2) * 2  # (left, right, top, bottom) for F.pad
        self.register_buffer("filt", binomial_filter(filt_size).float()[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.filt_size == 1:
            return x[..., :: self.stride, :: self.stride]
        # Channels folded into the batch: one static single-channel kernel, which every
        # ONNX exporter handles (a per-channel kernel expanded at run time is not).
        n, c = x.shape[0], x.shape[1]
        x = F.pad(x, self.pads, mode=self.pad_mode)
        y = F.conv2d(x.reshape(n * c, 1, x.shape[-2], x.shape[-1]), self.filt.to(x.dtype), stride=self.stride)
        return y.reshape(n, c, y.shape[-2], y.shape[-1])

    def extra_repr(self) -> str:
        return f"filt_size={self.filt_size}, stride={self.stride}, pad_mode={self.pad_mode!r}"


def blurred(module: nn.Module, filt_size: int, stride: int) -> nn.Sequential:
    """``blur(stride) -> module``: the anti-aliased form of a strided op whose stride was set to 1."""
    return nn.Sequential(BlurPool2d(filt_size, stride), module)


__all__ = ["BlurPool2d", "binomial_filter", "blurred", "FILTER_NAMES"]
