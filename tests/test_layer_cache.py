"""The cached pull kernel: computed once while the weights are unchanged, never stale."""

from __future__ import annotations

import copy

import pytest
import torch

import pushpull.layers.pushpull as pp_module
from pushpull import PushPullConv2d, push_pull_conv2d_reference


@pytest.fixture
def count_pull_kernels(monkeypatch):
    """Counts how often the module recomputes its pull kernel."""
    calls = []
    original = pp_module.pull_kernel

    def counting(weight, scale):
        calls.append(weight.shape)
        return original(weight, scale)

    monkeypatch.setattr(pp_module, "pull_kernel", counting)
    return calls


def _reference(layer: PushPullConv2d, x: torch.Tensor) -> torch.Tensor:
    return push_pull_conv2d_reference(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                                      layer.groups, layer.scale, layer.effective_alpha(), layer.dual_output,
                                      layer.push.padding_mode)


def test_reused_in_eval_and_no_grad(count_pull_kernels):
    layer = PushPullConv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        outs = [layer(x) for _ in range(3)]
    with torch.inference_mode():
        layer(x)
    assert len(count_pull_kernels) == 2  # once under no_grad, once more for inference-mode tensors
    for out in outs:
        torch.testing.assert_close(out, _reference(layer, x).detach())


def test_reused_across_training_steps_until_weights_change(count_pull_kernels):
    torch.manual_seed(0)
    layer = PushPullConv2d(3, 4, 3, padding=1, trainable_alpha=True)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.randn(2, 3, 8, 8)
    layer(x)
    layer(x)
    assert len(count_pull_kernels) == 1
    for step in range(2):
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
        before = len(count_pull_kernels)
        out = layer(x)  # must see the updated weights: one recomputation, then reuse
        layer(x)
        assert len(count_pull_kernels) == before + 1
        torch.testing.assert_close(out, _reference(layer, x))


def test_not_stale_after_load_state_dict_and_in_place_edits():
    torch.manual_seed(0)
    layer = PushPullConv2d(3, 4, 3, padding=1).eval()
    other = PushPullConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        layer(x)
        layer.load_state_dict(other.state_dict())
        torch.testing.assert_close(layer(x), _reference(other, x))
        layer.weight.mul_(-2.0)
        torch.testing.assert_close(layer(x), _reference(layer, x))
        layer.push.weight = torch.nn.Parameter(torch.randn_like(layer.weight))  # replaced parameter
        torch.testing.assert_close(layer(x), _reference(layer, x))
        flat = torch.randn(2, *layer.weight.shape)  # two weights in one storage, same version counter
        for i in (0, 1):
            layer.push.weight = torch.nn.Parameter(flat[i])
            torch.testing.assert_close(layer(x), _reference(layer, x))


def test_weight_data_edits_need_clear_cache():
    layer = PushPullConv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        layer(x)
        layer.weight.data.copy_(torch.randn_like(layer.weight))  # bypasses the version counter
        layer.clear_cache()
        torch.testing.assert_close(layer(x), _reference(layer, x))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_not_stale_after_dtype_conversion(dtype):
    torch.manual_seed(0)
    layer = PushPullConv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        layer(x)
        layer.to(dtype)
        assert layer.pull_weight.dtype == dtype
        out = layer(x.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out, _reference(layer, x.to(dtype)))


def test_inference_cache_does_not_break_training_afterwards():
    layer = PushPullConv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        layer(x)
    layer(x).sum().backward()  # an inference-mode kernel cannot be saved for backward: must be recomputed
    assert layer.weight.grad is not None


def test_cache_is_not_in_state_dict_and_survives_deepcopy():
    layer = PushPullConv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    layer(x)
    assert list(layer.state_dict()) == ["push.weight", "push.bias"]
    clone = copy.deepcopy(layer)
    with torch.no_grad():
        clone.weight.add_(1.0)
    torch.testing.assert_close(clone(x), _reference(clone, x))
    torch.testing.assert_close(layer(x), _reference(layer, x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_not_stale_after_moving_to_cuda():
    layer = PushPullConv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        layer(x)
        layer.cuda()
        assert layer.pull_weight.device.type == "cuda"
        torch.testing.assert_close(layer(x.cuda()).cpu(), _reference(layer, x.cuda()).cpu())
