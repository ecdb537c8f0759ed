"""The "basis" path of the push-pull layer: the pull response from basis-filtered inputs.

``k̂ = A_h k A_wᵀ`` (SPEC §1), so ``x ⋆ k̂ = Σ_ab k[a, b] · (x ⋆ B_ab)`` with the fixed rank-1
filters ``B_ab = A_h[:, a] A_w[:, b]ᵀ``: every input channel is filtered with the K_h·K_w
separable basis filters, with the pull's stride, dilation and padding (a vertical pass with the
columns of ``A_h``, then a horizontal one with those of ``A_w``), and the push weights contract
the filtered planes as a 1x1 convolution (one batched matrix product). The contraction costs
what the push convolution costs, whatever the pull's size, and the filtering is cheap when the
input has few channels: the ImageNet stem (3 → 64, 7x7 stride 2, a 15x15 pull) and narrow
inputs in inference. Exact: the same sums in another order.

The filtering runs in the compiled kernels of ``_basis.c`` (float32 CPU eager tensors) or, for
everything else (other devices and dtypes, fake tensors, FLOP counting), as two grouped
convolutions; both are differentiable to any order (the kernels' adjoint is its own node). In
inference, narrow layers run as one compiled kernel per image (:func:`_planes_inference`); in
training (and larger inference), float32 CPU layers with one group run on stacked planes
(:mod:`._stacked`) inside the same autograd node.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _native, _stacked
from ._fast import ConvSettings
from ._workspace import lease
from .config import PLANES_MAX_BYTES
from .eager import eager_call
from .geometry import Pads, conv_padding, pad2d
from .reference import combine
from .resize import interpolation_matrix

Geometry = tuple[int, ...]  # (planes, h, w, kh, kw, ph, pw, ho, wo, top, left, sh, sw, dh, dw), as _basis.c reads it


def _matrices(geometry: Geometry, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    kh, kw, ph, pw = geometry[3:7]
    return interpolation_matrix(kh, ph, dtype, device), interpolation_matrix(kw, pw, dtype, device)


class _NativeFilter(torch.autograd.Function):
    """The basis filtering in the compiled kernels: (N, C, H, W) → (N, C, K_h, K_w, H_out, W_out)."""

    @staticmethod
    def forward(ctx, x: Tensor, geometry: Geometry) -> Tensor:
        ctx.geometry = geometry
        n, c = x.shape[:2]
        out = x.new_empty(n, c, *geometry[3:5], *geometry[7:9])
        _native.basis_forward(geometry, x.contiguous(), *_matrices(geometry, x.dtype, x.device), out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _NativeFilterAdjoint.apply(grad, ctx.geometry), None


class _NativeFilterAdjoint(torch.autograd.Function):
    """The filtering's adjoint (its input gradient), itself differentiable: its adjoint is the filtering."""

    @staticmethod
    def forward(ctx, grad: Tensor, geometry: Geometry) -> Tensor:
        ctx.geometry = geometry
        n, c = grad.shape[:2]
        gx = grad.new_empty(n, c, *geometry[1:3])
        _native.basis_backward(geometry, grad.contiguous(), *_matrices(geometry, grad.dtype, grad.device), gx)
        return gx

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _NativeFilter.apply(grad, ctx.geometry), None


def _operator_filter(x: Tensor, geometry: Geometry) -> Tensor:
    """The same filtering as two grouped convolutions (any device, dtype and tensor kind)."""
    n, c = x.shape[:2]
    _, _, _, kh, kw, ph, pw, ho, wo, top, left, sh, sw, dh, dw = geometry
    a_h, a_w = _matrices(geometry, x.dtype, x.device)
    span_h, span_w = (ho - 1) * sh + (ph - 1) * dh + 1, (wo - 1) * sw + (pw - 1) * dw + 1  # what the outputs read
    x = F.pad(x, (left, span_w - left - x.shape[-1], top, span_h - top - x.shape[-2]))  # crops beyond the span
    rows = F.conv2d(x, a_h.T.reshape(kh, 1, ph, 1).repeat(c, 1, 1, 1), None, (sh, 1), 0, (dh, 1), c)
    out = F.conv2d(rows, a_w.T.reshape(kw, 1, 1, pw).repeat(c * kh, 1, 1, 1), None, (1, sw), 0, (1, dw), c * kh)
    return out.reshape(n, c, kh, kw, ho, wo)


