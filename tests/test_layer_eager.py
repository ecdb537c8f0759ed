"""Fake, meta and traced tensors never reach a cache or the native kernels (issue 11's two crashes).

A tensor kept from a FakeTensorMode forward (the FLOP count) broke the next one ("Mixing fake
modes") and handed the native kernels fake memory (a segfault); kept from inference mode it
broke later training. Every layer path is run fake, FLOP-counted, then real, in a child process
so that a crash fails the test instead of killing pytest.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from pushpull import PushPullConv2d
from pushpull.layers import _fast, _native, resize
from pushpull.layers.eager import eager_cache, is_eager_tensor
from pushpull.layers.pushpull import IMPLS

FAKE_THEN_REAL = textwrap.dedent("""
    import sys, torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode
    from pushpull import PushPullConv2d
    from pushpull.models import create_model

    def rel_err(got, want):
        return ((got.double() - want).abs().max() / want.abs().max()).item()

    def run(layer, x, grad):
        x = x.detach().requires_grad_(grad)
        out = layer(x)
        if grad:
            out.square().sum().backward()
        return out

    IMPLS = sys.argv[1].split(",")
    GRAD_MODES = (False, True)
    make = lambda impl: PushPullConv2d(8, 6, 3, padding=1, trainable_alpha=True, impl=impl)
    torch.manual_seed(0)
    real = {impl: make(impl) for impl in IMPLS}
    x = torch.randn(2, 8, 12, 12)
    for impl in IMPLS:  # first every path under the tools that see shapes only
        for grad in GRAD_MODES:
            with FakeTensorMode(), torch.set_grad_enabled(grad):  # built under the mode, as a FLOP count does
                run(make(impl), torch.zeros(2, 8, 12, 12), grad)
            with FakeTensorMode(allow_non_fake_inputs=True), torch.set_grad_enabled(grad):  # real weights
                run(real[impl], torch.zeros(2, 8, 12, 12), grad)
            with FlopCounterMode(display=False), torch.set_grad_enabled(grad):
                run(real[impl], x, grad)
        real[impl].zero_grad()
    for impl in IMPLS:  # then for real, against a fresh float64 reference with the same weights
        fresh = PushPullConv2d(8, 6, 3, padding=1, trainable_alpha=True, impl="reference").double()
        fresh.load_state_dict({k: v.double() for k, v in real[impl].state_dict().items()})
        for grad in GRAD_MODES:
            with torch.set_grad_enabled(grad):
                got, want = run(real[impl], x, grad), run(fresh, x.double(), grad)
            assert rel_err(got, want) < 1e-5, (impl, grad, rel_err(got, want))
            if grad:
                for name in ("push.weight", "push.bias", "alpha"):
                    g, w = real[impl].get_parameter(name).grad, fresh.get_parameter(name).grad
                    assert rel_err(g, w) < 1e-5, (impl, name)
                real[impl].zero_grad()
        print("ok", impl)

    with FakeTensorMode(), torch.no_grad():  # issue 11: a -b1 network under fake mode, then a real one
        create_model("resnet20_b1").eval()(torch.zeros(1, 3, 32, 32))
    torch.manual_seed(1)
    model = create_model("resnet20_b1").eval()
    fresh = create_model("resnet20_b1", impl="reference").eval().double()
    fresh.load_state_dict(model.state_dict())
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(model(image), fresh(image.double())) < 1e-4
    print("ok resnet20_b1")
