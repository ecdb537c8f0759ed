"""The push-pull layer's definition and module behaviour (reference implementation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pushpull import PushPullConv2d, pull_kernel, pull_kernel_size, push_pull_conv2d, push_pull_conv2d_reference


@pytest.mark.parametrize("k,scale,expected", [(3, 2, 7), (5, 2, 11), (1, 2, 3), (3, 1, 3), (7, 2, 15),
                                              (3, 1.5, 5), (4, 2, 9), (3, 2.5, 7)])
def test_pull_kernel_size_rule(k, scale, expected):
    assert pull_kernel_size(k, scale) == expected


@pytest.mark.parametrize("scale", [0, -1.0])
def test_non_positive_scale_is_rejected(scale):
    with pytest.raises(ValueError, match="scale"):
        PushPullConv2d(3, 4, 3, scale=scale)


def test_pull_kernel_is_bilinear_align_corners():
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    k_hat = pull_kernel(w, 2)
    assert k_hat.shape == (2, 3, 7, 7)
    # align_corners=True keeps the corners and puts the original taps at even positions
    torch.testing.assert_close(k_hat[..., ::3, ::3], w)
    torch.testing.assert_close(k_hat[..., 0, 1], w[..., 0, 0] * 2 / 3 + w[..., 0, 1] / 3)


def _original_definition(x, w, b, padding, alpha, scale):
    """The original implementation's formula (odd kernels, dilation 1)."""
    k = w.shape[-1]
    p = pull_kernel_size(k, scale)
    k_hat = F.interpolate(w, size=(p, p), mode="bilinear", align_corners=True)
    push = F.relu(F.conv2d(x, w, b, padding=padding))
    pull = F.relu(F.conv2d(x, -k_hat, None if b is None else -b, padding=p // 2 - k // 2 + padding))
    return push - alpha * pull


@pytest.mark.parametrize("k,padding,bias", [(3, 1, True), (3, 0, False), (5, 2, True), (1, 0, True)])
def test_reference_matches_original_formula(k, padding, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 10, dtype=torch.float64)
    w = torch.randn(4, 3, k, k, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64) if bias else None
    got = push_pull_conv2d_reference(x, w, b, padding=padding, alpha=0.7)
    torch.testing.assert_close(got, _original_definition(x, w, b, padding, 0.7, 2))


def test_scale_one_uses_the_push_kernel_itself():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    got = push_pull_conv2d_reference(x, w, padding=1, scale=1, alpha=1)
    lin = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(got, F.relu(lin) - F.relu(-lin))  # = lin when pull mirrors push
    torch.testing.assert_close(got, lin)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1), dict(kernel_size=3, padding=0, stride=2), dict(kernel_size=3, dilation=2, padding=2),
    dict(kernel_size=4, padding="same"), dict(kernel_size=4, stride=4), dict(kernel_size=(3, 5), padding=(1, 2)),
    dict(kernel_size=3, padding="same", dilation=2), dict(kernel_size=5, padding=2, padding_mode="reflect"),
    dict(kernel_size=3, padding=1, scale=0.5), dict(kernel_size=2, padding="valid"),
])
def test_output_shape_equals_conv2d(kwargs):
    x = torch.randn(2, 4, 13, 12)
    pp = PushPullConv2d(4, 6, **kwargs)
    conv = nn.Conv2d(4, 6, **{k: v for k, v in kwargs.items() if k != "scale"})
    assert pp(x).shape == conv(x).shape


def test_parameter_count_and_state_dict_layout():
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    pp = PushPullConv2d(3, 16, 3, padding=1, bias=False)
    assert sum(p.numel() for p in pp.parameters()) == sum(p.numel() for p in conv.parameters())
    assert list(pp.state_dict()) == ["push.weight"]
    ppa = PushPullConv2d(3, 16, 3, padding=1, trainable_alpha=True)
    assert sorted(ppa.state_dict()) == ["alpha", "push.bias", "push.weight"]
    assert ppa.alpha.shape == (1, 16, 1, 1)
    assert ((ppa.alpha - 0.5).abs() < 0.2).all()


