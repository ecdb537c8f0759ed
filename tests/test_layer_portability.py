"""The layer on other dtypes, memory formats and devices, and through tracing, compilation and export."""

from __future__ import annotations

import warnings

import pytest
import torch

from pushpull import PushPullConv2d, push_pull_conv2d_reference


def _layer(**kwargs) -> PushPullConv2d:
    torch.manual_seed(0)
    return PushPullConv2d(3, 6, 3, padding=1, **kwargs)


def _reference64(layer: PushPullConv2d, x: torch.Tensor) -> torch.Tensor:
    alpha = layer.effective_alpha()
    return push_pull_conv2d_reference(
        x.double(), layer.weight.double(), None if layer.bias is None else layer.bias.double(), layer.stride,
        layer.padding, layer.dilation, layer.groups, layer.scale,
        alpha.double() if isinstance(alpha, torch.Tensor) else alpha, layer.dual_output, layer.push.padding_mode)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_on_cpu(dtype, tol):
    layer = _layer(trainable_alpha=True)
    x = torch.randn(2, 3, 9, 9)
    low = layer.to(dtype)
    x_low = x.to(dtype).requires_grad_(True)
    out = low(x_low)
    assert out.dtype == dtype
    want = _reference64(low, x_low.detach())
    assert (out.double() - want).abs().max() <= tol * want.abs().max()
    out.float().sum().backward()
    assert x_low.grad.dtype == dtype and low.weight.grad.dtype == dtype and low.alpha.grad.dtype == dtype


def test_cpu_autocast_bfloat16():
    layer = _layer(trainable_alpha=True)
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16  # as F.conv2d under autocast
    want = _reference64(layer, x.detach())
    assert (out.double() - want).abs().max() <= 5e-2 * want.abs().max()
    out.float().square().mean().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    assert layer.alpha.grad is not None and layer.bias.grad is not None


def test_channels_last_input():
    layer = _layer()
    x = torch.randn(2, 3, 10, 9)
    x_cl = x.to(memory_format=torch.channels_last).requires_grad_(True)
    out = layer(x_cl)
    torch.testing.assert_close(out, layer(x))
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()
    assert x_cl.grad is not None
    torch.testing.assert_close(x_cl.grad, torch.autograd.grad(layer(x.requires_grad_(True)).sum(), x)[0])


def test_torch_export_matches_eager():
    layer = _layer(trainable_alpha=True).eval()
    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(layer, (x,))
    x2 = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(program.module()(x2), layer(x2))


def test_torch_jit_trace_matches_eager():
    layer = _layer(dual_output=True).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # trace is deprecated, still widely used
        traced = torch.jit.trace(layer, (x,))
        x2 = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(traced(x2), layer(x2))


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    layer = _layer(trainable_alpha=True).eval()
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / "pushpull.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(layer, (x,), str(path), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(2, 3, 8, 8)
    (got,) = session.run(None, {session.get_inputs()[0].name: x2.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), layer(x2), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_matches_eager_forward_and_backward():
    layer = _layer(trainable_alpha=True)
    compiled = torch.compile(layer)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    (gx,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(gx, torch.autograd.grad(layer(x).sum(), x)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, groups=3, trainable_alpha=True), dict(dual_output=True)])
def test_cuda_matches_float64_reference(kwargs):
    layer = _layer(**kwargs).cuda()
    x = torch.randn(2, 3, 11, 10, device="cuda", requires_grad=True)
    torch.backends.cudnn.allow_tf32 = False
    out = layer(x)
    want = _reference64(layer, x.detach())
    assert ((out.double() - want).abs().max() / want.abs().max()).item() < 1e-5
    out.sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    (want_grad,) = torch.autograd.grad(_reference64(layer, x64).sum(), x64)
    assert ((x.grad.double() - want_grad).abs().max() / want_grad.abs().max()).item() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_float16():
    layer = _layer(trainable_alpha=True).cuda()
    x = torch.randn(2, 3, 9, 9, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out = layer(x)
    assert out.dtype == torch.float16
    want = _reference64(layer, x)
    assert (out.double() - want).abs().max() <= 1e-2 * want.abs().max()
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32


def test_torch_func_transforms_use_plain_ops():
    layer = _layer(trainable_alpha=True)
    x = torch.randn(4, 3, 7, 7)
    batched = torch.func.vmap(layer)(x[:, None])  # per-sample calls of an unbatched-looking module
    torch.testing.assert_close(batched[:, 0], layer(x))
    params = {k: v.detach() for k, v in layer.named_parameters()}
    grads = torch.func.grad(lambda p: torch.func.functional_call(layer, p, (x,)).square().sum())(params)
    layer(x).square().sum().backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5)  # different summation orders


def test_meta_device_gives_shapes_without_arithmetic():
    layer = PushPullConv2d(3, 8, 3, padding=1, stride=2, device="meta")
    out = layer(torch.empty(2, 3, 33, 32, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 8, 17, 16)
