"""The native CPU path (shared product + compiled filtering) against the float64 definition."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch

from builds import BUILD_IDS, NARROWER_BUILDS, narrower, skip_unless_buildable
from layer_checks import outputs_and_grads, rel_err, second_order_grads

from pushpull import PushPullConv2d
from pushpull.layers import _native, config

needs_native = pytest.mark.skipif(not _native.available(),
                                  reason="the native kernels cannot be built here (no C compiler with OpenMP)")


def _pair(*args, cin: int = 4, cout: int = 6, **kwargs) -> tuple[PushPullConv2d, PushPullConv2d]:
    native = PushPullConv2d(cin, cout, *args, **kwargs, impl="native")
    ref = PushPullConv2d(cin, cout, *args, **kwargs, impl="reference").double()
    ref.load_state_dict({k: v.double() for k, v in native.state_dict().items()})
    return native, ref


def _use_blas(monkeypatch, on: bool) -> None:
    """Whether the products and their adjoints go through BLAS (wide inputs) or the kernels, whatever the width."""
    for threshold in ("BLAS_MIN_CHANNELS", "BLAS_FORWARD_MIN_CHANNELS", "BLAS_FORWARD_MIN_IMAGE_BYTES"):
        monkeypatch.setattr(_native, threshold, 0 if on else 1 << 30)


NATIVE_CASES = [
    # (kernel_size, padding, bias, input (H, W), channels (in, out), batch, extra kwargs)
    (3, 1, True, (32, 32), (16, 4), 2, {}),  # the vectorised main loops (64-wide blocks)
    (3, 1, True, (12, 12), (4, 6), 3, {}),
    (3, 0, False, (11, 13), (4, 6), 3, {}),
    (3, 2, True, (7, 9), (3, 5), 2, {}),  # padding wider than the kernel's half
    (3, "same", True, (10, 9), (4, 6), 1, {}),
    (1, 0, True, (9, 8), (5, 3), 2, {}),
    (5, 2, True, (12, 11), (4, 6), 2, {}),  # 25 taps: three register blocks
    (7, 3, True, (12, 12), (2, 3), 2, {}),
    (7, "valid", True, (9, 10), (2, 3), 2, {}),
    ((3, 5), (1, 2), True, (10, 11), (3, 4), 2, {}),
    (3, 1, True, (12, 12), (4, 6), 2, {"dual_output": True}),
    (3, 1, False, (12, 11), (4, 6), 2, {"trainable_alpha": True}),
    (3, 1, True, (10, 10), (4, 6), 2, {"alpha": 0.37}),
    (3, 1, True, (10, 10), (4, 6), 2, {"scale": 1.0}),
    (3, 1, True, (10, 10), (4, 6), 2, {"scale": 1.5}),
    (3, 1, True, (10, 10), (4, 6), 2, {"scale": 3.0}),
    (3, 1, True, (37, 41), (3, 2), 2, {"trainable_alpha": True}),
    (3, 1, False, (9, 23), (7, 5), 2, {}),  # weight-gradient channel triples plus one; 48-pixel blocks plus a tail
    (3, 1, True, (12, 12), (64, 8), 1, {}),  # a wide input, as ResNet's first stage
]


@needs_native
@pytest.mark.parametrize("products", ["kernel", "blas"])  # computed plane by plane, or by BLAS (wide inputs)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k,padding,bias,size,channels,batch,extra", NATIVE_CASES)
def test_native_matches_float64_reference(monkeypatch, k, padding, bias, size, channels, batch, extra, threads,
                                          products):
    _use_blas(monkeypatch, products == "blas")
    torch.manual_seed(zlib.crc32(repr((k, padding, bias, size, channels, extra)).encode()))
    native, ref = _pair(k, 1, padding, 1, 1, bias, cin=channels[0], cout=channels[1], **extra)
    x = torch.randn(batch, channels[0], *size)
    with torch.no_grad():
        grad_out = torch.randn(ref(x.double()).shape, dtype=torch.float64)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, grads = outputs_and_grads(native, x, grad_out)
    finally:
        torch.set_num_threads(saved)
    want, want_grads = outputs_and_grads(ref, x.double(), grad_out)
    assert out.dtype == torch.float32 and out.shape == want.shape
    assert rel_err(out, want) < 1e-5
    for name, g, w in zip(("input", "weight", "bias", "alpha"), grads, want_grads):
        assert g.shape == w.shape, name
        assert rel_err(g, w) < 1e-5, name
    with torch.no_grad():  # inference (the module's cached packing) gives the same output
        assert rel_err(native(x), want) < 1e-5


@needs_native
@pytest.mark.parametrize("images_per_chunk", [1, 2])
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("extra", [{"trainable_alpha": True}, {"dual_output": True}])
def test_native_blas_paths_in_chunks_of_images(monkeypatch, images_per_chunk, input_grad, extra):
    """For wide inputs the forward makes the products, and the backward the maps' gradients, a few images at a
    time: every chunking gives the same output and gradients."""
    torch.manual_seed(7)
    native, ref = _pair(3, 1, 1, 1, 1, True, cin=5, cout=4, **extra)
    _use_blas(monkeypatch, True)
    monkeypatch.setattr(_native, "MAPS_CHUNK_BYTES", images_per_chunk * 4 * 4 * 9 * 11 * 10)
    x = torch.randn(5, 5, 11, 10)
    x64 = x.double()
    x.requires_grad_(input_grad), x64.requires_grad_(input_grad)
    out, want = native(x), ref(x64)
    assert rel_err(out, want) < 1e-5
    grad_out = torch.randn(want.shape, dtype=torch.float64)
    out.backward(grad_out.float())
    want.backward(grad_out)
    for (name, p), q in zip(native.named_parameters(), ref.parameters()):
        assert rel_err(p.grad, q.grad) < 1e-5, name
    assert (x.grad is None) == (not input_grad)
    if input_grad:
        assert rel_err(x.grad, x64.grad) < 1e-5


@needs_native
@pytest.mark.parametrize("march,needs", NARROWER_BUILDS, ids=BUILD_IDS)
def test_every_vector_width_build_matches_float64_reference(monkeypatch, tmp_path, march, needs):
    """The register blocks differ per vector width (16 floats and 32 registers with AVX-512, 8 and 16 with
    AVX2, 4 and 16 with SSE): each narrower build this machine runs, against float64 and the native build."""
    skip_unless_buildable(march, needs)
    cases = [NATIVE_CASES[0], NATIVE_CASES[6], NATIVE_CASES[11], NATIVE_CASES[-2], NATIVE_CASES[-1]]
    runs = []
    for products in ("kernel", "blas"):  # with the -march=native build
        _use_blas(monkeypatch, products == "blas")
        for k, padding, bias, size, channels, batch, extra in cases:
            torch.manual_seed(zlib.crc32(repr((k, size, channels)).encode()))
            native, ref = _pair(k, 1, padding, 1, 1, bias, cin=channels[0], cout=channels[1], **extra)
            x = torch.randn(batch, channels[0], *size)
            runs.append((products, native, ref, x, native(x).detach()))
    for extra in ({}, {"dual_output": True}):  # strided stems: the basis path's kernels (training and inference)
        torch.manual_seed(3)
        stem = PushPullConv2d(3, 10, 7, 2, 3, **extra)
        ref = PushPullConv2d(3, 10, 7, 2, 3, **extra, impl="reference").double()
        ref.load_state_dict({k: v.double() for k, v in stem.state_dict().items()})
        x = torch.randn(2, 3, 33, 30)
        runs.append(("kernel", stem, ref, x, stem(x).detach()))
    monkeypatch.setenv("PUSHPULL_CACHE", str(tmp_path))
    flags = narrower(_native._flags(), march)
    monkeypatch.setattr(_native, "_flags", lambda: flags)
    _native._library.cache_clear()
    try:
        assert _native.available()
        for products, native, ref, x, native_out in runs:
            _use_blas(monkeypatch, products == "blas")
            grad_out = torch.randn(native_out.shape, dtype=torch.float64)
            out, grads = outputs_and_grads(native, x, grad_out)
            want, want_grads = outputs_and_grads(ref, x.double(), grad_out)
            assert rel_err(out, want) < 1e-5
            for name, g, w in zip(("input", "weight", "bias", "alpha"), grads, want_grads):
                assert rel_err(g, w) < 1e-5, name
            with torch.no_grad():
                assert rel_err(native(x), want) < 1e-5
            if "fma" in needs:  # the blocking only moves values between registers: every sum in the same order
                assert torch.equal(out, native_out)
    finally:
        _native._library.cache_clear()
    assert [f.name for f in tmp_path.iterdir()]  # a build of its own, not the -march=native one


def test_blas_products_only_for_wide_inputs_whose_images_leave_l2(monkeypatch):
    monkeypatch.setattr(_native, "l2_cache_bytes", lambda: 512 << 10)
    assert _native._products_by_blas(torch.empty(2, 64, 40, 40))  # 400 KB: over half of 512 KB
    assert not _native._products_by_blas(torch.empty(2, 64, 20, 20))  # 100 KB stays
    assert not _native._products_by_blas(torch.empty(2, 16, 80, 80))  # too narrow for BLAS to pay
    monkeypatch.setattr(_native, "l2_cache_bytes", lambda: 2 << 20)
    assert not _native._products_by_blas(torch.empty(2, 64, 40, 40))
    monkeypatch.setattr(_native, "l2_cache_bytes", lambda: 512 << 10)
    assert _native._products_by_blas(torch.empty(0, 64, 40, 40))  # an empty batch: decided by the shape


def test_cache_sizes_read_as_sysfs_writes_them():
    from pushpull._compiled import cache_size, l2_cache_bytes
    assert [cache_size(t) for t in ("512K", "2048K\n", "1M", "65536")] == [512 << 10, 2 << 20, 1 << 20, 65536]
    assert l2_cache_bytes() >= 64 << 10


@needs_native
@pytest.mark.parametrize("products", ["kernel", "blas"])
def test_native_empty_batch(monkeypatch, products):
    _use_blas(monkeypatch, products == "blas")
    native, _ = _pair(3, 1, 1, 1, 1, True, cin=64, cout=8)
    x = torch.randn(0, 64, 12, 12, requires_grad=True)
    out = native(x)
    assert out.shape == (0, 8, 12, 12)
    out.sum().backward()
    assert x.grad.shape == x.shape and native.push.weight.grad.abs().sum() == 0
    with torch.no_grad():
        assert native(x).shape == (0, 8, 12, 12)


@needs_native
def test_native_channels_last_and_unbatched_inputs():
    torch.manual_seed(0)
    native, ref = _pair(3, 1, 1, cin=4, cout=5)
    x = torch.randn(2, 4, 9, 10)
    want = ref(x.double())
    assert rel_err(native(x.to(memory_format=torch.channels_last)), want) < 1e-5
    assert rel_err(native(x[0]), want[0]) < 1e-5


@needs_native
def test_native_second_order_gradients_match_reference():
    torch.manual_seed(0)
    native, ref = _pair(3, 1, 1, cin=3, cout=4, trainable_alpha=True)
    x = torch.randn(2, 3, 8, 9)

    for got, want in zip(second_order_grads(native, x), second_order_grads(ref, x.double())):
        assert rel_err(got, want) < 1e-5


@needs_native
@pytest.mark.parametrize("kwargs,x_dtype,reason", [
    (dict(stride=2), torch.float32, "stride"), (dict(dilation=2), torch.float32, "dilation"),
    (dict(groups=2), torch.float32, "groups"), (dict(padding_mode="reflect"), torch.float32, "padding_mode"),
    (dict(kernel_size=4), torch.float32, "symmetric"), (dict(scale=0.5), torch.float32, "pull at least"),
    ({}, torch.float64, "float32")])
def test_native_refuses_what_it_does_not_cover(kwargs, x_dtype, reason):
    kwargs = {"kernel_size": 3, "padding": 1, **kwargs}
    layer = PushPullConv2d(4, 4, **kwargs, impl="native").to(x_dtype)
    with pytest.raises(ValueError, match=f"impl='native' cannot compute this call: .*{reason}"):
        layer(torch.randn(1, 4, 9, 9, dtype=x_dtype))


@needs_native
def test_packed_weights_cached_in_inference_and_never_stale(monkeypatch):
    calls = []
    original = _native.packed_weight
    monkeypatch.setattr(_native, "packed_weight", lambda w: calls.append(1) or original(w))
    torch.manual_seed(0)
    native, ref = _pair(3, 1, 1, cin=8, cout=4)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        first = [native(x) for _ in range(3)]
        assert len(calls) == 1
        native.weight.mul_(-0.5)
        ref.weight.mul_(-0.5)
        assert rel_err(native(x), ref(x.double())) < 1e-5
    assert len(calls) == 2
    assert not torch.equal(first[0], native(x).detach())
    with torch.inference_mode():
        assert rel_err(native(x), ref(x.double())) < 1e-5


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """A private kernel cache folder, and the loader forgotten before and after the test."""
    monkeypatch.setenv("PUSHPULL_CACHE", str(tmp_path))
    _native._library.cache_clear()
    yield tmp_path
    _native._library.cache_clear()


@needs_native
def test_kernels_built_once_into_the_cache_folder(fresh_library):
    assert _native.available()
    built = list(fresh_library.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary left behind
    _native._library.cache_clear()
    mtime = built[0].stat().st_mtime_ns
    assert _native.available() and built[0].stat().st_mtime_ns == mtime  # reused, not rebuilt


@needs_native
def test_several_sources_build_one_library_rebuilt_when_a_header_changes(monkeypatch, tmp_path):
    from pushpull._compiled import load_library
    monkeypatch.setenv("PUSHPULL_CACHE", str(tmp_path / "cache"))
    header, one, two = tmp_path / "k.h", tmp_path / "one.c", tmp_path / "two.c"
    header.write_text("#define SCALE 2\n")
    one.write_text('#include "k.h"\nint twice(int v) { return SCALE * v; }\n')
    two.write_text('#include "k.h"\nint twice(int v);\nint four_times(int v) { return twice(twice(v)); }\n')
    flags = ["-O1", "-shared", "-fPIC"]
    assert load_library([one, two, header], flags, "test").four_times(3) == 12
    header.write_text("#define SCALE 3\n")
    assert load_library([one, two, header], flags, "test").four_times(3) == 27
    assert len(list((tmp_path / "cache").glob("pushpull_test_*.so"))) == 2


def test_turned_off_by_environment_read_once_or_by_config():
    script = "from pushpull.layers import _native, config; print(config.native_enabled(), _native.available())"
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PUSHPULL_NATIVE": "0"},
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr[-2000:]
    before = config.native_enabled()
    with config.set_native(False):
        assert not _native.available()
        layer = PushPullConv2d(4, 4, 3, padding=1)
        assert layer(torch.randn(1, 4, 8, 8)).shape == (1, 4, 8, 8)  # the other exact paths
        with pytest.raises(ValueError, match="PUSHPULL_NATIVE=0"):
            PushPullConv2d(4, 4, 3, padding=1, impl="native")(torch.randn(1, 4, 8, 8))
    assert config.native_enabled() == before


def test_failed_build_falls_back_with_a_warning(fresh_library, monkeypatch, caplog):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with caplog.at_level(logging.WARNING, logger="pushpull._compiled"):
        assert not _native.available()
    assert "could not build the native kernels" in caplog.text
    assert not any(fresh_library.iterdir())
    torch.manual_seed(0)
    layer = PushPullConv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    ref = PushPullConv2d(4, 4, 3, padding=1, impl="reference")
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), ref(x))


@needs_native
def test_fake_tensors_and_flop_counting_take_the_operator_paths():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    layer = PushPullConv2d(8, 4, 3, padding=1)  # the native path's in inference (8 input channels)
    with FakeTensorMode(), torch.no_grad():  # how `pushpull models` sizes a network
        fake_layer = PushPullConv2d(8, 4, 3, padding=1)
        assert fake_layer(torch.zeros(2, 8, 8, 8)).shape == (2, 4, 8, 8)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        layer(torch.zeros(1, 8, 8, 8))
    assert counter.get_total_flops() > 0  # the convolutions are visible to the counter


@needs_native
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the process size from /proc")
def test_out_of_memory_in_the_kernels_raises_memory_error():
    # in a child process whose address space is capped just above its current size: the layer's
    # tensors fit, the kernels' scratch grids (about 190 MB for a 1500x1500 plane) do not
    script = textwrap.dedent("""
        import re, resource, torch
        from pushpull import PushPullConv2d
        torch.set_num_threads(1)
        layer = PushPullConv2d(1, 1, 3, padding=1, impl="native").eval()
        x = torch.randn(1, 1, 1500, 1500)
        with torch.no_grad():
            layer(torch.randn(1, 1, 8, 8))
            size = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size + 60 * 2**20, resource.RLIM_INFINITY))
            try:
                layer(x)
            except MemoryError as err:
                print("MemoryError:", err)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "MemoryError: pushpull native kernel pp_forward" in result.stdout, result.stderr[-2000:]


