"""The basis path's training on stacked planes (``_stacked``) and the memory it reuses (``_workspace``)."""

from __future__ import annotations

import pytest
import torch

from layer_checks import rel_err

from pushpull import PushPullConv2d
from pushpull.layers import _native, _stacked, _workspace

needs_native = pytest.mark.skipif(not _native.available(),
                                  reason="the native kernels cannot be built here (no C compiler with OpenMP)")

CASES = [
    # (in, out, kernel, stride, padding, extra)
    (3, 10, 7, 2, 3, {}),  # the ImageNet stem: 7x7 stride 2, a 15x15 pull
    (3, 6, 7, 2, 3, {"trainable_alpha": True, "bias": False}),
    (3, 5, 3, 2, 1, {"dual_output": True}),
    (2, 4, (3, 5), (2, 1), (1, 2), {"alpha": 0.3, "dilation": (1, 2)}),
]


def _pair(cin, cout, kernel, stride, padding, extra):
    torch.manual_seed(0)
    fast = PushPullConv2d(cin, cout, kernel, stride, padding, **extra)
    ref = PushPullConv2d(cin, cout, kernel, stride, padding, **extra, impl="reference").double()
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    return fast, ref


def _grads(layer, x, grad, input_grad):
    x = x.detach().requires_grad_(input_grad)
    out = layer(x)
    params = [p for p in (layer.push.weight, layer.push.bias, layer.alpha) if isinstance(p, torch.Tensor)]
    return out, torch.autograd.grad(out, ([x] if input_grad else []) + params, grad.to(out.dtype))


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("keep", [True, False])  # the planes kept for the backward, or rebuilt there
@pytest.mark.parametrize("input_grad", [False, True])
@pytest.mark.parametrize("cin,cout,kernel,stride,padding,extra", CASES)
def test_training_on_stacked_planes_matches_float64(monkeypatch, cin, cout, kernel, stride, padding, extra,
                                                    input_grad, keep, threads):
    calls = []
    build = _native.stacked_build
    monkeypatch.setattr(_native, "stacked_build", lambda *a: calls.append(1) or build(*a))
    monkeypatch.setattr(_stacked, "STACKED_CHUNK_BYTES", 1)  # one image a chunk: several chunks
    if not keep:
        monkeypatch.setattr(_workspace, "LEASE_MAX_BYTES", 0)
    fast, ref = _pair(cin, cout, kernel, stride, padding, extra)
    x = torch.randn(3, cin, 23, 22)
    with torch.no_grad():
        grad = torch.randn(ref(x.double()).shape, dtype=torch.float64)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, grads = _grads(fast, x, grad, input_grad)
        team = _native.last_team()  # the backward's last kernel ran with torch's thread count of the moment
    finally:
        torch.set_num_threads(saved)
    assert team == threads
    assert len(calls) == (3 if keep else 6)  # per chunk, in the backward again unless kept
    want, want_grads = _grads(ref, x.double(), grad, input_grad)
    assert out.shape == want.shape and rel_err(out, want) < 1e-5
    for got, expected in zip(grads, want_grads):
        assert rel_err(got, expected) < 1e-5


@needs_native
def test_the_stem_skips_the_input_gradient_when_the_input_needs_none(monkeypatch):
    adjoints = []
    adjoint = _native.basis_backward
    monkeypatch.setattr(_native, "basis_backward", lambda *a: adjoints.append(1) or adjoint(*a))
    fast, _ = _pair(3, 8, 7, 2, 3, {})
    x = torch.randn(2, 3, 32, 32)
    fast(x).sum().backward()
    assert not adjoints and fast.push.weight.grad is not None
    fast(x.requires_grad_()).sum().backward()
    assert adjoints and x.grad is not None


@needs_native
def test_kept_planes_survive_a_second_forward_and_retain_graph():
    fast, ref = _pair(3, 8, 7, 2, 3, {"trainable_alpha": True})
    x1, x2 = torch.randn(2, 3, 30, 30), torch.randn(2, 3, 30, 30)
    g = torch.randn(2, 8, 15, 15, dtype=torch.float64)
    params = [fast.push.weight, fast.push.bias, fast.alpha]
    out1 = fast(x1)
    out2 = fast(x2)  # the first graph's leased planes are still held: the second forward gets others
    first = torch.autograd.grad(out1, params, g.float(), retain_graph=True)
    again = torch.autograd.grad(out1, params, g.float())  # retained: the same planes, untouched meanwhile
    second = torch.autograd.grad(out2, params, g.float())
    for x, got in ((x1, first), (x1, again), (x2, second)):
        want = torch.autograd.grad(ref(x.double()), [ref.push.weight, ref.push.bias, ref.alpha], g)
        for a, b in zip(got, want):
            assert rel_err(a, b) < 1e-5


def test_lease_never_hands_out_memory_still_referenced():
    a = _workspace.lease((1000, 3), torch.float32, torch.device("cpu"))
    b = _workspace.lease((1000, 3), torch.float32, torch.device("cpu"))
    assert a.data_ptr() != b.data_ptr()  # a is still held
    pointer = a.data_ptr()
    view = a[10:]
    del a
    c = _workspace.lease((1000, 3), torch.float32, torch.device("cpu"))
    assert c.data_ptr() != pointer  # a view keeps it
    del view
    d = _workspace.lease((3000,), torch.float32, torch.device("cpu"))
    assert d.data_ptr() == pointer and d._base is None  # free again: reused, as a tensor of its own
    d.add_(1)  # outputs on leased memory may be modified in place
    assert _workspace.scratch(10, torch.float32, torch.device("cpu")).data_ptr() == \
        _workspace.scratch(5, torch.float32, torch.device("cpu")).data_ptr()
