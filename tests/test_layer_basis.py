"""The basis path (pull from basis-filtered inputs): its compiled filtering, adjoint and dispatch."""

from __future__ import annotations

import pytest
import torch

from layer_checks import outputs_and_grads, rel_err, second_order_grads

from pushpull import PushPullConv2d
from pushpull.layers import _basis, _native

needs_native = pytest.mark.skipif(not _native.available(),
                                  reason="the native kernels cannot be built here (no C compiler with OpenMP)")

GEOMETRIES = [
    # (kernel, pull, input (H, W), top/left padding, stride, dilation)
    ((7, 7), (15, 15), (23, 22), (7, 7), (2, 2), (1, 1)),  # the ImageNet stem's pull
    ((3, 3), (7, 7), (12, 13), (3, 3), (1, 1), (1, 1)),
    ((3, 3), (7, 7), (11, 12), (2, 4), (2, 1), (2, 2)),
    ((3, 5), (7, 11), (13, 12), (0, 5), (3, 2), (1, 2)),
    ((4, 2), (9, 5), (12, 11), (4, 1), (1, 3), (1, 1)),
    ((5, 5), (3, 3), (9, 10), (0, 0), (1, 1), (1, 1)),  # scale < 1: a pull smaller than the push
]


def _geometry(x, kernel, pull, top_left, stride, dilation):
    h, w = x.shape[-2:]
    out = tuple((size + 2 * pad - d * (p - 1) - 1) // s + 1
                for size, pad, p, s, d in zip((h, w), top_left, pull, stride, dilation))
    return _basis.filter_geometry(x, kernel, pull, top_left, out, stride, dilation)


@needs_native
@pytest.mark.parametrize("kernel,pull,size,top_left,stride,dilation", GEOMETRIES)
def test_native_filtering_and_its_adjoint_match_the_operator_form(kernel, pull, size, top_left, stride, dilation):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    geometry = _geometry(x, kernel, pull, top_left, stride, dilation)
    want = _basis._operator_filter(x, geometry)
    got = _basis._NativeFilter.apply(x.float(), geometry)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-6
    grad = torch.randn(want.shape, dtype=torch.float64)  # the adjoint: <A x, g> = <x, Aᵀ g>
    adjoint = _basis._NativeFilterAdjoint.apply(grad.float(), geometry)
    assert abs((want * grad).sum() - (x * adjoint.double()).sum()) < 1e-5 * want.abs().sum()


@needs_native
@pytest.mark.parametrize("kwargs", [dict(kernel_size=7, stride=2, padding=3), dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=3, padding=2, dilation=2, groups=3)])
def test_auto_uses_the_basis_path_for_narrow_strided_layers_exactly(monkeypatch, kwargs):
    calls = []
    apply = _basis.BasisPushPull.apply
    monkeypatch.setattr(_basis.BasisPushPull, "apply", lambda *a: calls.append(1) or apply(*a))
    torch.manual_seed(0)
    fast = PushPullConv2d(3, 6, **kwargs, trainable_alpha=True)
    ref = PushPullConv2d(3, 6, **kwargs, trainable_alpha=True, impl="reference").double()
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    x = torch.randn(2, 3, 29, 30)
    with torch.no_grad():
        grad = torch.randn(ref(x.double()).shape, dtype=torch.float64)
    out, grads = outputs_and_grads(fast, x, grad)
    assert calls  # the native basis filtering, not the operator form
    want, want_grads = outputs_and_grads(ref, x.double(), grad)
    assert rel_err(out, want) < 1e-5
    for got, expected in zip(grads, want_grads):
        assert rel_err(got, expected) < 1e-5


@needs_native
def test_basis_second_order_gradients_through_the_native_filtering():
    torch.manual_seed(0)
    fast = PushPullConv2d(3, 4, 5, stride=2, padding=2, trainable_alpha=True, impl="basis")
    ref = PushPullConv2d(3, 4, 5, stride=2, padding=2, trainable_alpha=True, impl="reference").double()
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    x = torch.randn(2, 3, 11, 12)

    for got, want in zip(second_order_grads(fast, x), second_order_grads(ref, x.double())):
        assert rel_err(got, want) < 1e-5
