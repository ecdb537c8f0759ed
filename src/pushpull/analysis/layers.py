"""Finding the convolutions of a model and reading what they compute.

The analyses look at "conv-like" layers: ``nn.Conv2d`` and ``PushPullConv2d``. The
``.push`` convolution inside a push-pull layer is part of that layer, not a layer of its
own, so it is never listed separately.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._names import unknown_name_message
from ..layers import PushPullConv2d


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's ``nn.Conv2d`` and ``PushPullConv2d`` layers by name, in registration order."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, PushPullConv2d):
            found[name] = module
        elif isinstance(module, nn.Conv2d) and not _inside_push_pull(model, name):
            found[name] = module
    return found


def _inside_push_pull(model: nn.Module, name: str) -> bool:
    parent, _, _ = name.rpartition(".")
    return bool(parent) and isinstance(model.get_submodule(parent), PushPullConv2d)


def select_layers(model: nn.Module, patterns: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """Conv-like layers whose names match any glob pattern; the first one when no pattern is given.

    ``"first"`` names the first conv-like layer, so ``["first", "layer1.*"]`` works too.
    """
    layers = conv_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d or PushPullConv2d layer")
    first = next(iter(layers))
    if not patterns:
        return {first: layers[first]}
    chosen: dict[str, nn.Module] = {}
    for pattern in patterns:
        names = [first] if pattern == "first" else [n for n in layers if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise ValueError(unknown_name_message("convolution", pattern, list(layers),
                                                  " (a module name of the model, or a glob pattern)"))
        chosen.update((n, layers[n]) for n in names)
    return {n: layers[n] for n in layers if n in chosen}  # model order


def layer_kernel(layer: nn.Module) -> Tensor:
    """The learned kernel (out, in/groups, kh, kw) of a conv-like layer: the push kernel for push-pull."""
    if not isinstance(layer, (nn.Conv2d, PushPullConv2d)):
        raise TypeError(f"expected an nn.Conv2d or PushPullConv2d, got {type(layer).__name__}")
    return layer.weight.detach()


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the wanted output is known."""


@torch.no_grad()
def layer_io(model: nn.Module, layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The input and output of ``layer`` when ``model`` runs on ``x``; the rest of the model is not run."""
    captured: list[tuple[Tensor, Tensor]] = []

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        captured.append((inputs[0].detach(), output.detach()))
        raise _Captured

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"the layer {type(layer).__name__} is not used by the model's forward pass")
    return captured[0]


def layer_output(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    """The output of ``layer`` when ``model`` runs on ``x``; the rest of the model is not run."""
    return layer_io(model, layer, x)[1]
