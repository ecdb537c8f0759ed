"""The fast push-pull path against the naive definition computed in float64, forward and backward."""

from __future__ import annotations

import zlib

import pytest
import torch

from layer_checks import outputs_and_grads, rel_err

from pushpull import PushPullConv2d, push_pull_conv2d, push_pull_conv2d_reference
from pushpull.layers import _basis, _native
from pushpull.layers._fast import separable_pull
from pushpull.layers.config import BASIS_MAX_CHANNELS, NATIVE_MIN_INFERENCE_CHANNELS, PLANES_MAX_CHANNELS
from pushpull.layers.resize import pull_kernel, resize_kernel, resize_kernel_adjoint


CASES = [
    # (kernel_size, stride, padding, dilation, groups, bias, input (H, W), extra kwargs)
    (3, 1, 1, 1, 1, True, (12, 12), {}),
    (3, 1, 1, 1, 1, False, (11, 13), {}),
    (3, 2, 1, 1, 1, True, (11, 12), {}),
    (3, 2, 0, 1, 2, True, (12, 11), {}),
    (3, 1, 2, 2, 1, True, (11, 11), {}),
    (3, 2, (2, 1), 2, 4, False, (13, 12), {}),
    (3, 1, "same", 2, 1, True, (10, 9), {}),
    (1, 1, 0, 1, 1, True, (9, 8), {}),
    (1, 2, 0, 1, 2, False, (9, 9), {}),
    (5, 1, 2, 1, 1, True, (12, 11), {}),
    (5, 2, (2, 1), 1, 2, True, (13, 13), {}),
    (5, 1, "same", 2, 1, False, (14, 13), {}),
    (7, 1, 3, 1, 1, True, (12, 12), {}),
    (7, 2, 3, 1, 2, False, (15, 14), {}),
    (7, 1, "valid", 1, 1, True, (9, 10), {}),
    ((3, 5), 1, (1, 2), 1, 1, True, (10, 11), {}),
    (2, 1, "same", 1, 1, True, (9, 10), {}),
    (4, 2, 1, 1, 2, True, (12, 11), {}),
    (4, 1, "same", 2, 1, False, (11, 12), {}),
    (3, 1, 1, 1, 1, True, (12, 12), {"dual_output": True}),
    (3, 2, 1, 1, 2, False, (11, 11), {"dual_output": True, "trainable_alpha": True}),
    (3, 1, 1, 1, 1, True, (12, 11), {"trainable_alpha": True}),
    (5, 2, 2, 1, 4, True, (13, 12), {"trainable_alpha": True}),
    (3, 1, 1, 1, 1, True, (10, 10), {"alpha": 0.37}),
    (3, 1, 1, 1, 1, True, (10, 10), {"scale": 1.0}),
    (3, 1, 1, 1, 1, True, (10, 10), {"scale": 1.5}),
    (3, 1, 1, 1, 1, True, (10, 10), {"scale": 2.5}),
    (5, 1, 2, 1, 1, True, (10, 10), {"scale": 0.5}),
    (3, 1, 1, 1, 1, True, (10, 11), {"padding_mode": "reflect"}),
    (5, 2, 2, 1, 2, True, (11, 10), {"padding_mode": "replicate"}),
    (3, 1, "same", 2, 1, False, (12, 12), {"padding_mode": "circular"}),
]


@pytest.mark.parametrize("impl", ["fused", "separable", "basis"])
@pytest.mark.parametrize("k,stride,padding,dilation,groups,bias,size,extra", CASES)
def test_fast_matches_float64_reference(k, stride, padding, dilation, groups, bias, size, extra, impl):
    torch.manual_seed(zlib.crc32(repr((k, stride, padding, dilation, groups, bias, size, extra)).encode()))
    fast = PushPullConv2d(4, 8, k, stride, padding, dilation, groups, bias, **extra, impl=impl)
    ref = PushPullConv2d(4, 8, k, stride, padding, dilation, groups, bias, **extra, impl="reference").double()
    ref.load_state_dict({k_: v.double() for k_, v in fast.state_dict().items()})
    x = torch.randn(3, 4, *size)
    with torch.no_grad():
        grad_out = torch.randn(ref(x.double()).shape, dtype=torch.float64)
    out, grads = outputs_and_grads(fast, x, grad_out)
    want, want_grads = outputs_and_grads(ref, x.double(), grad_out)
    assert out.dtype == torch.float32 and out.shape == want.shape
    assert rel_err(out, want) < 1e-5
    for name, g, w in zip(("input", "weight", "bias", "alpha"), grads, want_grads):
        if w is None:
            assert g is None or not g.any(), name
        else:
            assert g is not None and g.shape == w.shape, name
            assert rel_err(g, w) < 1e-5, name


@pytest.mark.parametrize("kwargs,second_order", [
    (dict(padding=1, trainable_alpha=True), True), (dict(stride=2, padding=0, dilation=2, groups=2), False),
    (dict(padding="same"), False), (dict(padding=1, dual_output=True), False),
    (dict(padding=1, padding_mode="reflect"), False)])
@pytest.mark.parametrize("impl", ["fused", "separable", "basis"])
def test_gradcheck_float64(kwargs, second_order, impl):
    torch.manual_seed(0)
    trainable = kwargs.pop("trainable_alpha", False)
    layer = PushPullConv2d(2, 2, 3, trainable_alpha=trainable, **kwargs).double()
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    params = [layer.push.weight, layer.push.bias] + ([layer.alpha] if trainable else [])

    def fn(x_, *ps):
        w, b, *a = ps
        alpha = torch.relu(a[0]) if a else layer.alpha
        return push_pull_conv2d(x_, w, b, layer.stride, layer.padding, layer.dilation, layer.groups, layer.scale,
                                alpha, layer.dual_output, layer.push.padding_mode, impl)

    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)
    if second_order:  # the backward is built from differentiable ops
        assert torch.autograd.gradgradcheck(fn, (x, *params), fast_mode=True)


