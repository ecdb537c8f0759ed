"""The push-pull layer, :class:`PushPullConv2d`, and :func:`push_pull_conv2d`, which picks the path.

    R(x) = ReLU(x * k + b) - alpha * ReLU(x * (-k_hat) - b)

where ``k_hat`` is the push kernel ``k`` resized by bilinear interpolation
(``align_corners=True``) to ``pull_kernel_size(K, scale)``. Only ``k`` (and optionally a
per-channel ``alpha``) is learned, so the layer has the parameter count of the plain
convolution it replaces.

Every path computes the function of :func:`.reference.push_pull_conv2d_reference`; this module
chooses among them by what covers the call and by the measured cost rules (thresholds in
:mod:`.config`), and the module caches the kernels derived from its weights (only eager ones,
see :mod:`.eager`). The layer keeps the original implementation's state-dict layout
(``<name>.push.weight``, ``<name>.push.bias``, ``<name>.alpha``) so its checkpoints load unchanged.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal, Union, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from . import _basis, _native
from ._fast import ConvSettings, PushPullFunction, separable_pull
from .config import (BASIS_MAX_CHANNELS, NATIVE_MIN_INFERENCE_CHANNELS, PLANES_MAX_CHANNELS, SEPARABLE_MIN_CHANNELS,
                     use_plain_ops)
from .eager import eager_call
from .geometry import PaddingArg, Pads, check_fits, conv_padding, pad2d, pull_kernel_size, pull_padding, push_padding
from .reference import combine, push_pull_conv2d_reference
from .resize import pull_kernel

Impl = Literal["auto", "native", "basis", "fused", "separable", "reference"]
IMPLS = get_args(Impl)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type``; None when off or unknown to autocast (e.g. meta)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return None
    return torch.get_autocast_dtype(device_type) if enabled else None


def _check_functional_args(x: Tensor, weight: Tensor, groups: int) -> None:
    if weight.dim() != 4:
        raise ValueError(f"weight must be (out_channels, in_channels / groups, kH, kW), got shape {tuple(weight.shape)}")
    if x.dim() != 4:
        raise ValueError(f"input must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"input has {x.shape[1]} channels but the weight expects {weight.shape[1] * groups} "
                         f"({weight.shape[1]} per group x {groups} groups)")


def push_pull_conv2d(
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
    impl: Impl = "auto",
    *,
    pull_weight: Tensor | None = None,
    packed_weight: Tensor | None = None,
) -> Tensor:
    """Functional push-pull convolution: ``ReLU(x * k + b) - alpha * ReLU(x * (-k_hat) - b)``.

    Computes :func:`push_pull_conv2d_reference`'s function (up to float rounding) by the
    fastest exact path that covers the call.

    Args:
        x: input, (N, C_in, H, W) or unbatched (C_in, H, W).
        weight: the push kernel ``k``, (C_out, C_in / groups, K_h, K_w); the only learned kernel.
        bias: (C_out,) or None; the pull convolution uses ``-bias``.
        stride, padding, dilation, groups, padding_mode: as ``F.conv2d`` / ``nn.Conv2d``
            (``padding`` also ``"same"`` or ``"valid"``; ``padding_mode`` ``"zeros"``,
            ``"reflect"``, ``"replicate"`` or ``"circular"``); the pull convolution is padded
            so that both responses align and have the push convolution's output shape.
        scale: pull kernel size factor (> 0): ``k_hat`` is ``k`` resized bilinearly to
            ``floor(K * scale)`` made odd; 1 uses ``k`` itself.
        alpha: inhibition strength, a float or a tensor broadcast against the output (e.g.
            (1, C_out, 1, 1)), used as given.
        dual_output: return ``[ReLU(push), ReLU(pull)]`` concatenated along channels instead
            of their difference.
        impl: ``"auto"`` picks the fastest path that covers the call (cost rules
            :func:`_native_pays`, :func:`_separable_pays`; thresholds in :mod:`.config`);
            ``"native"``: both responses from one shared product in compiled kernels
            (:mod:`._native`; float32 CPU, stride 1, dilation 1, one group, zero padding;
            an error names what else it does not cover); ``"fused"``: both convolutions in one
            autograd node (:class:`._fast.PushPullFunction`); ``"separable"``: the pull as a
            row filter then a 1 x p convolution (:func:`._fast.separable_pull`);
            ``"reference"``: the two-convolution definition. While traced, compiled, exported
            or under ``torch.func`` transforms every choice computes the reference; on fake
            or meta tensors or under a dispatch mode (FLOP counting) ``"native"`` computes
            the fused path's operators (its kernels need real memory).
        pull_weight: a precomputed ``pull_kernel(weight, scale)`` (the module passes its cached one).
        packed_weight: a precomputed ``_native.packed_weight(weight)`` (likewise).

    Returns:
        (N, C_out, H_out, W_out) (2 C_out channels with ``dual_output``), unbatched for an
        unbatched input, in the input's memory format.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if x.dim() == 3:
        return push_pull_conv2d(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups, scale, alpha,
                                dual_output, padding_mode, impl, pull_weight=pull_weight,
                                packed_weight=packed_weight).squeeze(0)
    _check_functional_args(x, weight, groups)
    if impl == "reference" or use_plain_ops():
        return push_pull_conv2d_reference(x, weight, bias, stride, padding, dilation, groups, scale, alpha,
                                          dual_output, padding_mode)
    stride, dilation = _pair(stride), _pair(dilation)
    kernel_size = (weight.shape[-2], weight.shape[-1])
    pads = push_padding(padding, kernel_size, stride, dilation)
    check_fits(x, pads, kernel_size, dilation)
    if pull_weight is None:
        pull_weight = pull_kernel(weight.detach(), scale)
    q_pads = pull_padding(pads, kernel_size, (pull_weight.shape[-2], pull_weight.shape[-1]), dilation)
    dtype = autocast_dtype(x.device.type)
    if dtype is not None:  # run the convolutions in the autocast dtype, as F.conv2d would
        x, weight, pull_weight = x.to(dtype), weight.to(dtype), pull_weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    if isinstance(alpha, Tensor):
        alpha = alpha.to(x.dtype)
    if impl == "native" and not eager_call(x, weight, bias, alpha, packed_weight):
        impl = "fused"  # fake or meta tensors, FLOP counting: the kernels need real memory, shapes do not
    pull_size = (pull_weight.shape[-2], pull_weight.shape[-1])
    planes = (impl == "auto" and pull_size[0] * pull_size[1] > kernel_size[0] * kernel_size[1]  # basis's inference
              and _basis.inference_covers(x, weight, bias, alpha, pads, q_pads, pull_size, stride, dilation,
                                          padding_mode))
    if impl in ("auto", "native"):
        reason = _native.unsupported(x, weight, pull_size, stride, dilation, groups, padding_mode, pads, q_pads,
                                     operands=(bias, alpha, packed_weight))
        if impl == "native" and reason is not None:
            raise ValueError(f"impl='native' cannot compute this call: {reason}")
        if impl == "native" or (reason is None and _native_pays(x, weight, planes)):
            if packed_weight is None:
                packed_weight = _native.packed_weight(weight)
            out = _native.NativePushPull.apply(x.contiguous(), weight, packed_weight, bias, alpha, pull_size,
                                               (pads[2], pads[0]), (q_pads[2], q_pads[0]), dual_output,
                                               torch.is_grad_enabled())
            channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
            return out.contiguous(memory_format=torch.channels_last) if channels_last else out  # as F.conv2d does
    if impl == "auto":
        impl = ("basis" if _basis_pays(x, weight, pull_weight, groups, planes)
                else "separable" if _separable_pays(x, weight, pull_weight, groups) else "fused")
    if impl == "basis":
        with torch.autocast(x.device.type, enabled=False) if dtype is not None else contextlib.nullcontext():
            return _basis.push_pull_basis(x, weight, bias, stride, pads, q_pads, dilation, groups,
                                          (pull_weight.shape[-2], pull_weight.shape[-1]), alpha, dual_output,
                                          padding_mode)
    if impl == "separable":
        return _push_pull_separable(x, weight, bias, stride, pads, q_pads, dilation, groups, pull_weight,
                                    alpha, dual_output, padding_mode)
    x_push, push_pad = conv_padding(x, pads, padding_mode)
    x_pull, pull_pad = conv_padding(x, q_pads, padding_mode)
    geo = ConvSettings(stride, push_pad, pull_pad, dilation, groups, dual_output)
    with torch.autocast(x.device.type, enabled=False) if dtype is not None else contextlib.nullcontext():
        return PushPullFunction.apply(x_push, None if x_pull is x_push else x_pull, weight, pull_weight, bias,
                                      alpha, geo)


