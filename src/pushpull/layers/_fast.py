"""The exact fast paths of the push-pull layer.

* :class:`PushPullFunction` ("fused"): both direct convolutions in one autograd node with a
  hand-written backward. The pull kernel is an input (the module caches it) and its gradient
  is mapped onto the push kernel with the adjoint of the bilinear resize (:mod:`.resize`),
  ``dk = A_hᵀ · dk̂ · A_w``; pre-activations are rectified in place; when both convolutions
  read the same input their input gradients are summed inside the node.
* :func:`separable_pull` ("separable"): the pull response with K_h·p instead of p·p
  multiply-adds per channel pair, by moving the vertical resize onto the input; its banded
  row-filter matrices are cached per geometry (eager tensors only, :mod:`.eager`).

Both equal the naive definition up to float rounding, and both support higher-order
gradients (the fused backward is written with differentiable operations).
"""

from __future__ import annotations

from typing import NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .eager import eager_cache
from .resize import interpolation_matrix, resize_kernel, resize_kernel_adjoint


class ConvSettings(NamedTuple):
    """The convolutions' settings once explicit padding has been split off."""

    stride: tuple[int, int]
    push_padding: tuple[int, int]
    pull_padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    dual_output: bool


class PushPullFunction(torch.autograd.Function):
    """``ReLU(x ⋆ k + b) - alpha * ReLU(-(x ⋆ k̂ + b))`` (or both maps, dual output) as one node.

    ``x_pull`` is the pull convolution's input when the padding had to be applied explicitly,
    ``None`` when both convolutions read ``x`` (their input gradients are then summed inside
    the node). ``pull_weight`` is ``k̂`` (positive), a function of ``weight`` for the backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, x_pull: Tensor | None, weight: Tensor, pull_weight: Tensor, bias: Tensor | None,
                alpha: Union[float, Tensor], geo: ConvSettings) -> Tensor:
        push = F.conv2d(x, weight, bias, geo.stride, geo.push_padding, geo.dilation, geo.groups).relu_()
        pull = F.conv2d(x if x_pull is None else x_pull, pull_weight, bias, geo.stride, geo.pull_padding,
                        geo.dilation, geo.groups).neg_().relu_()  # the pull response ReLU(x ⋆ (-k̂) - b)
        alpha_is_tensor = isinstance(alpha, Tensor)
        ctx.geo, ctx.float_alpha = geo, None if alpha_is_tensor else alpha
        ctx.save_for_backward(x, x_pull, weight, pull_weight, bias, push, pull, alpha if alpha_is_tensor else None)
        if geo.dual_output:
            return torch.cat([push, pull], dim=1)
        if alpha_is_tensor:
            return torch.addcmul(push, pull, alpha, value=-1)
        return torch.sub(push, pull, alpha=alpha)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, x_pull, weight, pull_weight, bias, push, pull, alpha = ctx.saved_tensors
        geo: ConvSettings = ctx.geo
        need_x, need_x_pull, need_w, _, need_b, need_alpha, _ = ctx.needs_input_grad
        higher_order = torch.is_grad_enabled()  # create_graph=True: the graph must see every dependence
        if need_w and higher_order:
            pull_weight = resize_kernel(weight, (pull_weight.shape[-2], pull_weight.shape[-1]))
        channels = push.shape[1]
        # Through the ReLUs (masks from the rectified maps), then onto the convolutions' outputs:
        # d out / d pull_conv = alpha * 1[pull > 0] (the pull convolution's output enters negated).
        if geo.dual_output:
            grad_push = torch.ops.aten.threshold_backward(grad[:, :channels], push, 0)
            grad_pull = -torch.ops.aten.threshold_backward(grad[:, channels:], pull, 0)
        else:
            grad_push = torch.ops.aten.threshold_backward(grad, push, 0)
            grad_pull = torch.ops.aten.threshold_backward(grad, pull, 0) * (alpha if alpha is not None
                                                                           else ctx.float_alpha)
        bias_sizes = [channels] if bias is not None else None
        dx, dw, db = torch.ops.aten.convolution_backward(
            grad_push, x, weight, bias_sizes, geo.stride, geo.push_padding, geo.dilation,
            False, [0, 0], geo.groups, [need_x, need_w, need_b])
        dx_pull, dw_pull, db_pull = torch.ops.aten.convolution_backward(
            grad_pull, x if x_pull is None else x_pull, pull_weight, bias_sizes, geo.stride, geo.pull_padding,
            geo.dilation, False, [0, 0], geo.groups, [need_x if x_pull is None else need_x_pull, need_w, need_b])
        if x_pull is None and need_x:
            dx, dx_pull = dx + dx_pull, None
        if need_w:
            dw = dw + resize_kernel_adjoint(dw_pull, (weight.shape[-2], weight.shape[-1]))
        if need_b:
            db = db + db_pull
        d_alpha = None
        if need_alpha and not geo.dual_output:  # dual output does not use alpha
            if higher_order:
                pull = F.conv2d(x if x_pull is None else x_pull, pull_weight, bias, geo.stride, geo.pull_padding,
                                geo.dilation, geo.groups).neg().relu()
            d_alpha = (-(grad * pull)).sum(dim=(0, 2, 3), keepdim=True).sum_to_size(alpha.shape)
        return dx, dx_pull, dw, None, db, d_alpha, None


@eager_cache()
def _row_filter_matrix(size: int, before: int, pull: int, kernel: int, stride: int, dilation: int,
                       out_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The banded (kernel * out_size, size) matrix whose product with the input's rows gives the
    ``kernel`` vertically resized copies (output row ``i``, pull tap ``t`` reads input row
    ``i * stride + t * dilation - before``; rows outside the input are the zero padding)."""
    a = interpolation_matrix(kernel, pull, torch.float64, torch.device("cpu"))  # (pull, kernel)
    out_rows = torch.arange(out_size)[:, None].expand(out_size, pull)
    taps = torch.arange(pull)[None, :].expand(out_size, pull)
    in_rows = out_rows * stride + taps * dilation - before
    inside = ((in_rows >= 0) & (in_rows < size)).to(torch.float64)
    targets = (out_rows * size + in_rows.clamp(0, size - 1)).reshape(-1)  # outside: a zero added anywhere
    rows = torch.zeros(out_size * size, kernel, dtype=torch.float64)  # (no boolean masks: fake tensors too)
    rows.index_add_(0, targets, (a[taps] * inside[..., None]).reshape(-1, kernel))
    rows = rows.view(out_size, size, kernel).permute(2, 0, 1).reshape(kernel * out_size, size)
    return rows.to(dtype=dtype, device=device)


