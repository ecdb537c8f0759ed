"""Helpers shared by the layer tests: compare a float32 path with the float64 definition."""

from __future__ import annotations

import torch

from pushpull import PushPullConv2d


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest reference value."""
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def outputs_and_grads(layer: PushPullConv2d, x: torch.Tensor, grad: torch.Tensor):
    """The layer's output for ``x`` and its gradients for input, weight, bias and alpha (those present)."""
    x = x.detach().requires_grad_(True)
    out = layer(x)
    params = [p for p in (layer.push.weight, layer.push.bias, layer.alpha) if isinstance(p, torch.Tensor)]
    grads = torch.autograd.grad(out, [x, *params], grad.to(out.dtype), allow_unused=True)
    return out, grads


def second_order_grads(layer: PushPullConv2d, x: torch.Tensor):
    """The gradients of the first gradients' squared norm (input, weight, bias, alpha): a double backward."""
    x = x.detach().requires_grad_(True)
    params = [x, layer.push.weight, layer.push.bias, layer.alpha]
    first = torch.autograd.grad(layer(x).sin().sum(), params, create_graph=True)
    return torch.autograd.grad(sum(g.square().sum() for g in first), params)