def _picker(monkeypatch):
    """A function telling which path ``auto`` took for a layer and an input."""
    import pushpull.layers.pushpull as pp_module

    calls = []
    monkeypatch.setattr(pp_module, "separable_pull", lambda *a, **k: calls.append("separable") or separable_pull(*a, **k))
    native_apply = _native.NativePushPull.apply
    monkeypatch.setattr(_native.NativePushPull, "apply", lambda *a: calls.append("native") or native_apply(*a))
    basis = _basis.push_pull_basis  # its autograd node, or in inference its compiled kernel
    monkeypatch.setattr(_basis, "push_pull_basis", lambda *a: calls.append("basis") or basis(*a))

    def picked(layer, x):
        calls.clear()
        layer(x)
        return calls[0] if calls else "fused"
    return picked


def test_auto_without_native_picks_separable_for_training_and_wide_layers_fused_otherwise(monkeypatch):
    monkeypatch.setattr(_native, "available", lambda: False)
    picked = _picker(monkeypatch)
    narrow, wide = PushPullConv2d(3, 4, 3, padding=1), PushPullConv2d(32, 4, 3, padding=1)
    assert picked(narrow, torch.randn(1, 3, 8, 8)) == "separable"  # weights require grad: training
    assert picked(wide, torch.randn(1, 32, 8, 8)) == "separable"
    with torch.no_grad():
        assert picked(narrow, torch.randn(1, 3, 8, 8)) == "fused"  # narrow inference
        assert picked(wide, torch.randn(1, 32, 8, 8)) == "separable"  # wide inference
    assert picked(PushPullConv2d(3, 4, 3, padding=1, scale=1), torch.randn(1, 3, 8, 8)) == "fused"  # pull == push
    assert picked(narrow, torch.randn(1, 3, 64, 8)) == "fused"  # tall input, narrow layer: dense row filter too dear


def test_auto_picks_native_where_it_covers_the_call_and_pays(monkeypatch):
    if not _native.available():
        pytest.skip("the native kernels cannot be built here (no C compiler with OpenMP)")
    picked = _picker(monkeypatch)
    c, p = NATIVE_MIN_INFERENCE_CHANNELS, PLANES_MAX_CHANNELS
    narrow, wide = PushPullConv2d(c - 1, 4, 3, padding=1), PushPullConv2d(p + 1, 4, 3, padding=1)
    assert picked(narrow, torch.randn(1, c - 1, 8, 8)) == "native"  # training
    with torch.no_grad():
        assert picked(narrow, torch.randn(1, c - 1, 8, 8)) == "basis"  # few input channels: the basis pull
        assert picked(PushPullConv2d(p, 4, 3, padding=1), torch.randn(1, p, 8, 8)) == "basis"  # its inference kernel
        assert picked(PushPullConv2d(p, 4, 3, padding=1), torch.randn(1, p, 64, 64)) == "native"  # planes too large
        assert picked(wide, torch.randn(1, p + 1, 8, 8)) == "native"
    assert picked(PushPullConv2d(3, 4, 3, stride=2, padding=1), torch.randn(1, 3, 8, 8)) == "basis"  # strided, narrow
    b = BASIS_MAX_CHANNELS
    assert picked(PushPullConv2d(b + 1, 4, 3, stride=2, padding=1), torch.randn(1, b + 1, 8, 8)) == "separable"
    assert picked(PushPullConv2d(2 * b, 4, 3, padding=1, groups=2), torch.randn(1, 2 * b, 8, 8)) == "basis"
    assert picked(narrow.double(), torch.randn(1, c - 1, 8, 8, dtype=torch.float64)) == "separable"


def test_functional_matches_module_and_accepts_unbatched():
    torch.manual_seed(0)
    layer = PushPullConv2d(3, 5, 3, padding=1, alpha=0.8)
    x = torch.randn(3, 9, 9)
    got = push_pull_conv2d(x, layer.weight, layer.bias, padding=1, alpha=0.8)
    torch.testing.assert_close(got, layer(x))
    want = push_pull_conv2d_reference(x[None].double(), layer.weight.double(), layer.bias.double(), padding=1,
                                      alpha=0.8)[0]
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("k,pull", [(3, (7, 7)), ((3, 5), (7, 11)), (4, (9, 9)), (2, (5, 5))])
def test_matrix_resize_equals_interpolate_and_adjoint_is_transpose(k, pull):
    torch.manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    w = torch.randn(3, 2, kh, kw, dtype=torch.float64)
    torch.testing.assert_close(resize_kernel(w, pull), pull_kernel(w, 2))
    g = torch.randn(3, 2, *pull, dtype=torch.float64)
    # <A w, g> == <w, A* g>
    torch.testing.assert_close((resize_kernel(w, pull) * g).sum(), (w * resize_kernel_adjoint(g, (kh, kw))).sum())


def test_auto_keeps_native_in_inference_when_the_pull_is_no_larger(monkeypatch):
    if not _native.available():
        pytest.skip("the native kernels cannot be built here (no C compiler with OpenMP)")
    picked = _picker(monkeypatch)
    layer = PushPullConv2d(PLANES_MAX_CHANNELS, 4, 3, padding=1, scale=1.0)  # k_hat = k: no basis pull to take
    with torch.no_grad():
        assert picked(layer, torch.randn(1, PLANES_MAX_CHANNELS, 8, 8)) == "native"
