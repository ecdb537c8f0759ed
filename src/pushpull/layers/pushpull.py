"""The push-pull layer: a convolution paired with an inhibitory, larger, opposite-polarity copy.

    R(x) = ReLU(x * k + b) - alpha * ReLU(x * (-k_hat) - b)

where ``k_hat`` is the push kernel ``k`` resized by bilinear interpolation
(``align_corners=True``) to ``pull_kernel_size(K, scale)``. Only ``k`` (and optionally a
per-channel ``alpha``) is learned, so the layer has the parameter count of the plain
convolution it replaces.

The module keeps the original implementation's state-dict layout (``<name>.push.weight``,
``<name>.push.bias``, ``<name>.alpha``) so its checkpoints load unchanged.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from . import _native
from ._fast import SEPARABLE_MIN_CHANNELS, Geometry, PushPullFunction, separable_pull

# Input channels from which the native path also wins in inference. Measured, x -> 16 at
# 32x32, batch 128, 2 threads: native 4.3 / 4.3 / 4.5 / 5.3 ms against fused 3.4 / 4.0 /
# 5.5 / 11.7 ms for 3 / 4 / 6 / 16 input channels.
NATIVE_MIN_INFERENCE_CHANNELS = 5

Pads = tuple[int, int, int, int]  # (left, right, top, bottom), F.pad order
PaddingArg = Union[int, tuple[int, int], str]
Impl = Literal["auto", "native", "fused", "separable", "reference"]
IMPLS = ("auto", "native", "fused", "separable", "reference")


def pull_kernel_size(kernel_size: int, scale: float) -> int:
    """Side of the pull kernel: ``floor(K * scale)``, made odd by adding 1; ``K`` when scale is 1."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    if scale == 1:
        return kernel_size
    size = math.floor(kernel_size * scale)
    return size + 1 if size % 2 == 0 else size


def pull_kernel(weight: Tensor, scale: float) -> Tensor:
    """The (positive) pull kernel ``k_hat``: ``weight`` resized bilinearly with aligned corners."""
    kh, kw = weight.shape[-2:]
    size = (pull_kernel_size(kh, scale), pull_kernel_size(kw, scale))
    if size == (kh, kw):
        return weight
    return F.interpolate(weight, size=size, mode="bilinear", align_corners=True)


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


