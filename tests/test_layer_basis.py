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


PLANES_CASES = [
    # (in, out, kernel, stride, padding, dilation, groups, extra): narrow layers in inference
    (3, 16, 3, 1, 1, 1, 1, {}),  # the CIFAR stem
    (3, 10, 7, 2, 3, 1, 1, {}),  # the ImageNet stem's geometry (a 15x15 pull, stride 2)
    (3, 6, 3, 2, 1, 1, 1, {"dual_output": True}),
    (3, 6, 3, 1, 2, 2, 3, {"trainable_alpha": True}),  # dilated, grouped, per-channel alpha
    (4, 5, 5, 1, 0, 1, 1, {"alpha": 0.3}),
    (2, 4, (3, 5), (2, 1), (1, 2), 1, 1, {"bias": False}),
    (2, 3, 4, 1, "same", 1, 1, {}),  # even kernel: asymmetric padding
    (3, 20, 3, 1, 1, 1, 1, {"scale": 3.0}),  # outputs beyond two blocks of nine, a 9x9 pull
    (8, 6, 3, 1, 1, 1, 1, {}),  # as wide as auto takes it there (config.PLANES_MAX_CHANNELS)
]


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cin,cout,kernel,stride,padding,dilation,groups,extra", PLANES_CASES)
def test_inference_of_narrow_layers_by_the_planes_kernel_matches_float64(monkeypatch, cin, cout, kernel, stride,
                                                                          padding, dilation, groups, extra, threads):
    calls = []
    planes = _native.planes_infer
    monkeypatch.setattr(_native, "planes_infer", lambda *a: calls.append(_native.last_team()) or planes(*a))
    torch.manual_seed(0)
    fast = PushPullConv2d(cin, cout, kernel, stride, padding, dilation, groups, **extra).eval()
    ref = PushPullConv2d(cin, cout, kernel, stride, padding, dilation, groups, **extra, impl="reference").double()
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    x = torch.randn(3, cin, 13, 14)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            got = fast(x)
            team = _native.last_team()
    finally:
        torch.set_num_threads(saved)
    assert calls and team == threads  # the compiled planes kernel ran, with torch's thread count
    with torch.no_grad():
        want = ref(x.double())
    assert got.shape == want.shape and rel_err(got, want) < 1e-5
    with torch.no_grad():  # a channels-last input: the same values, in its memory format
        got = fast(x.to(memory_format=torch.channels_last))
    assert got.is_contiguous(memory_format=torch.channels_last) and rel_err(got, want) < 1e-5
    calls.clear()
    fast(x)  # recording gradients: the training path, not the inference kernel
    assert not calls


@needs_native
def test_planes_kernel_leaves_what_it_does_not_cover_to_the_basis_node(monkeypatch):
    calls = []
    planes = _native.planes_infer
    monkeypatch.setattr(_native, "planes_infer", lambda *a: calls.append(1) or planes(*a))
    torch.manual_seed(0)
    for layer, x in [(PushPullConv2d(3, 4, 3, 2, 1, padding_mode="reflect"), torch.randn(1, 3, 9, 9)),
                     (PushPullConv2d(3, 4, 3, 2, 1), torch.randn(1, 3, 600, 600))]:  # planes beyond the cache
        ref = PushPullConv2d(3, 4, 3, 2, 1, padding_mode=layer.push.padding_mode, impl="reference").double()
        ref.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
        with torch.no_grad():
            assert rel_err(layer(x), ref(x.double())) < 1e-5
    assert not calls
