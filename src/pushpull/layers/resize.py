"""The pull kernel ``k̂``: the push kernel resized bilinearly with aligned corners.

:func:`pull_kernel` is the definition (``F.interpolate``); :func:`resize_kernel` writes the same
resize as two small matrix products, ``A_h k A_wᵀ``, which the fast paths need: it is
differentiable to any order, and its adjoint (:func:`resize_kernel_adjoint`) maps the pull
kernel's gradient back onto the push kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .eager import eager_cache
from .geometry import pull_kernel_size


def pull_kernel(weight: Tensor, scale: float) -> Tensor:
    """The (positive) pull kernel ``k_hat``: ``weight`` resized bilinearly with aligned corners."""
    kh, kw = weight.shape[-2:]
    size = (pull_kernel_size(kh, scale), pull_kernel_size(kw, scale))
    if size == (kh, kw):
        return weight
    return F.interpolate(weight, size=size, mode="bilinear", align_corners=True)


@eager_cache()
def interpolation_matrix(size_in: int, size_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``A`` (size_out x size_in) such that ``A @ v`` is ``v`` resized linearly with aligned corners."""
    eye = torch.eye(size_in, dtype=torch.float64, device=device)
    columns = F.interpolate(eye[None], size=size_out, mode="linear", align_corners=True)[0]
    return columns.T.to(dtype).contiguous()


def resize_kernel(weight: Tensor, pull_size: tuple[int, int]) -> Tensor:
    """``A_h k A_wᵀ``: the bilinear (aligned-corners) resize written as two matrix products.

    Equal to ``F.interpolate(..., mode="bilinear", align_corners=True)`` up to rounding, but
    built from plain matrix products, so it is differentiable to any order and portable.
    """
    a_h = interpolation_matrix(weight.shape[-2], pull_size[0], weight.dtype, weight.device)
    a_w = interpolation_matrix(weight.shape[-1], pull_size[1], weight.dtype, weight.device)
    return torch.einsum("sa,ocab,tb->ocst", a_h, weight, a_w)


def resize_kernel_adjoint(grad_pull: Tensor, kernel_size: tuple[int, int]) -> Tensor:
    """The adjoint of :func:`resize_kernel`: ``A_hᵀ dk̂ A_w`` (gradient of the push kernel)."""
    a_h = interpolation_matrix(kernel_size[0], grad_pull.shape[-2], grad_pull.dtype, grad_pull.device)
    a_w = interpolation_matrix(kernel_size[1], grad_pull.shape[-1], grad_pull.dtype, grad_pull.device)
    return torch.einsum("sa,ocst,tb->ocab", a_h, grad_pull, a_w)
