"""The basis path in training, on stacked planes: both responses from one product with the weights.

The push response is the push weights applied to the input's shifted copies (its K_h·K_w taps with
stride, dilation and zero padding), the pull response the same weights applied to the basis-filtered
planes (:mod:`._basis`). With both sets of planes stacked, one batched product gives both
pre-activations, and one compiled pass rectifies and combines them and keeps a byte of masks per
output value for the backward. There, one compiled pass gives both pre-activations' gradients; the
push's share goes through one convolution backward (oneDNN's beats products with rebuilt copies),
the pull's through a product with the basis planes (kept from the forward where they fit the lease
pool, else rebuilt) and, for the input gradient, the filtering's adjoint. Images go through in
chunks (about one a thread) whose planes live in per-thread scratch memory, and the output, masks
and kept planes are leased (:mod:`._workspace`): on the ImageNet stem (3 → 64, 7x7 stride 2, a
15x15 pull) fresh tens of megabytes per call had cost as much as the arithmetic.
Float32 eager CPU tensors, one group, zero padding that both responses can fold in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _native
from ._workspace import leasable, lease, scratch
from .config import STACKED_CHUNK_BYTES
from .resize import interpolation_matrix

Geometry = tuple[int, ...]  # as _basis.Geometry: (planes, h, w, kh, kw, ph, pw, ho, wo, top, left, sh, sw, dh, dw)


class _Plan:
    """The sizes of one call, its chunks of images and their views of the scratch buffer."""

    def __init__(self, x: Tensor, weight: Tensor, push_geometry: Geometry, pull_geometry: Geometry,
                 chunk: int | None = None) -> None:
        self.n, self.cin, self.h, self.w = x.shape
        self.cout = weight.shape[0]
        self.taps, self.hwo = push_geometry[3] * push_geometry[4], pull_geometry[7] * pull_geometry[8]
        self.nk = self.cin * self.taps
        self.geometries = (push_geometry, pull_geometry)
        kh, kw, ph, pw = pull_geometry[3:7]
        self.pull_matrices = (interpolation_matrix(kh, ph, x.dtype, x.device),
                              interpolation_matrix(kw, pw, x.dtype, x.device))
        self.sizes = (2 * self.nk * self.hwo, 2 * self.cout * self.hwo)
        per_image = x.element_size() * sum(self.sizes)  # about one image per thread (measured best on 1-2 cores)
        self.chunk = chunk or max(1, min(self.n, torch.get_num_threads() * STACKED_CHUNK_BYTES // per_image))
        self.buffer = scratch(self.chunk * sum(self.sizes), x.dtype, x.device)

    def chunks(self):
        for start in range(0, self.n, self.chunk):
            yield start, min(self.chunk, self.n - start)

    def views(self, c: int) -> tuple[Tensor, Tensor]:
        """Scratch for ``c`` images: planes (2c, nk, hwo) and products (2c, C_out, hwo), the push's then the pull's."""
        planes, products = self.buffer[:c * sum(self.sizes)].split([c * size for size in self.sizes])
        return planes.view(2 * c, self.nk, self.hwo), products.view(2 * c, self.cout, self.hwo)

    def build(self, x: Tensor, push: Tensor | None, pull: Tensor | None) -> None:
        """The push's shifted copies of the images ``x`` into ``push``, their basis planes into ``pull`` (None: not
        wanted)."""
        push_geometry, pull_geometry = ((x.shape[0] * self.cin, *geometry[1:]) for geometry in self.geometries)
        _native.stacked_build(push_geometry, pull_geometry, x, self.pull_matrices, push, pull)


def forward(x: Tensor, weight: Tensor, bias: Tensor | None, alphas: Tensor, dual_output: bool,
            push_geometry: Geometry, pull_geometry: Geometry, keep_pull: bool,
            keep_planes: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, int]:
    """The layer's output, the masks of the active push and pull values, (``keep_pull``) the rectified pull,
    (``keep_planes``, where they fit the lease pool) the batch's basis planes, and the chunk size used."""
    x = x.contiguous()
    plan = _Plan(x, weight, push_geometry, pull_geometry)
    ho, wo = pull_geometry[7:9]
    out = lease((plan.n, plan.cout * (2 if dual_output else 1), ho, wo), x.dtype, x.device)
    mask = lease((plan.n, plan.cout, ho, wo), torch.uint8, x.device)
    pull_r = x.new_empty(plan.n, plan.cout, ho, wo) if keep_pull else None
    keep_planes = keep_planes and leasable(plan.n * plan.nk * plan.hwo, x.dtype)  # else rebuilt in the backward
    kept = lease((plan.n, plan.nk, plan.hwo), x.dtype, x.device) if keep_planes else None
    w = weight.detach().reshape(plan.cout, plan.nk)
    bias = None if bias is None else bias.detach().contiguous()
    for start, c in plan.chunks():
        planes, products = plan.views(c)
        if kept is None:
            plan.build(x[start:start + c], planes[:c], planes[c:])
            torch.bmm(w.expand(2 * c, -1, -1), planes, out=products)
        else:
            plan.build(x[start:start + c], planes[:c], kept[start:start + c])
            for source, target in ((planes[:c], products[:c]), (kept[start:start + c], products[c:])):
                torch.bmm(w.expand(c, -1, -1), source, out=target)
        _native.stacked_rectify(products.view(2, c, plan.cout, plan.hwo), bias, alphas, dual_output,
                                out[start:start + c], mask[start:start + c],
                                None if pull_r is None else pull_r[start:start + c])
    return out, mask, pull_r, kept, plan.chunk


