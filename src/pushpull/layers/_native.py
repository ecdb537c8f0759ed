"""The native CPU path of the push-pull layer: one set of products for both responses.

Both convolutions use the same weights ``k``, so their matrix work can be shared (SPEC §1,
"factor on the output side"): the products ``Y[o, a, b] = k[o, :, a, b] · x`` (one map per
kernel tap) give the push response as a sum of shifted maps and the pull response as the
same maps filtered by the fixed, separable resize matrices. Products, filtering,
rectification and their adjoints are the C kernels of ``_native.c``: they work on one
(image, channel) plane at a time, so everything stays in the CPU caches, and run in
parallel with OpenMP (PyTorch's runtime and thread count). For wide inputs the backward
leaves the products' adjoints to PyTorch's BLAS (``_blas_backward``): they are plain matrix
products with the weights, which BLAS does faster than a plane at a time; so does the forward
with the products themselves where an input image does not stay in L2 (``_blas_forward``). The kernels are
compiled on first use with the system's C compiler and loaded by
:func:`pushpull._compiled.load_library`.

Covers float32 on the CPU with stride 1, dilation 1, one group, zero padding and odd
kernels; the layer uses it where it covers the call and pays, and the other exact paths
otherwise. ``PUSHPULL_NATIVE=0`` (or :class:`.config.set_native`) turns it off. The kernels read
raw memory, so they are only ever handed eager tensors (:mod:`.eager`): never fake, meta,
functional or wrapped ones, nor anything under a dispatch mode.
"""

from __future__ import annotations

import ctypes
import functools
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from .._compiled import l2_cache_bytes, load_library
from ._workspace import scratch
from .config import (BLAS_FORWARD_MIN_CHANNELS, BLAS_FORWARD_MIN_IMAGE_BYTES, BLAS_MIN_CHANNELS, MAPS_CHUNK_BYTES,
                     native_enabled)
from .eager import eager_call, is_eager_tensor
from .reference import combine
from .resize import interpolation_matrix, resize_kernel

# the shared-product kernels, the basis path's and what they share, built into one library
SOURCES = tuple(Path(__file__).with_name(f) for f in ("_native.c", "_basis.c", "_kernels.h"))
G = 9  # kernel taps per register block of the kernels' products (``G`` in _kernels.h)
MAX_TAPS = 1024  # filter taps one kernel call may combine (``MAX_TAPS`` in _kernels.h)


def _flags() -> list[str]:
    """Optimise for this CPU, contract multiply-adds into FMAs, parallelise with OpenMP."""
    flags = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-std=gnu11", "-shared", "-fPIC"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags.append("-mprefer-vector-width=512")  # use AVX-512 where the CPU has it (x86 compilers only)
    return flags


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; None when that is not possible."""
    lib = load_library(SOURCES, _flags(), "native")
    if lib is None:
        return None
    p, i64p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64)
    lib.pp_forward.argtypes = [i64p, p, p, p, p, p, p, ctypes.c_int, p, p, p, ctypes.c_int]
    lib.pp_forward_maps.argtypes = [i64p, ctypes.c_int64, ctypes.c_int64, p, p, p, p, p, ctypes.c_int, p, p, p,
                                    ctypes.c_int]
    lib.pp_backward.argtypes = [i64p, p, p, p, p, p, p, p, p, ctypes.c_int, p, p, p, p, ctypes.c_int]
    lib.pp_backward_maps.argtypes = [i64p, ctypes.c_int64, ctypes.c_int64, p, p, p, p, p, p, ctypes.c_int, p, p, p,
                                     ctypes.c_int]
    lib.pp_basis_forward.argtypes = lib.pp_basis_backward.argtypes = [i64p, p, p, p, p, ctypes.c_int]
    lib.pp_planes_infer.argtypes = [i64p, i64p, i64p, p, p, p, p, p, p, ctypes.c_int, p, ctypes.c_int]
    lib.pp_stacked_build.argtypes = [i64p, i64p, p, p, p, p, p, ctypes.c_int]
    lib.pp_stacked_rectify.argtypes = [i64p, p, p, p, ctypes.c_int, p, p, p, ctypes.c_int]
    lib.pp_stacked_rectify_backward.argtypes = [i64p, p, p, p, ctypes.c_int, p, p, p, p, p, ctypes.c_int]
    for kernel in (lib.pp_forward, lib.pp_forward_maps, lib.pp_backward, lib.pp_backward_maps, lib.pp_basis_forward,
                   lib.pp_basis_backward, lib.pp_planes_infer, lib.pp_stacked_build, lib.pp_stacked_rectify,
                   lib.pp_stacked_rectify_backward, lib.pp_last_team):
        kernel.restype = ctypes.c_int
    return lib


def available() -> bool:
    """Whether the native kernels are turned on and could be built and loaded on this machine."""
    return native_enabled() and _library() is not None


def last_team() -> int:
    """How many threads the kernels' last call ran with (each call uses ``torch.get_num_threads()``)."""
    return _library().pp_last_team()