def separable_pull(x: Tensor, weight: Tensor, pull_size: tuple[int, int], row_pads: tuple[int, int], col_pad: int,
                   stride: tuple[int, int], dilation: tuple[int, int], groups: int) -> Tensor:
    """``x ⋆ k̂`` (no bias) without the p x p convolution; zero row padding ``row_pads``, ``col_pad`` per side.

    ``k̂ = A_h k A_wᵀ``, so the vertical resize is applied to the input instead: one banded
    matrix product (padding, stride and dilation folded in) gives the K_h vertically filtered
    copies of every channel, and a 1 x p convolution with ``k A_wᵀ`` finishes the job:
    ``K_h·p`` instead of ``p·p`` multiply-adds per channel pair. Plain differentiable ops.
    """
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = weight.shape[-2:], pull_size
    top, bottom = row_pads
    out_h = (h + top + bottom - dilation[0] * (ph - 1) - 1) // stride[0] + 1
    rows = _row_filter_matrix(h, top, ph, kh, stride[0], dilation[0], out_h, x.dtype, x.device)
    filtered = torch.matmul(rows, x).view(n, c * kh, out_h, w)  # channels ordered (c, a)
    a_w = interpolation_matrix(kw, pw, weight.dtype, weight.device)
    row_kernels = torch.einsum("ocab,tb->ocat", weight, a_w).reshape(weight.shape[0], -1, 1, pw)
    return F.conv2d(filtered, row_kernels, None, (1, stride[1]), (0, col_pad), (1, dilation[1]), groups)