def backward(grad: Tensor, x: Tensor, weight: Tensor, mask: Tensor, pull_r: Tensor | None, alphas: Tensor,
             dual_output: bool, push_geometry: Geometry, pull_geometry: Geometry, kept: Tensor | None, chunk: int,
             needs: tuple[bool, bool, bool, bool]) -> tuple[Tensor | None, ...]:
    """The gradients for (x, weight, bias, alpha) that ``needs`` asks for (alpha's as per-image, per-channel
    sums), from the forward's masks and, where it kept them, its basis planes (``kept``).

    The push's share is one convolution backward of its masked gradient (cheaper than the products with its
    shifted copies); the pull's, products with the basis planes and the filtering's adjoint, chunk by chunk."""
    need_x, need_w, need_b, need_alpha = needs
    grad, x = grad.contiguous(), x.contiguous()
    plan = _Plan(x, weight, push_geometry, pull_geometry, chunk)
    w = weight.detach().reshape(plan.cout, plan.nk)
    g_push = lease((plan.n, plan.cout, plan.hwo), x.dtype, x.device)
    dx = x.new_empty(x.shape) if need_x else None
    dw_t = x.new_zeros(plan.nk, plan.cout) if need_w else None  # transposed: the faster product
    sums_b = x.new_empty(plan.n, plan.cout) if need_b else None
    sums_a = x.new_empty(plan.n, plan.cout) if need_alpha else None
    for start, c in plan.chunks():
        planes, products = plan.views(c)
        part = slice(start, start + c)
        g_pull, pull_planes = products[c:], planes[c:]
        _native.stacked_rectify_backward(grad[part], mask[part], alphas, dual_output,
                                         None if pull_r is None or not need_alpha else pull_r[part],
                                         g_push[part], g_pull, None if sums_b is None else sums_b[part],
                                         None if sums_a is None else sums_a[part])
        if need_w:
            if kept is None:
                plan.build(x[part], None, pull_planes)
            dw_t += torch.bmm(pull_planes if kept is None else kept[part], g_pull.transpose(1, 2)).sum(0)
        if need_x:  # the pull's input gradient: the planes' gradient through the filtering's adjoint
            torch.bmm(w.t().expand(c, -1, -1), g_pull, out=pull_planes)
            _native.basis_backward((c * plan.cin, *pull_geometry[1:]), pull_planes, *plan.pull_matrices, dx[part])
    stride, padding, dilation = push_geometry[11:13], push_geometry[9:11], push_geometry[13:15]  # symmetric padding
    dx_push, dw_push, _ = torch.ops.aten.convolution_backward(
        g_push.view(plan.n, plan.cout, *pull_geometry[7:9]), x, weight.detach(), None, stride, padding, dilation,
        False, [0, 0], 1, [need_x, need_w, False])
    if need_x:
        dx += dx_push
    dw = None if dw_t is None else dw_t.t().reshape(weight.shape) + dw_push
    return dx, dw, None if sums_b is None else sums_b.sum(0), sums_a
