"""Bring push-pull to any ConvNet: replace ``nn.Conv2d`` modules in place by ``PushPullConv2d``.

Scopes: ``"stem"`` (the first convolution executed), ``"first_stage"`` (the stem and every
K>1 convolution before the first down-sampling after it: the paper's ``-b1``), ``"all"``
(every convolution with K>1), or a callable ``(name, module) -> bool``. The stem and the
first stage are found by running the model once on a dummy input and recording the
convolutions in execution order, so they work for torchvision and timm models whose
module order differs from the order of computation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor, nn

from ..layers import PushPullConv2d

Scope = Union[str, Callable[[str, nn.Module], bool]]
SCOPES = ("stem", "first_stage", "all")


@dataclass(frozen=True)
class Replacement:
    """One convolution that became push-pull."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    pull_size: tuple[int, int]


class ConversionReport(list):
    """The replacements made (a list of :class:`Replacement`) plus the convolutions skipped."""

    def __init__(self, replaced: list[Replacement], skipped: list[str]) -> None:
        super().__init__(replaced)
        self.skipped = skipped

    @property
    def names(self) -> list[str]:
        return [r.name for r in self]

    def __str__(self) -> str:
        lines = [f"{len(self)} convolution(s) replaced by push-pull:"]
        for r in self:
            lines.append(f"  {r.name}: {r.in_channels}->{r.out_channels}, push {r.kernel_size[0]}x{r.kernel_size[1]}, "
                         f"pull {r.pull_size[0]}x{r.pull_size[1]}, stride {r.stride[0]}, groups {r.groups}")
        if self.skipped:
            lines.append(f"skipped (Conv2d subclasses with their own forward): {', '.join(self.skipped)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Call:
    name: str
    kernel_size: tuple[int, int]
    in_size: tuple[int, int]
    out_size: tuple[int, int]


def trace_convolutions(model: nn.Module, example_input: Tensor | None = None) -> list[_Call]:
    """Convolutions in the order the forward pass runs them, with input/output spatial sizes.

    Runs ``model`` once in eval mode under ``no_grad`` (running statistics are untouched).
    The default input is zeros of shape (1, 3, 64, 64) (or C channels, C those of the first
    registered convolution, if RGB does not fit).
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no nn.Conv2d module to convert")
    if example_input is not None:
        return _run_traced(model, convs, example_input)
    # An image model most likely takes RGB; else the channels of the first registered conv.
    ref = next(model.parameters())
    channels = list(dict.fromkeys([3, convs[0][1].in_channels]))
    for i, c in enumerate(channels):
        try:
            return _run_traced(model, convs, torch.zeros(1, c, 64, 64, device=ref.device, dtype=ref.dtype))
        except ValueError:
            if i == len(channels) - 1:
                raise
    raise AssertionError("unreachable")


def _run_traced(model: nn.Module, convs: list[tuple[str, nn.Conv2d]], example_input: Tensor) -> list[_Call]:
    calls: list[_Call] = []
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, name=n: calls.append(
            _Call(name, tuple(mod.kernel_size), tuple(inp[0].shape[-2:]), tuple(out.shape[-2:]))))
        for n, m in convs]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    except Exception as err:
        raise ValueError(f"could not trace the model on an input of shape {tuple(example_input.shape)} "
                         f"({type(err).__name__}: {err}); pass example_input=... or a callable scope") from err
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return calls


def first_stage_names(calls: list[_Call]) -> list[str]:
    """The stem, then every K>1 convolution up to the first one that down-samples after it.

    The first stage's resolution is the output size of the first convolution after the
    stem; convolutions on pooled (1x1) maps, such as squeeze-excitation, are ignored.
    """
    names = [calls[0].name]
    stage_size = None
    for call in calls[1:]:
        if call.in_size == (1, 1):
            continue
        if stage_size is None:
            stage_size = call.out_size
        if call.out_size != stage_size:
            break
        if max(call.kernel_size) > 1:
            names.append(call.name)
    return names


def _select(model: nn.Module, scope: Scope, example_input: Tensor | None) -> Callable[[str, nn.Module], bool]:
    if callable(scope):
        return scope
    if scope == "all":
        return lambda name, m: max(m.kernel_size) > 1
    if scope in ("stem", "first_stage"):
        calls = trace_convolutions(model, example_input)
        chosen = {calls[0].name} if scope == "stem" else set(first_stage_names(calls))
        return lambda name, m: name in chosen
    raise ValueError(f"scope must be one of {', '.join(map(repr, SCOPES))} or a callable, got {scope!r}")


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in place of ``model``'s submodule ``name`` (a dotted path)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def to_push_pull(conv: nn.Conv2d, keep_weights: bool = True, **pushpull_kwargs) -> PushPullConv2d:
    """A ``PushPullConv2d`` with the geometry (and, if ``keep_weights``, the weights) of ``conv``."""
    ref = conv.weight
    layer = PushPullConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                           device=ref.device, dtype=ref.dtype, **pushpull_kwargs)
    if keep_weights:
        with torch.no_grad():
            layer.push.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.push.bias.copy_(conv.bias)
    layer.push.weight.requires_grad_(ref.requires_grad)
    layer.train(conv.training)
    return layer


def convert(model: nn.Module, scope: Scope = "stem", keep_weights: bool = True, *,
            example_input: Tensor | None = None, **pushpull_kwargs) -> ConversionReport:
    """Replace ``nn.Conv2d`` modules of ``model`` in place by ``PushPullConv2d``; return what changed.

    ``pushpull_kwargs`` (``scale``, ``alpha``, ``trainable_alpha``, ``impl``) go to the new
    layers. With a fixed alpha the parameter count is unchanged. ``keep_weights=False``
    re-initialises the push kernels (PyTorch's default convolution init). ``nn.Conv2d``
    subclasses (e.g. timm's ``Conv2dSame``, ``StdConv2d``) compute differently and are skipped.
    """
    if pushpull_kwargs.get("dual_output"):
        raise ValueError("convert() does not support dual_output=True: it doubles the channels the next layer sees")
    unknown = set(pushpull_kwargs) - {"scale", "alpha", "trainable_alpha", "impl", "dual_output"}
    if unknown:
        raise TypeError(f"unknown push-pull option(s): {', '.join(sorted(unknown))} "
                        "(expected scale, alpha, trainable_alpha, impl)")
    if isinstance(model, nn.Conv2d):
        raise ValueError("convert() replaces convolutions inside a model; for a bare nn.Conv2d use to_push_pull(conv)")
    wanted = _select(model, scope, example_input)
    replaced: list[Replacement] = []
    skipped: list[str] = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Conv2d) or not wanted(name, module):
            continue
        if type(module) is not nn.Conv2d:
            skipped.append(name)
            continue
        layer = to_push_pull(module, keep_weights, **pushpull_kwargs)
        replace_module(model, name, layer)
        replaced.append(Replacement(name, module.in_channels, module.out_channels, tuple(module.kernel_size),
                                    tuple(module.stride), module.groups, layer.pull_size))
    return ConversionReport(replaced, skipped)
