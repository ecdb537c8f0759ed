"""The push-pull convolution by its definition: two plain convolutions.

    R(x) = ReLU(x * k + b) - alpha * ReLU(x * (-k_hat) - b)

Slow but obviously correct: every fast path is tested against it, and the layer computes with
it while being traced, compiled, exported or transformed (it is made of standard operations).
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

from .geometry import PaddingArg, conv_padding, pull_padding, push_padding
from .resize import pull_kernel


def combine(push: Tensor, pull: Tensor, alpha: Union[float, Tensor], dual_output: bool) -> Tensor:
    """``ReLU(push) - alpha * ReLU(pull)``, or both rectified maps side by side (dual output)."""
    push, pull = F.relu(push), F.relu(pull)
    if dual_output:
        return torch.cat([push, pull], dim=1)
    return push - alpha * pull


def push_pull_conv2d_reference(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: PaddingArg = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    scale: float = 2.0,
    alpha: Union[float, Tensor] = 1.0,
    dual_output: bool = False,
    padding_mode: str = "zeros",
) -> Tensor:
    """The naive definition: two convolutions, the second with the resized, negated kernel.

    Slow (a K=3 layer costs about 6.4 plain convolutions) but obviously correct; the fast
    paths are tested against it.

    Args:
        x: input, (N, C_in, H, W).
        weight: the push kernel ``k``, (C_out, C_in / groups, K_h, K_w).
        bias: (C_out,) or None; the pull convolution uses ``-bias``.
        stride, padding, dilation, groups, padding_mode: as ``F.conv2d`` / ``nn.Conv2d``
            (``padding`` also ``"same"`` or ``"valid"``); the pull convolution is padded so
            that both responses align and have the push convolution's output shape.
        scale: pull kernel size factor: ``k_hat`` is ``k`` resized to ``floor(K * scale)``
            made odd (:func:`pull_kernel_size`); 1 uses ``k`` itself.
        alpha: inhibition strength, a float or a tensor broadcast against the output
            (e.g. (1, C_out, 1, 1)); used as given (not rectified).
        dual_output: return ``[ReLU(push), ReLU(pull)]`` concatenated along channels
            (2 x C_out) instead of their difference.

    Returns:
        (N, C_out, H_out, W_out), or (N, 2 C_out, H_out, W_out) with ``dual_output``.
    """
    stride, dilation = _pair(stride), _pair(dilation)
    kernel_size = (weight.shape[-2], weight.shape[-1])
    pads = push_padding(padding, kernel_size, stride, dilation)
    k_hat = pull_kernel(weight, scale)
    q_pads = pull_padding(pads, kernel_size, (k_hat.shape[-2], k_hat.shape[-1]), dilation)
    x_push, push_pad = conv_padding(x, pads, padding_mode)
    x_pull, pull_pad = conv_padding(x, q_pads, padding_mode)
    push = F.conv2d(x_push, weight, bias, stride, push_pad, dilation, groups)
    pull = F.conv2d(x_pull, -k_hat, None if bias is None else -bias, stride, pull_pad, dilation, groups)
    return combine(push, pull, alpha, dual_output)