def unsupported(x: Tensor, weight: Tensor, pull_size: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int], groups: int, padding_mode: str, push_pads: tuple[int, int, int, int],
                pull_pads: tuple[int, int, int, int], operands: tuple = ()) -> str | None:
    """Why the native path cannot compute this call, or None when it can.

    ``operands`` are the call's other arguments (bias, alpha, packed weight); its tensors must be
    eager ones too, since the kernels read their memory.
    """
    kh, kw = weight.shape[-2:]
    checks = [
        (x.device.type == "cpu", f"it runs on the CPU (input on {x.device})"),
        (eager_call(x, weight, *operands),
         "it reads plain tensors' memory (not fake, meta, functional or subclassed tensors, nor under a "
         "dispatch mode such as FLOP counting)"),
        (x.dtype == weight.dtype == torch.float32, f"it computes in float32 (got {x.dtype} / {weight.dtype})"),
        (stride == (1, 1) and dilation == (1, 1), "it supports stride 1 and dilation 1 only"),
        (groups == 1, "it supports groups=1 only"),
        (padding_mode == "zeros", "it supports padding_mode='zeros' only"),
        (min(push_pads) >= 0 and kh <= pull_size[0] and kw <= pull_size[1] and push_pads[0] == push_pads[1]
         and push_pads[2] == push_pads[3] and pull_pads[0] == pull_pads[1] and pull_pads[2] == pull_pads[3],
         "it needs symmetric paddings (odd kernels) and a pull at least as large as the push"),
        (max(kh * kw, kw * pull_size[1] + 1, kh * pull_size[0]) <= MAX_TAPS, "the kernel is too large"),
        (native_enabled(), "it is turned off (PUSHPULL_NATIVE=0, or pushpull.layers.config.set_native)"),
        (available(), "its kernels could not be built here (a C compiler with OpenMP is needed)"),
    ]
    return next((reason for ok, reason in checks if not ok), None)


def _check(kernel):
    """``kernel`` raising MemoryError when it reports that its scratch memory could not be allocated."""
    def call(*args) -> None:
        if kernel(*args):
            raise MemoryError(f"pushpull native kernel {kernel.__name__}: out of memory for its scratch buffers")
    return call


def _ptr(t: Tensor | None) -> int | None:
    """The address the kernels read ``t`` at; refuses what has no real memory instead of crashing."""
    if t is None:
        return None
    if not is_eager_tensor(t) or not t.is_contiguous():
        raise RuntimeError(f"pushpull native kernel handed a {type(t).__name__} on {t.device} that is not a "
                           f"contiguous eager tensor; this is a bug in the layer's dispatch")
    return t.data_ptr()