""")


def test_every_path_fake_then_flop_counted_then_real_matches_a_fresh_layer():
    result = subprocess.run([sys.executable, "-c", FAKE_THEN_REAL, ",".join(IMPLS)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-3000:]}"
    assert result.stdout.split("\n")[:-1] == [f"ok {impl}" for impl in IMPLS] + ["ok resnet20_b1"]
    assert "data pointer of FakeTensor" not in result.stderr


def _cached_builders():
    """Every tensor cache of the layers package (the functions made by ``eager_cache``)."""
    return [resize.interpolation_matrix, _fast._row_filter_matrix]


def test_caches_never_keep_fake_or_meta_tensors():
    for build in _cached_builders():
        build.cache_clear()
    args = [(3, 7, torch.float32), (12, 0, 7, 3, 1, 1, 12, torch.float32)]
    for build, a in zip(_cached_builders(), args):
        with FakeTensorMode():
            assert isinstance(build(*a, torch.device("cpu")), FakeTensor)
        assert build(*a, torch.device("meta")).device.type == "meta"
        with FlopCounterMode(display=False):
            build(*a, torch.device("cpu"))
        first, again = build(*a, torch.device("cpu")), build(*a, torch.device("cpu"))
        assert is_eager_tensor(first) and again is first  # eager results are cached ...
        with FakeTensorMode():
            assert isinstance(build(*a, torch.device("cpu")), FakeTensor)  # ... but never served to a fake call


def test_eager_cache_keeps_nothing_that_is_not_an_eager_tensor():
    made = []

    @eager_cache()
    def build(n: int, device: torch.device) -> torch.Tensor:
        made.append(n)
        return torch.zeros(n, device=device).as_subclass(Subclass) if n == 2 else torch.zeros(n, device=device)

    class Subclass(torch.Tensor):
        pass

    cpu = torch.device("cpu")
    build(1, cpu), build(1, cpu), build(2, cpu), build(2, cpu)
    assert made == [1, 2, 2]


def test_module_cache_ignores_forwards_under_fake_mode():
    torch.manual_seed(0)
    layer = PushPullConv2d(8, 4, 3, padding=1).eval()
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        layer(torch.zeros(1, 8, 8, 8))
    assert layer._pull_cache is None
    with torch.no_grad():
        layer(torch.randn(1, 8, 8, 8))
    assert all(is_eager_tensor(t) for t in layer._pull_cache[2].values())


@pytest.mark.parametrize("impl", ["separable", "basis", "fused", "auto"])
def test_kernels_cached_in_inference_mode_serve_training(impl):
    resize.interpolation_matrix.cache_clear()
    _fast._row_filter_matrix.cache_clear()
    layer = PushPullConv2d(3, 4, 3, padding=1, impl=impl)
    x = torch.randn(1, 3, 10, 10)
    with torch.inference_mode():
        layer(x)
    x.requires_grad_(True)
    grads = torch.autograd.grad(layer(x).sum(), [x, layer.weight], create_graph=True)
    assert all(g is not None for g in grads)


def test_native_kernels_refuse_tensors_without_memory():
    with FakeTensorMode():
        fake = torch.zeros(4)
    for t in (fake, torch.zeros(4, device="meta"), torch.zeros(4, 2).t()):
        with pytest.raises(RuntimeError, match="not a contiguous eager tensor"):
            _native._ptr(t)
    args = ((7, 7), (1, 1), (1, 1), 1, "zeros", (1, 1, 1, 1), (3, 3, 3, 3))
    with FakeTensorMode():
        x, w = torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 3, 3)
        assert "plain tensors" in _native.unsupported(x, w, *args)
    with FlopCounterMode(display=False):
        assert "plain tensors" in _native.unsupported(torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 3, 3), *args)
    assert "plain tensors" in _native.unsupported(torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 3, 3), *args,
                                                  operands=(fake,))


@pytest.mark.skipif(not _native.available(), reason="the native kernels cannot be built here")
@pytest.mark.parametrize("create_graph", [False, True])
def test_native_backward_returns_one_gradient_per_forward_input(create_graph):
    inputs = len(inspect.signature(_native.NativePushPull.forward).parameters) - 1  # without ctx
    layer = PushPullConv2d(4, 3, 3, padding=1, trainable_alpha=True, impl="native")
    out = layer(torch.randn(1, 4, 6, 6, requires_grad=True))
    with torch.set_grad_enabled(create_graph):  # the kernels' backward, or the differentiable one
        grads = out.grad_fn.apply(torch.ones_like(out))
    assert len(grads) == inputs