@needs_native
def test_kernels_use_the_current_thread_count_at_every_call():
    # in a child process: torch's thread count changed after the kernels' first use, inside a
    # DataLoader worker (torch sets 1 there) and on a fresh Python thread (torch's setting applies)
    script = textwrap.dedent("""
        import threading, torch
        from pushpull import PushPullConv2d
        from pushpull.layers import _native
        layer = PushPullConv2d(8, 4, 3, padding=1, impl="native")
        x = torch.randn(2, 8, 12, 12, requires_grad=True)

        def teams():
            out = layer(x)
            forward = _native.last_team()
            out.sum().backward()
            return forward, _native.last_team()

        class Teams(torch.utils.data.Dataset):
            def __len__(self):
                return 1
            def __getitem__(self, i):
                return teams()

        seen = []
        for n in (1, 2, 1, 2):
            torch.set_num_threads(n)
            seen.append(teams())
        loader = torch.utils.data.DataLoader(Teams(), batch_size=None, num_workers=1, multiprocessing_context="fork")
        seen += [tuple(int(t) for t in teams) for teams in loader]
        thread = threading.Thread(target=lambda: seen.append(teams()))
        thread.start(), thread.join()
        print(seen)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "[(1, 1), (2, 2), (1, 1), (2, 2), (1, 1), (2, 2)]", result.stderr[-2000:]