def _conv_padding(x: Tensor, pads: Pads, mode: str) -> tuple[Tensor, tuple[int, int]]:
    """Let the convolution pad when it can (symmetric zeros); otherwise pad ``x`` explicitly."""
    left, right, top, bottom = pads
    if mode == "zeros" and left == right >= 0 and top == bottom >= 0:
        return x, (top, left)
    return pad2d(x, pads, mode), (0, 0)


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

    Slow (a K=3 layer costs about 6.4 plain convolutions) but obviously correct; the
    fast path is tested against it.
    """
    stride, dilation = _pair(stride), _pair(dilation)
    kernel_size = (weight.shape[-2], weight.shape[-1])
    pads = push_padding(padding, kernel_size, stride, dilation)
    k_hat = pull_kernel(weight, scale)
    q_pads = pull_padding(pads, kernel_size, (k_hat.shape[-2], k_hat.shape[-1]), dilation)
    x_push, push_pad = _conv_padding(x, pads, padding_mode)
    x_pull, pull_pad = _conv_padding(x, q_pads, padding_mode)
    push = F.conv2d(x_push, weight, bias, stride, push_pad, dilation, groups)
    pull = F.conv2d(x_pull, -k_hat, None if bias is None else -bias, stride, pull_pad, dilation, groups)
    return combine(push, pull, alpha, dual_output)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type``; None when off or unknown to autocast (e.g. meta)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return None
    return torch.get_autocast_dtype(device_type) if enabled else None


def use_plain_ops() -> bool:
    """True while traced, scripted, compiled, exported or under ``torch.func`` transforms.

    The fused autograd node is opaque to those tools; the reference formulation is made of
    standard operations they all understand (and computes the same function).
    """
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export() or torch._C._are_functorch_transforms_active())


def _check_functional_args(x: Tensor, weight: Tensor, groups: int) -> None:
    if weight.dim() != 4:
        raise ValueError(f"weight must be (out_channels, in_channels / groups, kH, kW), got shape {tuple(weight.shape)}")
    if x.dim() != 4:
        raise ValueError(f"input must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"input has {x.shape[1]} channels but the weight expects {weight.shape[1] * groups} "
                         f"({weight.shape[1]} per group x {groups} groups)")


def _check_fits(x: Tensor, pads: Pads, kernel_size: tuple[int, int], dilation: tuple[int, int]) -> None:
    """The (dilated) kernel must fit in the padded input, as ``F.conv2d`` requires; a clear error otherwise."""
    for axis, (name, extra) in enumerate((("height", pads[2] + pads[3]), ("width", pads[0] + pads[1]))):
        span = dilation[axis] * (kernel_size[axis] - 1) + 1
        size = x.shape[-2 + axis]
        if size + extra < span:
            raise ValueError(f"input {name} {size} (+{extra} padding) is smaller than the "
                             f"{'dilated ' if dilation[axis] > 1 else ''}kernel ({span})")


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
    """Functional push-pull convolution; ``impl`` picks the implementation (all are exact).

    ``"native"``: both responses from one shared product and compiled filtering kernels
    (:mod:`._native`; float32 CPU, stride 1, dilation 1, one group, zero padding);
    ``"fused"``: both convolutions in one autograd node (:class:`._fast.PushPullFunction`);
    ``"separable"``: the pull through :func:`._fast.separable_pull` (a 1 x p instead of a
    p x p convolution); ``"auto"`` picks the fastest that covers the call (see
    :func:`_native_pays`, :func:`_separable_pays`), or the reference while being traced,
    compiled, exported or transformed. ``pull_weight`` and ``packed_weight`` may pass a
    precomputed ``pull_kernel(weight, scale)`` and ``_native.packed_weight(weight)`` (the
    module passes its cached ones). Accepts (N, C, H, W) or unbatched (C, H, W) inputs.
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
    _check_fits(x, pads, kernel_size, dilation)
    if pull_weight is None:
        pull_weight = pull_kernel(weight.detach(), scale)
    q_pads = pull_padding(pads, kernel_size, (pull_weight.shape[-2], pull_weight.shape[-1]), dilation)
    dtype = autocast_dtype(x.device.type)
    if dtype is not None:  # run the convolutions in the autocast dtype, as F.conv2d would
        x, weight, pull_weight = x.to(dtype), weight.to(dtype), pull_weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    if isinstance(alpha, Tensor):
        alpha = alpha.to(x.dtype)
    if impl in ("auto", "native"):
        pull_size = (pull_weight.shape[-2], pull_weight.shape[-1])
        reason = _native.unsupported(x, weight, pull_size, stride, dilation, groups, padding_mode, pads, q_pads)
        if impl == "native" and reason is not None:
            raise ValueError(f"impl='native' cannot compute this call: {reason}")
        if impl == "native" or (reason is None and _native_pays(x, weight)):
            if packed_weight is None:
                packed_weight = _native.packed_weight(weight)
            out = _native.NativePushPull.apply(x.contiguous(), weight, packed_weight, bias, alpha, pull_size,
                                               (pads[2], pads[0]), (q_pads[2], q_pads[0]), dual_output,
                                               torch.is_grad_enabled())
            channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
            return out.contiguous(memory_format=torch.channels_last) if channels_last else out  # as F.conv2d does
    if impl == "auto":
        impl = "separable" if _separable_pays(x, weight, pull_weight, groups) else "fused"
    if impl == "separable":
        return _push_pull_separable(x, weight, bias, stride, pads, q_pads, dilation, groups, pull_weight,
                                    alpha, dual_output, padding_mode)
    x_push, push_pad = _conv_padding(x, pads, padding_mode)
    x_pull, pull_pad = _conv_padding(x, q_pads, padding_mode)
    geo = Geometry(stride, push_pad, pull_pad, dilation, groups, dual_output)
    with torch.autocast(x.device.type, enabled=False) if dtype is not None else contextlib.nullcontext():
        return PushPullFunction.apply(x_push, None if x_pull is x_push else x_pull, weight, pull_weight, bias,
                                      alpha, geo)


