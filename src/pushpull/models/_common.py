"""Pieces shared by the model families: anti-aliased down-sampling, init, push-pull variants."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from ..layers.blur import blurred
from .convert import convert

VARIANTS = ("plain", "pp", "b1")


def conv_downsample(in_channels: int, out_channels: int, kernel_size: int, stride: int, aa: int) -> nn.Module:
    """A bias-free ``kernel_size`` conv with ``stride``; with anti-aliasing ``blur(stride) -> conv(stride 1)``."""
    if stride == 1 or not aa:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
    return blurred(nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False), aa, stride)


def he_init(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions and unit/zero BatchNorm, as the original CIFAR code."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def apply_variant(model: nn.Module, variant: str, stem: Iterable[str], first_stage: Callable[[str], bool],
                  **pushpull_kwargs) -> nn.Module:
    """Turn ``model`` into its ``-pp`` (the ``stem`` convs) or ``-b1`` (plus the K>1 convs of the first stage).

    Weights are kept, so a variant starts from the same initialisation as its plain model.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "plain":
        return model
    stem = set(stem)

    def chosen(name: str, m: nn.Module) -> bool:
        return name in stem or (variant == "b1" and first_stage(name) and max(m.kernel_size) > 1)

    report = convert(model, chosen, keep_weights=True, **pushpull_kwargs)
    missing = stem - set(report.names)
    if missing:
        raise RuntimeError(f"stem convolution(s) not found: {sorted(missing)}")
    return model