def _records_grad(x: Tensor, weight: Tensor) -> bool:
    """Whether this call is part of training (a backward will follow)."""
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


def _native_pays(x: Tensor, weight: Tensor, planes: bool) -> bool:
    """Whether the native path beats the others (measured on a 2-core CPU): always when
    gradients are recorded; in inference from 5 input channels (with fewer the direct pull
    convolution is cheap and the native path's per-tap filtering dominates), except up to
    ``PLANES_MAX_CHANNELS`` where the basis path's inference kernel covers the call (``planes``).
    """
    cin = weight.shape[1]
    planes_pay = planes and cin <= PLANES_MAX_CHANNELS
    return _records_grad(x, weight) or (cin >= NATIVE_MIN_INFERENCE_CHANNELS and not planes_pay)


def _separable_pays(x: Tensor, weight: Tensor, pull_weight: Tensor, groups: int) -> bool:
    """Whether the separable pull beats the direct one: measured on the CPU, for a pull larger than
    the push, always when gradients are recorded, for wide layers also in inference.

    Its dense row filter costs K_h·H multiply-adds per input value, against (p_h - K_h)·p_w
    saved per output value and output channel: very tall inputs on narrow layers stay direct.
    """
    (kh, _), (ph, pw) = weight.shape[-2:], pull_weight.shape[-2:]
    cheap_rows = 2 * kh * x.shape[-2] < (ph - kh) * pw * (weight.shape[0] // groups)
    return (x.device.type == "cpu" and ph > kh and cheap_rows
            and (_records_grad(x, weight) or weight.shape[1] >= SEPARABLE_MIN_CHANNELS))


def _basis_pays(x: Tensor, weight: Tensor, pull_weight: Tensor, groups: int, planes: bool) -> bool:
    """Whether the basis pull beats the others (measured on a 2-core CPU): for a pull larger than the
    push, on narrow inputs (up to ``BASIS_MAX_CHANNELS`` per group, e.g. images; up to
    ``PLANES_MAX_CHANNELS`` where its inference kernel covers the call, ``planes``), when the compiled
    filtering covers the input; its filtered planes take K_h·K_w times the input's channels.
    """
    (kh, kw), (ph, pw) = weight.shape[-2:], pull_weight.shape[-2:]
    narrow = weight.shape[1] <= (PLANES_MAX_CHANNELS if planes else BASIS_MAX_CHANNELS)
    return ph * pw > kh * kw and narrow and _basis.native_covers(x, (kh, kw), (ph, pw))


def _push_pull_separable(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], pads: Pads,
                         q_pads: Pads, dilation: tuple[int, int], groups: int, pull_weight: Tensor,
                         alpha: Union[float, Tensor], dual_output: bool, padding_mode: str) -> Tensor:
    """The push convolution plus :func:`separable_pull`, composed under autograd."""
    x_push, push_pad = conv_padding(x, pads, padding_mode)
    push = F.conv2d(x_push, weight, bias, stride, push_pad, dilation, groups)
    pull_size = (pull_weight.shape[-2], pull_weight.shape[-1])
    left, right, top, bottom = q_pads
    if padding_mode != "zeros":  # pad explicitly; the rows' zero padding is folded into the filter matrix
        x, (left, right, top, bottom) = pad2d(x, q_pads, padding_mode), (0, 0, 0, 0)
    if left != right or left < 0:
        x, left = pad2d(x, (left, right, 0, 0)), 0
    pull = separable_pull(x, weight, pull_size, (top, bottom), left, stride, dilation, groups)
    return combine(push, pull.neg() if bias is None else -(pull + bias.view(-1, 1, 1)), alpha, dual_output)