def native_covers(x: Tensor, kernel_size: tuple[int, int], pull_size: tuple[int, int]) -> bool:
    """Whether the compiled kernels can filter ``x`` (float32 eager CPU tensors, kernels built)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and eager_call(x) and _native.available()
            and max(kernel_size[0] * pull_size[0], kernel_size[1] * pull_size[1]) <= _native.MAX_TAPS)


def filter_geometry(x: Tensor, kernel_size: tuple[int, int], pull_size: tuple[int, int], top_left: tuple[int, int],
                    out_size: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> Geometry:
    """The filtering's sizes for ``x`` zero-padded by ``top_left`` (the far sides follow from ``out_size``)."""
    n, c, h, w = x.shape
    return (n * c, h, w, *kernel_size, *pull_size, *out_size, *top_left, *stride, *dilation)


def basis_planes(x: Tensor, geometry: Geometry) -> Tensor:
    """The basis-filtered planes of ``x``, (N, C, K_h, K_w, H_out, W_out), differentiable in ``x``."""
    native = native_covers(x, geometry[3:5], geometry[5:7])
    return _NativeFilter.apply(x, geometry) if native else _operator_filter(x, geometry)


def contract(weight: Tensor, planes: Tensor, groups: int, bias: Tensor | None = None) -> Tensor:
    """The push weights applied to the filtered planes (a 1x1 convolution, group by group): ``x ⋆ k̂ + b``."""
    n, c, kh, kw, ho, wo = planes.shape
    cout = weight.shape[0]
    w = weight.reshape(groups, cout // groups, c // groups * kh * kw)
    planes = planes.reshape(n, groups, c // groups * kh * kw, ho * wo)
    if bias is None:
        return torch.matmul(w, planes).reshape(n, cout, ho, wo)
    return torch.matmul(w, planes).add_(bias.reshape(groups, cout // groups, 1)).reshape(n, cout, ho, wo)


class BasisPushPull(torch.autograd.Function):
    """``ReLU(x ⋆ k + b) - alpha * ReLU(-(x ⋆ k̂ + b))`` (or both maps) with the pull from basis planes.

    One node, like :class:`._fast.PushPullFunction`: pre-activations rectified in place, the
    gradients of both responses summed inside, a float ``alpha`` applied to the small weight-sized
    products rather than to the maps. ``x_pull`` is the pull's input when its padding had to be
    applied explicitly (None: ``x``, zero-padded by ``geometry``'s top/left); ``grad_enabled`` is
    the caller's grad mode (without it nothing is kept and the output reuses the push's memory).
    """

    @staticmethod
    def forward(ctx, x: Tensor, x_pull: Tensor | None, weight: Tensor, bias: Tensor | None, alpha: Union[float, Tensor],
                geo: ConvSettings, geometry: Geometry, grad_enabled: bool,
                push_geometry: Geometry | None = None) -> Tensor:
        ctx.stacked = push_geometry
        if push_geometry is not None:  # both responses from stacked planes, in compiled kernels (see ._stacked)
            return _stacked_forward(ctx, x, weight, bias, alpha, geo, geometry, grad_enabled, push_geometry)
        push = F.conv2d(x, weight, bias, geo.stride, geo.push_padding, geo.dilation, geo.groups).relu_()
        planes = basis_planes(x if x_pull is None else x_pull, geometry)
        pull = contract(weight.neg(), planes, geo.groups, None if bias is None else bias.neg()).relu_()
        alpha_is_tensor = isinstance(alpha, Tensor)
        ctx.geo, ctx.geometry, ctx.float_alpha = geo, geometry, None if alpha_is_tensor else alpha
        if grad_enabled and any(ctx.needs_input_grad):
            ctx.save_for_backward(x, x_pull, weight, bias, planes, push, pull, alpha if alpha_is_tensor else None)
        if geo.dual_output:
            return torch.cat([push, pull], dim=1)
        if alpha_is_tensor:
            return torch.addcmul(push, pull, alpha, value=-1)
        if not grad_enabled:
            return push.sub_(pull, alpha=alpha)
        return torch.sub(push, pull, alpha=alpha)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph: differentiate the composition of differentiable parts
            return _differentiable_backward(ctx, grad)
        if ctx.stacked is not None:
            return _stacked_backward(ctx, grad)
        x, x_pull, weight, bias, planes, push, pull, alpha = ctx.saved_tensors
        geo: ConvSettings = ctx.geo
        need_x, need_x_pull, need_w, need_b, need_alpha = ctx.needs_input_grad[:5]
        channels = push.shape[1]
        # the gradient of x ⋆ k̂ + b is scale * t: the pull's ReLU mask times the output gradient
        if geo.dual_output:
            grad_push = torch.ops.aten.threshold_backward(grad[:, :channels], push, 0)
            t, scale = torch.ops.aten.threshold_backward(grad[:, channels:], pull, 0), -1.0
        else:
            grad_push = torch.ops.aten.threshold_backward(grad, push, 0)
            t, scale = torch.ops.aten.threshold_backward(grad, pull, 0), ctx.float_alpha
            if alpha is not None:
                t, scale = t * alpha, 1.0
        dx, dw, db = torch.ops.aten.convolution_backward(
            grad_push, x, weight, [channels] if bias is not None else None, geo.stride, geo.push_padding,
            geo.dilation, False, [0, 0], geo.groups, [need_x, need_w, need_b])
        n, c, kh, kw, ho, wo = planes.shape
        groups, cout = geo.groups, weight.shape[0]
        g = t.reshape(n, groups, cout // groups, ho * wo)
        if need_w:
            p = planes.reshape(n, groups, c // groups * kh * kw, ho * wo)
            dw = dw + torch.matmul(g, p.transpose(-1, -2)).sum(0).reshape(weight.shape) * scale
        if need_b:
            db = db + t.sum((0, 2, 3)) * scale
        dx_pull = None
        if need_x or need_x_pull:
            w = weight.reshape(groups, cout // groups, c // groups * kh * kw) * scale
            dx_pull = _filter_adjoint(torch.matmul(w.transpose(-1, -2), g).reshape(planes.shape), ctx.geometry)
            if x_pull is None:
                dx, dx_pull = dx + dx_pull, None
        d_alpha = None
        if need_alpha and not geo.dual_output:  # dual output does not use alpha
            d_alpha = (-(grad * pull)).sum(dim=(0, 2, 3), keepdim=True).sum_to_size(alpha.shape)
        return dx, dx_pull, dw, db, d_alpha, None, None, None, None


def _per_channel(alpha: Union[float, Tensor], channels: int) -> Tensor:
    """``alpha`` (a float, or a tensor of one value or one per output channel) as (C_out,) float32 values."""
    return (torch.full((channels,), float(alpha)) if not isinstance(alpha, Tensor)
            else alpha.detach().reshape(-1).expand(channels).contiguous())


def _stacked_forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, alpha: Union[float, Tensor],
                     geo: ConvSettings, geometry: Geometry, grad_enabled: bool, push_geometry: Geometry) -> Tensor:
    alpha_is_tensor = isinstance(alpha, Tensor)
    ctx.geo, ctx.geometry, ctx.float_alpha = geo, geometry, None if alpha_is_tensor else alpha
    keep = grad_enabled and any(ctx.needs_input_grad)
    keep_pull = keep and alpha_is_tensor and ctx.needs_input_grad[4] and not geo.dual_output
    alphas = _per_channel(alpha, weight.shape[0])
    out, mask, pull_r, planes, ctx.chunk = _stacked.forward(x, weight, bias, alphas, geo.dual_output, push_geometry,
                                                            geometry, keep_pull, keep and ctx.needs_input_grad[2])
    if keep:  # in BasisPushPull's layout (which _differentiable_backward reads), then the planes
        ctx.save_for_backward(x, None, weight, bias, mask, pull_r, alphas, alpha if alpha_is_tensor else None, planes)
    return out


def _stacked_backward(ctx, grad: Tensor):
    x, _, weight, bias, mask, pull_r, alphas, alpha, planes = ctx.saved_tensors
    need_x, _, need_w, need_b, need_alpha = ctx.needs_input_grad[:5]
    need_alpha = need_alpha and not ctx.geo.dual_output  # dual output does not use alpha
    dx, dw, db, sums_a = _stacked.backward(grad, x, weight, mask, pull_r, alphas, ctx.geo.dual_output, ctx.stacked,
                                           ctx.geometry, planes, ctx.chunk,
                                           (need_x, need_w, need_b and bias is not None, need_alpha))
    d_alpha = None if sums_a is None else sums_a.sum(0).view(1, -1, 1, 1).sum_to_size(alpha.shape)
    return dx, None, dw, db, d_alpha, None, None, None, None


def _filter_adjoint(grad: Tensor, geometry: Geometry) -> Tensor:
    if native_covers(grad, geometry[3:5], geometry[5:7]):
        return _NativeFilterAdjoint.apply(grad, geometry)
    n, c = grad.shape[:2]
    x = grad.new_zeros(n, c, *geometry[1:3], requires_grad=True)
    with torch.enable_grad():
        return torch.autograd.grad(_operator_filter(x, geometry), x, grad)[0]


def _differentiable_backward(ctx, grad: Tensor):
    """Gradients that can themselves be differentiated: autograd through the node's parts."""
    x, x_pull, weight, bias, _, _, _, alpha = ctx.saved_tensors[:8]
    geo: ConvSettings = ctx.geo
    with torch.enable_grad():
        push = F.conv2d(x, weight, bias, geo.stride, geo.push_padding, geo.dilation, geo.groups)
        pull = -contract(weight, basis_planes(x if x_pull is None else x_pull, ctx.geometry), geo.groups, bias)
        out = combine(push, pull, alpha if alpha is not None else ctx.float_alpha, geo.dual_output)
        inputs = [t for t in (x, x_pull, weight, bias, alpha) if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(out, inputs, grad, create_graph=True, allow_unused=True))
    return (*(next(grads) if t is not None and t.requires_grad else None for t in (x, x_pull, weight, bias, alpha)),
            None, None, None, None)


def _out_size(x: Tensor, pull_size: tuple[int, int], q_pads: Pads, stride: tuple[int, int],
              dilation: tuple[int, int]) -> tuple[int, int]:
    (ph, pw), (h, w), (left, right, top, bottom) = pull_size, x.shape[-2:], q_pads
    return ((h + top + bottom - dilation[0] * (ph - 1) - 1) // stride[0] + 1,
            (w + left + right - dilation[1] * (pw - 1) - 1) // stride[1] + 1)


def inference_covers(x: Tensor, weight: Tensor, bias: Tensor | None, alpha: Union[float, Tensor], pads: Pads,
                     q_pads: Pads, pull_size: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                     padding_mode: str) -> bool:
    """Whether the compiled inference kernel (:func:`_planes_inference`) computes this call: nothing
    records gradients, float32 eager CPU tensors, zero padding, a scalar or per-channel ``alpha``,
    planes within ``config.PLANES_MAX_BYTES`` per image."""
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in (x, weight, bias, alpha)):
        return False
    c, (cout, cpg, kh, kw) = x.shape[1], weight.shape
    ho, wo = _out_size(x, pull_size, q_pads, stride, dilation)
    per_channel = not isinstance(alpha, Tensor) or alpha.numel() == 1 or (
        alpha.numel() == cout and tuple(alpha.shape[-3:]) == (cout, 1, 1))
    return (per_channel and padding_mode == "zeros" and min(pads) >= 0 and min(q_pads) >= 0
            and weight.dtype == torch.float32 and native_covers(x, (kh, kw), pull_size)
            and eager_call(weight, bias, alpha) and cpg * kh * kw <= _native.MAX_TAPS
            and 2 * c * kh * kw * ho * wo * 4 <= PLANES_MAX_BYTES)


def _planes_inference(x: Tensor, weight: Tensor, bias: Tensor | None, pads: Pads, geometry: Geometry, groups: int,
                      alpha: Union[float, Tensor], dual_output: bool) -> Tensor:
    """The layer in inference by the compiled ``pp_planes_infer`` (where :func:`inference_covers`).

    Per image, in the thread's caches, the push's shifted copies of ``x`` and the pull's basis planes
    (both ``K_h·K_w`` per input channel), then both responses from one product with the weights,
    rectified and combined: no full-size intermediate map, and no convolution whose narrow input
    keeps it from vectorising.
    """
    n, c = x.shape[:2]
    cout, _, kh, kw = weight.shape
    ho, wo, stride, dilation = *geometry[7:9], geometry[11:13], geometry[13:15]
    push_geometry = filter_geometry(x, (kh, kw), (kh, kw), (pads[2], pads[0]), (ho, wo), stride, dilation)
    alphas = (torch.full((cout,), float(alpha)) if not isinstance(alpha, Tensor)
              else alpha.detach().reshape(-1).expand(cout).contiguous())
    out = lease((n, cout * (2 if dual_output else 1), ho, wo), x.dtype, x.device)  # no page faults call after call
    _native.planes_infer((n, c, cout, groups), push_geometry, geometry, x.contiguous(),
                         _native.output_blocks(weight, groups), _matrices(geometry, x.dtype, x.device),
                         None if bias is None else bias.detach().contiguous(), alphas, dual_output, out)
    return _in_input_format(out, x)


def push_pull_basis(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], pads: Pads,
                    q_pads: Pads, dilation: tuple[int, int], groups: int, pull_size: tuple[int, int],
                    alpha: Union[float, Tensor], dual_output: bool, padding_mode: str) -> Tensor:
    """The layer by :class:`BasisPushPull` (in inference by the compiled kernel, where it covers the call);
    zero padding is folded into the filtering, other padding applied first."""
    x_push, push_pad = conv_padding(x, pads, padding_mode)
    x_pull, (left, right, top, bottom) = x, q_pads
    if padding_mode != "zeros" or min(q_pads) < 0:
        x_pull, (left, right, top, bottom) = pad2d(x, q_pads, padding_mode), (0, 0, 0, 0)
    out_size = _out_size(x_pull, pull_size, (left, right, top, bottom), stride, dilation)
    geometry = filter_geometry(x_pull, (weight.shape[-2], weight.shape[-1]), pull_size, (top, left), out_size, stride,
                               dilation)
    if inference_covers(x, weight, bias, alpha, pads, q_pads, pull_size, stride, dilation, padding_mode):
        return _planes_inference(x, weight, bias, pads, geometry, groups, alpha, dual_output)
    geo = ConvSettings(stride, push_pad, (0, 0), dilation, groups, dual_output)
    push_geometry = None
    if x_push is x and x_pull is x and _stacked_covers(x, weight, bias, alpha, groups, pull_size):
        push_geometry = filter_geometry(x, (weight.shape[-2], weight.shape[-1]), (weight.shape[-2], weight.shape[-1]),
                                        (pads[2], pads[0]), out_size, stride, dilation)
    out = BasisPushPull.apply(x_push, None if x_pull is x_push else x_pull, weight, bias, alpha, geo, geometry,
                              torch.is_grad_enabled(), push_geometry)
    return _in_input_format(out, x) if push_geometry is not None else out


def _in_input_format(out: Tensor, x: Tensor) -> Tensor:
    """A compiled kernel's (contiguous) output in the input's memory format, as ``F.conv2d`` gives it."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def _stacked_covers(x: Tensor, weight: Tensor, bias: Tensor | None, alpha: Union[float, Tensor], groups: int,
                    pull_size: tuple[int, int]) -> bool:
    """Whether :mod:`._stacked` computes a call whose zero padding both filterings fold in: float32 eager CPU
    tensors, one group, a scalar or per-channel ``alpha``."""
    kernel_size, cout = (weight.shape[-2], weight.shape[-1]), weight.shape[0]
    per_channel = not isinstance(alpha, Tensor) or alpha.numel() == 1 or (
        alpha.numel() == cout and tuple(alpha.shape[-3:]) == (cout, 1, 1))
    return (groups == 1 and per_channel and weight.dtype == torch.float32 and eager_call(weight, bias, alpha)
            and native_covers(x, kernel_size, pull_size) and native_covers(x, kernel_size, kernel_size))