def packed_weight(weight: Tensor) -> Tensor:
    """``k`` as the kernels read it: (Cout, groups, Cin, G), the Kh·Kw taps zero-padded to groups·G."""
    cout, cin, kh, kw = weight.shape
    groups = -(-kh * kw // G)
    taps = weight.detach().permute(0, 2, 3, 1).reshape(cout, kh * kw, cin)
    taps = torch.nn.functional.pad(taps, (0, 0, 0, groups * G - kh * kw))
    return taps.view(cout, groups, G, cin).transpose(2, 3).contiguous()


def output_blocks(weight: Tensor, groups: int) -> Tensor:
    """``k`` as ``pp_planes_infer`` reads it: (groups, blocks, C_in/groups·K_h·K_w, G), each group's
    (C_out/groups, C_in/groups·K_h·K_w) matrix transposed, its outputs zero-padded to blocks·G."""
    cout = weight.shape[0]
    w = weight.detach().reshape(groups, cout // groups, -1)
    blocks = -(-(cout // groups) // G)
    w = torch.nn.functional.pad(w, (0, 0, 0, blocks * G - cout // groups))
    return w.view(groups, blocks, G, -1).transpose(2, 3).contiguous()


def _geometry(x: Tensor, weight: Tensor, pull_size: tuple[int, int], pads: tuple[int, int],
              pull_pads: tuple[int, int]) -> tuple[Tensor, int, int]:
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    (ph, pw), (pt, pl), (qt, ql) = pull_size, pads, pull_pads
    ho, wo = h + 2 * pt - kh + 1, w + 2 * pl - kw + 1
    geometry = torch.tensor([n, cout, kh, kw, h, w, ph, pw, ho, wo, pt, pl, qt, ql, cin], dtype=torch.int64)
    return geometry, ho, wo


def _resize_matrices(weight: Tensor, pull_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``A_h`` (p_h x K_h) and ``A_w`` (p_w x K_w), contiguous, as the kernels read them."""
    return (interpolation_matrix(weight.shape[-2], pull_size[0], weight.dtype, weight.device).contiguous(),
            interpolation_matrix(weight.shape[-1], pull_size[1], weight.dtype, weight.device).contiguous())


def _int64_ptr(t: Tensor):
    return ctypes.cast(_ptr(t), ctypes.POINTER(ctypes.c_int64))


class NativePushPull(torch.autograd.Function):
    """``ReLU(x ⋆ k + b) - alpha * ReLU(-(x ⋆ k̂ + b))`` (or both maps) from one shared product.

    ``x`` must be contiguous (NCHW); ``pads`` / ``pull_pads`` are the symmetric (top, left) zero
    paddings of the push and pull convolutions; ``grad_enabled`` is the caller's grad mode
    (``forward`` runs without it), which tells whether a backward can follow.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, packed: Tensor, bias: Tensor | None, alpha: Union[float, Tensor],
                pull_size: tuple[int, int], pads: tuple[int, int], pull_pads: tuple[int, int],
                dual_output: bool, grad_enabled: bool) -> Tensor:
        n, cout = x.shape[0], weight.shape[0]
        geometry, ho, wo = _geometry(x, weight, pull_size, pads, pull_pads)
        a_h, a_w = _resize_matrices(weight, pull_size)
        alphas = (alpha.detach().reshape(-1).expand(cout) if isinstance(alpha, Tensor)
                  else torch.full((cout,), float(alpha))).contiguous()
        bias_c = None if bias is None else bias.detach().contiguous()
        out = x.new_empty(n, cout * (2 if dual_output else 1), ho, wo)
        keep = grad_enabled and any(ctx.needs_input_grad)  # the rectified maps, for a backward
        push, pull = (x.new_empty(n, cout, ho, wo), x.new_empty(n, cout, ho, wo)) if keep else (None, None)
        rest = (_ptr(a_h), _ptr(a_w), _ptr(bias_c), _ptr(alphas), int(dual_output), _ptr(out), _ptr(push),
                _ptr(pull), torch.get_num_threads())
        if _products_by_blas(x):
            _blas_forward(geometry, x, weight, rest)
        else:  # the products in the kernel, plane by plane
            _check(_library().pp_forward)(_int64_ptr(geometry), _ptr(x), _ptr(packed), *rest)
        ctx.geometry = (pull_size, pads, pull_pads, dual_output)
        ctx.alpha_is_tensor = isinstance(alpha, Tensor)
        ctx.float_alpha = None if ctx.alpha_is_tensor else alpha
        ctx.save_for_backward(x, weight, packed, bias, alphas, push, pull, alpha if ctx.alpha_is_tensor else None)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph: differentiate the plain definition instead
            return _differentiable_backward(ctx, grad)
        x, weight, packed, bias, alphas, push, pull, alpha = ctx.saved_tensors
        pull_size, pads, pull_pads, dual_output = ctx.geometry
        grad = grad.contiguous()
        n, cin, _, _ = x.shape
        cout, _, kh, kw = weight.shape
        geometry, _, _ = _geometry(x, weight, pull_size, pads, pull_pads)
        a_h, a_w = _resize_matrices(weight, pull_size)
        need_x, need_w, _, need_b, need_alpha = ctx.needs_input_grad[:5]
        need_alpha = need_alpha and ctx.alpha_is_tensor and not dual_output
        threads = torch.get_num_threads()
        dx = x.new_empty(x.shape) if need_x else None
        sums_b = x.new_empty(n, cout) if need_b and bias is not None else None
        sums_a = x.new_empty(n, cout) if need_alpha else None
        rectified = (_ptr(grad), _ptr(push), _ptr(pull), _ptr(a_h), _ptr(a_w), _ptr(alphas), int(dual_output))
        if cin >= BLAS_MIN_CHANNELS:
            dk = _blas_backward(geometry, x, weight, rectified, dx, need_w, sums_b, sums_a, threads)
        else:  # the products' adjoints in the kernel, plane by plane
            groups = packed.shape[1]
            dk = x.new_zeros(threads, cout, groups, cin, G) if need_w else None
            _check(_library().pp_backward)(_int64_ptr(geometry), _ptr(x), _ptr(packed), *rectified, _ptr(dx),
                                           _ptr(dk), _ptr(sums_b), _ptr(sums_a), threads)
            if dk is not None:  # per-thread sums in the packed layout: (Cout, taps, Cin)
                dk = dk.sum(0).transpose(2, 3).reshape(cout, groups * G, cin)[:, :kh * kw]
        # (Cout, taps, Cin) back to (Cout, Cin, Kh, Kw)
        dw = None if dk is None else dk.reshape(cout, kh, kw, cin).permute(0, 3, 1, 2).contiguous()
        db = sums_b.sum(0) if sums_b is not None else None
        d_alpha = sums_a.sum(0).view(alpha.shape) if sums_a is not None else None
        return dx, dw, None, db, d_alpha, None, None, None, None, None  # one per forward input


def _products_by_blas(x: Tensor) -> bool:
    """Whether the forward takes its products from BLAS: for wide inputs whose images do not stay in L2
    (``config.BLAS_FORWARD_MIN_IMAGE_BYTES``: by default half of it) while the kernel streams them once per
    output channel."""
    image_bytes = x.shape[1:].numel() * x.element_size()  # from the shape: an empty batch has no x[0]
    min_bytes = l2_cache_bytes() // 2 if BLAS_FORWARD_MIN_IMAGE_BYTES is None else BLAS_FORWARD_MIN_IMAGE_BYTES
    return x.shape[1] >= BLAS_FORWARD_MIN_CHANNELS and image_bytes > min_bytes


def _blas_forward(geometry: Tensor, x: Tensor, weight: Tensor, rest: tuple) -> None:
    """The forward for wide inputs: the products ``Y = k x`` (cout·taps rows of h·w) as BLAS products,
    a few images at a time (``MAPS_CHUNK_BYTES``), which the kernels then filter and rectify. A plane
    at a time, the kernel's products stream the whole input image once per output channel, which
    falls out of a small L2 cache (a 64-channel image at 40x40 is 400 KB)."""
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    rows, hw = cout * kh * kw, h * w
    k_rows = weight.detach().permute(0, 2, 3, 1).reshape(rows, cin)
    maps = _check(_library().pp_forward_maps)
    x_cols = x.view(n, cin, hw)
    for n0, n1, products in _map_chunks(x, rows, hw):
        torch.matmul(k_rows, x_cols[n0:n1], out=products)
        maps(_int64_ptr(geometry), n0, n1, _ptr(products), *rest)


def _map_chunks(x: Tensor, rows: int, hw: int) -> Iterator[tuple[int, int, Tensor]]:
    """``(n0, n1, maps)``: the batch of ``x`` a few images at a time (``MAPS_CHUNK_BYTES``), and a
    (n1 - n0, rows, hw) view of this thread's scratch memory for their maps."""
    n = x.shape[0]
    chunk = max(1, min(n, MAPS_CHUNK_BYTES // (4 * rows * hw)))
    buffer = scratch(chunk * rows * hw, x.dtype, x.device)
    for n0 in range(0, n, chunk):
        n1 = min(n, n0 + chunk)
        yield n0, n1, buffer[:(n1 - n0) * rows * hw].view(n1 - n0, rows, hw)


def _blas_backward(geometry: Tensor, x: Tensor, weight: Tensor, rectified: tuple, dx: Tensor | None, need_w: bool,
                   sums_b: Tensor | None, sums_a: Tensor | None, threads: int) -> Tensor | None:
    """The backward for wide inputs: the kernels make the maps' gradients ``gy`` (cout·taps rows of
    h·w) a few images at a time (``MAPS_CHUNK_BYTES``), and the input and weight gradients are BLAS
    products with ``k`` as a (cout·taps, cin) matrix: ``dx = kᵀ gy``, ``dk = gy xᵀ``. Fills ``dx``
    and the sums; returns ``dk`` as (cout, taps, cin), or None."""
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    rows, hw = cout * kh * kw, h * w
    k_cols = weight.detach().permute(1, 0, 2, 3).reshape(cin, rows) if dx is not None else None
    dk = x.new_zeros(rows, cin) if need_w else None
    maps = _check(_library().pp_backward_maps)
    x_cols = x.view(n, cin, hw)
    for n0, n1, g in _map_chunks(x, rows, hw):
        maps(_int64_ptr(geometry), n0, n1, *rectified, _ptr(g), _ptr(sums_b), _ptr(sums_a), threads)
        if dx is not None:
            torch.matmul(k_cols, g, out=dx[n0:n1].view(n1 - n0, cin, hw))
        if dk is not None:
            dk.addbmm_(g, x_cols[n0:n1].transpose(1, 2))
    return None if dk is None else dk.view(cout, kh * kw, cin)


def basis_forward(geometry: tuple[int, ...], x: Tensor, a_h: Tensor, a_w: Tensor, out: Tensor) -> None:
    """``out`` = the basis filtering of ``x`` (see :mod:`._basis`; ``geometry`` as ``pp_basis_forward`` reads it)."""
    sizes = torch.tensor(geometry, dtype=torch.int64)  # kept alive across the call
    _check(_library().pp_basis_forward)(_int64_ptr(sizes), _ptr(x), _ptr(a_h), _ptr(a_w), _ptr(out),
                                        torch.get_num_threads())


def basis_backward(geometry: tuple[int, ...], grad: Tensor, a_h: Tensor, a_w: Tensor, gx: Tensor) -> None:
    """``gx`` = the adjoint of the basis filtering applied to ``grad``."""
    sizes = torch.tensor(geometry, dtype=torch.int64)
    _check(_library().pp_basis_backward)(_int64_ptr(sizes), _ptr(grad), _ptr(a_h), _ptr(a_w), _ptr(gx),
                                         torch.get_num_threads())


def planes_infer(sizes: tuple[int, int, int, int], push_geometry: tuple[int, ...], pull_geometry: tuple[int, ...],
                 x: Tensor, weight: Tensor, matrices: tuple[Tensor, Tensor], bias: Tensor | None,
                 alphas: Tensor, dual_output: bool, out: Tensor) -> None:
    """``out`` = the layer's output by ``pp_planes_infer`` (see :mod:`._basis`): ``sizes`` (n, C_in, C_out,
    groups), the push's and the pull's filtering geometries, the pull's ``matrices`` (A_h, A_w)."""
    tables = [torch.tensor(t, dtype=torch.int64) for t in (sizes, push_geometry, pull_geometry)]  # kept alive
    _check(_library().pp_planes_infer)(*(_int64_ptr(t) for t in tables), _ptr(x), _ptr(weight),
                                       *(_ptr(m) for m in matrices), _ptr(bias), _ptr(alphas), int(dual_output),
                                       _ptr(out), torch.get_num_threads())


def stacked_build(push_geometry: tuple[int, ...], pull_geometry: tuple[int, ...], x: Tensor,
                  matrices: tuple[Tensor, Tensor], push: Tensor | None, pull: Tensor | None) -> None:
    """``push`` = the push's shifted copies of ``x``, ``pull`` its basis planes (None: not wanted), by
    ``pp_stacked_build`` (see :mod:`._stacked`; the geometries as ``pp_basis_forward`` reads them, the pull's
    ``matrices`` (A_h, A_w))."""
    tables = [torch.tensor(t, dtype=torch.int64) for t in (push_geometry, pull_geometry)]  # kept alive
    _check(_library().pp_stacked_build)(*(_int64_ptr(t) for t in tables), _ptr(x), *(_ptr(m) for m in matrices),
                                        _ptr(push), _ptr(pull), torch.get_num_threads())


def stacked_rectify(y: Tensor, bias: Tensor | None, alphas: Tensor, dual_output: bool, out: Tensor, mask: Tensor,
                    pull_r: Tensor | None) -> None:
    """``out``, ``mask`` (and ``pull_r``) from the stacked pre-activations ``y`` (2, n, C_out, H_out·W_out), by
    ``pp_stacked_rectify`` (see :mod:`._stacked`)."""
    sizes = torch.tensor(y.shape[1:], dtype=torch.int64)
    _check(_library().pp_stacked_rectify)(_int64_ptr(sizes), _ptr(y), _ptr(bias), _ptr(alphas), int(dual_output),
                                          _ptr(out), _ptr(mask), _ptr(pull_r), torch.get_num_threads())


def stacked_rectify_backward(grad: Tensor, mask: Tensor, alphas: Tensor, dual_output: bool, pull_r: Tensor | None,
                             g_push: Tensor, g_pull: Tensor, sums_b: Tensor | None, sums_a: Tensor | None) -> None:
    """``g_push``, ``g_pull`` (n, C_out, H_out·W_out), the pre-activations' gradients, and the per-image bias and
    alpha sums (or None), by ``pp_stacked_rectify_backward``."""
    sizes = torch.tensor(g_pull.shape, dtype=torch.int64)
    _check(_library().pp_stacked_rectify_backward)(_int64_ptr(sizes), _ptr(grad), _ptr(mask), _ptr(alphas),
                                                   int(dual_output), _ptr(pull_r), _ptr(g_push), _ptr(g_pull),
                                                   _ptr(sums_b), _ptr(sums_a), torch.get_num_threads())


def _differentiable_backward(ctx, grad: Tensor):
    """Gradients that can themselves be differentiated: autograd through the reference definition."""
    x, weight, _, bias, _, _, _, alpha = ctx.saved_tensors
    pull_size, (pt, pl), (qt, ql), dual_output = ctx.geometry
    with torch.enable_grad():
        k_hat = resize_kernel(weight, pull_size)
        push = torch.nn.functional.conv2d(x, weight, bias, padding=(pt, pl))
        pull = torch.nn.functional.conv2d(x, -k_hat, None if bias is None else -bias, padding=(qt, ql))
        out = combine(push, pull, alpha if ctx.alpha_is_tensor else ctx.float_alpha, dual_output)
        inputs = [t for t in (x, weight, bias, alpha) if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(out, inputs, grad, create_graph=True, allow_unused=True))
    dx, dw, db, d_alpha = (next(grads) if t is not None and t.requires_grad else None for t in (x, weight, bias, alpha))
    return dx, dw, None, db, d_alpha, None, None, None, None, None
