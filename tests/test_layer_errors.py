"""Bad arguments and inputs give clear errors naming the bad thing."""

from __future__ import annotations

import math

import pytest
import torch

from pushpull import PushPullConv2d, push_pull_conv2d


@pytest.mark.parametrize("kwargs,match", [
    (dict(groups=2), "divisible by groups"),
    (dict(scale=0), "scale"), (dict(scale=-2.0), "scale"), (dict(scale=math.nan), "scale"),
    (dict(alpha=-0.5), "alpha"), (dict(alpha=math.inf), "alpha"),
    (dict(padding="full"), "padding"), (dict(padding_mode="mirror"), "padding_mode"),
    (dict(impl="fastest"), "impl"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PushPullConv2d(3, 4, 3, **kwargs)(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("x,error,match", [
    (torch.randn(1, 4, 8, 8), ValueError, "expects 3 input channels, got 4"),
    (torch.randn(1, 3, 2, 8), ValueError, "input height 2 .* smaller than the kernel"),
    (torch.randn(1, 3, 8, 2), ValueError, "input width 2 .* smaller than the kernel"),
    (torch.randn(3, 8), ValueError, "expects a"),
    (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), TypeError, "floating-point input, got torch.uint8"),
    (torch.randn(1, 3, 8, 8, dtype=torch.float64), TypeError, "dtype torch.float64 does not match"),
])
def test_bad_inputs(x, error, match):
    with pytest.raises(error, match=match):
        PushPullConv2d(3, 4, 3)(x)


def test_dilated_kernel_larger_than_input_is_reported():
    with pytest.raises(ValueError, match="dilated kernel"):
        PushPullConv2d(3, 4, 3, dilation=3)(torch.randn(1, 3, 6, 6))
    PushPullConv2d(3, 4, 3, dilation=3, padding=3)(torch.randn(1, 3, 6, 6))  # padding makes it fit


def test_strided_same_padding_is_rejected():
    with pytest.raises(ValueError, match="same"):
        PushPullConv2d(3, 4, 3, stride=2, padding="same")


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_functional_checks_shapes(impl):
    x, w = torch.randn(1, 4, 8, 8), torch.randn(5, 2, 3, 3)
    with pytest.raises(ValueError, match="input has 4 channels but the weight expects 6"):
        push_pull_conv2d(x, w, groups=3, impl=impl)
    with pytest.raises(ValueError, match="weight must be"):
        push_pull_conv2d(x, w[0], impl=impl)
    with pytest.raises(ValueError, match="input must be"):
        push_pull_conv2d(x[0, 0], w, impl=impl)
    with pytest.raises(ValueError, match="impl"):
        push_pull_conv2d(x, w, groups=2, impl="naive")


@pytest.mark.parametrize("impl", ["auto", "native", "basis", "fused", "separable"])
def test_functional_rejects_inputs_smaller_than_the_kernel(impl):
    with pytest.raises(ValueError, match="input height 2 .* smaller than the kernel"):
        push_pull_conv2d(torch.randn(1, 4, 2, 8), torch.randn(4, 4, 3, 3), impl=impl)
    assert push_pull_conv2d(torch.randn(1, 4, 2, 8), torch.randn(4, 4, 3, 3), padding=1, impl=impl).shape == (1, 4, 2, 8)