def test_bias_negated_in_pull():
    w = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    b = torch.tensor([-2.0], dtype=torch.float64)
    out = push_pull_conv2d_reference(torch.zeros(1, 1, 5, 5, dtype=torch.float64), w, b, padding=1, alpha=0.5)
    # push = relu(-2) = 0; pull = relu(+2) = 2; R = 0 - 0.5 * 2
    torch.testing.assert_close(out, torch.full((1, 1, 5, 5), -1.0, dtype=torch.float64))


def test_trainable_alpha_is_rectified_and_gets_gradient():
    torch.manual_seed(0)
    pp = PushPullConv2d(2, 3, 3, padding=1, trainable_alpha=True, impl="reference")
    with torch.no_grad():
        pp.alpha[0, 0] = -1.0  # rectified: channel 0 loses its inhibition
    x = torch.randn(2, 2, 9, 9)
    out = pp(x)
    push = F.relu(F.conv2d(x, pp.weight, pp.bias, padding=1))
    torch.testing.assert_close(out[:, 0], push[:, 0])
    out.sum().backward()
    assert pp.alpha.grad is not None and pp.alpha.grad[0, 1:].abs().sum() > 0
    assert pp.push.weight.grad is not None


def test_dual_output_concatenates_push_and_pull():
    torch.manual_seed(0)
    pp = PushPullConv2d(2, 3, 3, padding=1, dual_output=True, alpha=0.3)
    single = PushPullConv2d(2, 3, 3, padding=1, alpha=0.3)
    single.load_state_dict(pp.state_dict())
    x = torch.randn(1, 2, 8, 8)
    dual = pp(x)
    assert dual.shape == (1, 6, 8, 8) and pp.out_channels == 6
    torch.testing.assert_close(dual[:, :3] - 0.3 * dual[:, 3:], single(x))


def test_gradient_flows_through_both_responses():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 1, 9, 9, dtype=torch.float64)
    push_only = torch.autograd.grad(F.relu(F.conv2d(x, w, padding=1)).sum(), w)[0]
    full = torch.autograd.grad(push_pull_conv2d_reference(x, w, padding=1).sum(), w)[0]
    assert not torch.allclose(push_only, full)
    assert torch.autograd.gradcheck(lambda w_: push_pull_conv2d_reference(x, w_, padding=1, stride=2), (w,))


def test_unbatched_input():
    pp = PushPullConv2d(3, 4, 3, padding=1)
    x = torch.randn(3, 8, 8)
    torch.testing.assert_close(pp(x), pp(x[None])[0])


def test_repr_shows_push_and_pull_sizes():
    text = repr(PushPullConv2d(3, 16, 3, padding=1))
    assert "push=(3, 3)" in text and "pull=(7, 7)" in text


@pytest.mark.parametrize("shape,match", [((1, 5, 8, 8), "3 input channels"), ((1, 3, 2, 2), "smaller than the kernel"),
                                         ((8, 8), "expects a")])
def test_bad_input_errors(shape, match):
    pp = PushPullConv2d(3, 4, 3)
    with pytest.raises(ValueError, match=match):
        pp(torch.randn(*shape))


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        PushPullConv2d(3, 4, 3, alpha=-1)
    with pytest.raises(ValueError, match="same"):
        PushPullConv2d(3, 4, 3, stride=2, padding="same")(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="impl"):
        PushPullConv2d(3, 4, 3, impl="fastest")


@pytest.mark.parametrize("function", [PushPullConv2d.__init__, push_pull_conv2d, push_pull_conv2d_reference])
def test_docstrings_document_every_argument(function):
    """help(pushpull) shows real docstrings (issue 11): each argument is named in its Args section."""
    import inspect
    import re

    doc = inspect.getdoc(function) or ""
    args = doc.split("Args:", 1)[-1] if "Args:" in doc else ""
    for name in inspect.signature(function).parameters:
        if name not in ("self", "x"):
            assert re.search(rf"^\s+(\w+, )*{name}(, \w+)*:", args, re.M), f"{function.__qualname__}: {name}"