def _records_grad(x: Tensor, weight: Tensor) -> bool:
    """Whether this call is part of training (a backward will follow)."""
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


def _native_pays(x: Tensor, weight: Tensor) -> bool:
    """Whether the native path beats the others (measured on a 2-core CPU): always when
    gradients are recorded; in inference from 5 input channels (with fewer the direct pull
    convolution is cheap and the native path's per-tap filtering dominates).
    """
    return _records_grad(x, weight) or weight.shape[1] >= NATIVE_MIN_INFERENCE_CHANNELS


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


def _push_pull_separable(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], pads: Pads,
                         q_pads: Pads, dilation: tuple[int, int], groups: int, pull_weight: Tensor,
                         alpha: Union[float, Tensor], dual_output: bool, padding_mode: str) -> Tensor:
    """The push convolution plus :func:`separable_pull`, composed under autograd."""
    x_push, push_pad = _conv_padding(x, pads, padding_mode)
    push = F.conv2d(x_push, weight, bias, stride, push_pad, dilation, groups)
    left, right, top, bottom = q_pads
    if padding_mode != "zeros":  # pad explicitly; the rows' zero padding is folded into the filter matrix
        x, (left, right, top, bottom) = pad2d(x, q_pads, padding_mode), (0, 0, 0, 0)
    if left != right or left < 0:
        x, left = pad2d(x, (left, right, 0, 0)), 0
    pull = separable_pull(x, weight, (pull_weight.shape[-2], pull_weight.shape[-1]), (top, bottom), left,
                          stride, dilation, groups)
    return combine(push, pull.neg() if bias is None else -(pull + bias.view(-1, 1, 1)), alpha, dual_output)


def _storage_id(t: Tensor) -> int:
    """Identity of ``t``'s storage (also for fake tensors, whose data pointers must not be read)."""
    return t.untyped_storage()._cdata


class PushPullConv2d(nn.Module):
    """Drop-in replacement for ``nn.Conv2d`` with push-pull inhibition.

    Takes ``nn.Conv2d``'s arguments plus:

    * ``scale``: pull kernel size factor (2: a 3x3 push gets a 7x7 pull).
    * ``alpha``: inhibition strength, a fixed float (default 1) ...
    * ``trainable_alpha``: ... or a learned per-channel strength, initialised near 0.5 and
      used as ``ReLU(alpha)`` so it stays non-negative.
    * ``dual_output``: return push and pull responses concatenated (2 x out_channels).
    * ``impl``: ``"auto"`` (fast, exact: picks ``"native"``, ``"fused"`` or ``"separable"``)
      or ``"reference"`` (the naive definition); see :func:`push_pull_conv2d`.
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
        _check_fits(x, push_padding(self.padding, self.kernel_size, self.stride, self.dilation), self.kernel_size,
                    self.dilation)

    def _derived(self, name: str, compute) -> Tensor:
        """``compute(weight)`` (without gradient), computed once and reused while the push weights
        are unchanged: the pull kernel, the native path's packing.

        The cache is keyed on the weight's storage, version counter (bumped by every in-place
        change: optimizer steps, ``load_state_dict``, edits under ``no_grad``), dtype and device,
        and is dropped by ``.to()`` / ``.half()`` / ``.cuda()``. Edits through ``weight.data``
        bypass the version counter: call :meth:`clear_cache` after those.
        """
        w = self.push.weight
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