def _storage_id(t: Tensor) -> int:
    """Identity of ``t``'s storage, read without touching its data pointer."""
    return t.untyped_storage()._cdata


class PushPullConv2d(nn.Module):
    """Drop-in replacement for ``nn.Conv2d`` with push-pull inhibition.

    ``ReLU(x * k + b) - alpha * ReLU(x * (-k_hat) - b)``: the convolution's response minus an
    inhibitory response to the same kernel, resized larger and negated. Takes
    ``nn.Conv2d``'s arguments plus the push-pull options (see ``__init__``); its state dict
    is ``push.weight``, ``push.bias`` (and ``alpha`` when trainable), as the original code's.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: PaddingArg = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        scale: float = 2.0,
        alpha: float = 1.0,
        trainable_alpha: bool = False,
        dual_output: bool = False,
        impl: Impl = "auto",
    ) -> None:
        """Build the layer; the push convolution is an ``nn.Conv2d`` made from the same arguments.

        Args:
            in_channels: channels of the input.
            out_channels: channels of the output (twice as many with ``dual_output``).
            kernel_size: push kernel size, an int or (K_h, K_w); even and non-square work.
            stride: as ``nn.Conv2d``; both convolutions use it.
            padding: as ``nn.Conv2d`` (int, pair, ``"same"``, ``"valid"``): the push
                convolution's padding; the pull convolution gets what centres its larger
                kernel on the push kernel, so both responses have the same shape.
            dilation: as ``nn.Conv2d``; both convolutions use it.
            groups: as ``nn.Conv2d``; both convolutions use it.
            bias: whether the push convolution has a bias ``b`` (the pull one uses ``-b``).
            padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``, for both.
            device: where the parameters are created (as ``nn.Conv2d``).
            dtype: the parameters' dtype (as ``nn.Conv2d``).
            scale: pull kernel size factor (> 0): the pull kernel is ``floor(K * scale)`` made
                odd (2: a 3x3 push gets a 7x7 pull); 1 uses the push kernel itself.
            alpha: fixed inhibition strength (>= 0, default 1); ignored with ``trainable_alpha``.
            trainable_alpha: learn one strength per output channel instead (parameter
                ``alpha``, (1, out_channels, 1, 1), initialised near 0.5, applied as
                ``ReLU(alpha)`` so it stays non-negative).
            dual_output: return ``[ReLU(push), ReLU(pull)]`` concatenated along channels
                instead of their difference.
            impl: ``"auto"`` (fast and exact: picks ``"native"``, ``"fused"`` or
                ``"separable"`` per call), one of those three to force it, or
                ``"reference"`` (the two-convolution definition); see :func:`push_pull_conv2d`.

        Raises:
            ValueError: for a non-positive or non-finite ``scale``, a negative ``alpha``, an
                unknown ``impl``, and whatever ``nn.Conv2d`` rejects.
        """
        super().__init__()
        if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        if not trainable_alpha and not (isinstance(alpha, (int, float)) and 0 <= alpha < math.inf):
            raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.push = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                              bias, padding_mode, device=device, dtype=dtype)
        self.scale = float(scale)
        self.dual_output = dual_output
        self.impl = impl
        self._pull_cache: tuple | None = None
        self.trainable_alpha = trainable_alpha
        if trainable_alpha:
            r = 1.0 / math.sqrt(in_channels * out_channels)
            self.alpha = nn.Parameter(
                torch.empty(1, out_channels, 1, 1, device=device, dtype=dtype).uniform_(0.5 - r, 0.5 + r))
        else:
            self.alpha = float(alpha)

    # Read-only views of the wrapped convolution, so the layer reads like an nn.Conv2d.
    @property
    def in_channels(self) -> int:
        return self.push.in_channels

    @property
    def out_channels(self) -> int:
        return self.push.out_channels * (2 if self.dual_output else 1)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.push.kernel_size  # type: ignore[return-value]

    @property
    def pull_size(self) -> tuple[int, int]:
        return (pull_kernel_size(self.kernel_size[0], self.scale), pull_kernel_size(self.kernel_size[1], self.scale))

    @property
    def stride(self) -> tuple[int, int]:
        return self.push.stride  # type: ignore[return-value]

    @property
    def padding(self) -> PaddingArg:
        return self.push.padding  # type: ignore[return-value]

    @property
    def dilation(self) -> tuple[int, int]:
        return self.push.dilation  # type: ignore[return-value]

    @property
    def groups(self) -> int:
        return self.push.groups

    @property
    def weight(self) -> Tensor:
        return self.push.weight

    @property
    def bias(self) -> Tensor | None:
        return self.push.bias

    def effective_alpha(self) -> Union[float, Tensor]:
        """The inhibition strength as applied: ``ReLU(alpha)`` when trainable."""
        return F.relu(self.alpha) if isinstance(self.alpha, Tensor) else self.alpha

    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in (3, 4):
            raise ValueError(f"{type(self).__name__} expects a (N, C, H, W) or (C, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point input, got {x.dtype} "
                            f"(convert and normalise images first)")
        if x.dtype != self.weight.dtype and autocast_dtype(x.device.type) is None:
            raise TypeError(f"input dtype {x.dtype} does not match the layer's weights ({self.weight.dtype}); "
                            f"convert one of them (e.g. layer.to({x.dtype})) or use torch.autocast")
        if x.shape[-3] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, "
                             f"got {x.shape[-3]} (input shape {tuple(x.shape)})")
        check_fits(x, push_padding(self.padding, self.kernel_size, self.stride, self.dilation), self.kernel_size,
                    self.dilation)

    def _derived(self, name: str, compute) -> Tensor:
        """``compute(weight)`` (without gradient), computed once and reused while the push weights
        are unchanged: the pull kernel, the native path's packing.

        The cache is keyed on the weight's storage, version counter (bumped by every in-place
        change: optimizer steps, ``load_state_dict``, edits under ``no_grad``), dtype and device,
        and is dropped by ``.to()`` / ``.half()`` / ``.cuda()``. Edits through ``weight.data``
        bypass the version counter: call :meth:`clear_cache` after those. Only eager weights
        in eager execution are cached (a fake kernel kept would poison the next real call).
        """
        w = self.push.weight
        if not eager_call(w):  # fake, meta, traced ...: never kept (see .eager)
            with torch.no_grad():
                return compute(w.detach())
        key = (w._version, w.dtype, w.device, tuple(w.shape), w.stride(), w.storage_offset(),
               torch.is_inference_mode_enabled())
        cached = getattr(self, "_pull_cache", None)  # absent in modules pickled by older versions
        if cached is None or cached[0] != key or _storage_id(cached[1]) != _storage_id(w):
            # keeping an alias of the weight pins its storage, so an equal identity means the same storage
            cached = self._pull_cache = (key, w.detach(), {})
        derived = cached[2]
        if name not in derived:
            with torch.no_grad():
                derived[name] = compute(w.detach())
        return derived[name]

    @property
    def pull_weight(self) -> Tensor:
        """The (positive) pull kernel derived from ``weight``, without gradient (cached, see :meth:`_derived`)."""
        return self._derived("pull", lambda w: pull_kernel(w, self.scale))

    @property
    def packed_weight(self) -> Tensor:
        """``weight`` laid out for the native kernels, without gradient (cached, see :meth:`_derived`)."""
        return self._derived("packed", _native.packed_weight)

    def clear_cache(self) -> None:
        """Forget the cached pull kernel (only needed after edits through ``weight.data``)."""
        self._pull_cache = None

    def _apply(self, fn, recurse=True):  # .to(), .half(), .cuda(): the cached kernel would be stale
        self.clear_cache()
        return super()._apply(fn, recurse)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        fast = self.impl != "reference" and not use_plain_ops()
        return push_pull_conv2d(
            x, self.push.weight, self.push.bias, self.stride, self.padding, self.dilation, self.groups, self.scale,
            self.effective_alpha(), self.dual_output, self.push.padding_mode, self.impl,
            pull_weight=self.pull_weight if fast else None,
            packed_weight=self.packed_weight if fast and self.push.weight.device.type == "cpu" else None)

    def extra_repr(self) -> str:
        p = self.push
        s = (f"{p.in_channels}, {p.out_channels}, push={tuple(p.kernel_size)}, pull={self.pull_size}, "
             f"stride={tuple(p.stride)}")
        if p.padding != (0, 0):
            s += f", padding={p.padding if isinstance(p.padding, str) else tuple(p.padding)}"
        if p.dilation != (1, 1):
            s += f", dilation={tuple(p.dilation)}"
        if p.groups != 1:
            s += f", groups={p.groups}"
        if p.bias is None:
            s += ", bias=False"
        s += ", alpha=trainable" if self.trainable_alpha else f", alpha={self.alpha:g}"
        if self.dual_output:
            s += ", dual_output=True"
        return s
