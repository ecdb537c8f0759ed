"""Model names -> builders, with the paper's spellings accepted and close matches on mistakes.

``create_model("resnet20_b1", aa=3)`` and ``create_model("ResNet-20-b1", aa=3)`` build the
same network. Every registered name has a plain counterpart (``resnet20_b1`` ->
``resnet20``) with exactly the same parameter count.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from torch import nn

from .._names import unknown_name_message
from ..data.constants import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from ..layers.blur import FILTER_NAMES
from .alexnet_cifar import alexnet_cifar
from .densenet_cifar import densenet_cifar
from .resnet_cifar import resnet_cifar
from .resnet_imagenet import resnet_imagenet
from .wide_resnet import wide_resnet

COMMON_OPTIONS = ("num_classes", "aa", "alpha", "scale", "trainable_alpha", "impl")
PUSHPULL_DEFAULTS = {"alpha": 1.0, "scale": 2.0, "trainable_alpha": False, "impl": "auto"}
AA_SIZES = (0, *FILTER_NAMES)  # the paper's anti-aliasing filters: none, Rect-2, Tri-3, Bin-5


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model name."""

    name: str
    family: str
    variant: str  # "plain", "pp" or "b1"
    builder: Callable[..., nn.Module] = field(repr=False)
    input_size: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    extra_options: tuple[str, ...] = ()

    @property
    def plain(self) -> str:
        """Name of the counterpart without push-pull."""
        return self.name if self.variant == "plain" else self.name.rsplit("_", 1)[0]

    @property
    def options(self) -> tuple[str, ...]:
        return COMMON_OPTIONS + self.extra_options


_REGISTRY: dict[str, ModelInfo] = {}
_CIFAR = dict(input_size=(3, 32, 32), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD)
_IMAGENET = dict(input_size=(3, 224, 224), num_classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _entries(base: str, family: str, builder: Callable[..., nn.Module],
             variants: tuple[str, ...] = ("plain", "pp", "b1"), extra_options: tuple[str, ...] = (),
             **defaults) -> dict[str, ModelInfo]:
    """The registry entries of ``base`` and its push-pull variants."""
    names = {variant: base if variant == "plain" else f"{base}_{variant}" for variant in variants}
    return {name: ModelInfo(name, family, variant, partial(builder, variant=variant), extra_options=extra_options,
                            **defaults) for variant, name in names.items()}


def _register(*args, **kwargs) -> None:
    _REGISTRY.update(_entries(*args, **kwargs))


def _wrn_entries(depth: int, width: int) -> dict[str, ModelInfo]:
    """WRN-``depth``-``width``: a few are listed, any other is built on demand by :func:`model_info`."""
    return _entries(f"wrn{depth}_{width}", "wide_resnet", partial(wide_resnet, depth, width),
                    extra_options=("drop_rate",), **_CIFAR)


for _depth in (20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", "resnet_cifar", partial(resnet_cifar, _depth), **_CIFAR)
for _depth, _width in ((16, 4), (16, 8), (28, 10), (40, 4)):
    _REGISTRY.update(_wrn_entries(_depth, _width))
for _depth, _growth in ((40, 12), (100, 12), (100, 24)):
    _register(f"densenet{_depth}_{_growth}", "densenet_cifar", partial(densenet_cifar, _depth, _growth),
              extra_options=("drop_rate",), **_CIFAR)
_register("alexnet_cifar", "alexnet_cifar", alexnet_cifar, ("plain", "pp"), extra_options=("drop_rate",), **_CIFAR)
for _depth in (18, 50):
    _register(f"resnet{_depth}", "resnet_imagenet", partial(resnet_imagenet, _depth), **_IMAGENET)

_ALIASES = {"alexnet": "alexnet_cifar", "alexnet_pp": "alexnet_cifar_pp"}
EXTERNAL_PREFIXES = ("torchvision:", "timm:")  # models named in another library, not in this registry


def is_external(spec: str) -> bool:
    """Whether ``spec`` names a torchvision or timm model (``torchvision:resnet18``): no pushpull weights for it."""
    return spec.startswith(EXTERNAL_PREFIXES)


def canonical_name(name: str) -> str:
    """Map the paper's spellings onto registry names: ``"WRN-28-10-pp"`` -> ``"wrn28_10_pp"``."""
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    key = re.sub(r"^(wide_?resnet|wrn)_?", "wrn", key)
    key = re.sub(r"^(resnet|densenet(?:_?bc)?)_?(?=\d)", lambda m: m.group(1).replace("_", "").replace("bc", ""), key)
    return _ALIASES.get(key, key)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted naturally, optionally filtered by an fnmatch ``pattern``."""
    names = sorted(_REGISTRY, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    if pattern is None:
        return names
    pattern = pattern.lower()
    return [n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n, canonical_name(pattern))]


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name`` (paper spellings accepted); ``ValueError`` with close matches."""
    key = canonical_name(name)
    wrn = re.fullmatch(r"wrn(\d+)_(\d+)(?:_pp|_b1)?", key)
    if key not in _REGISTRY and wrn:  # WideResNet of any depth and width (not listed)
        return _wrn_entries(*map(int, wrn.groups()))[key]
    if key not in _REGISTRY:
        raise ValueError(unknown_name_message("model", name, _REGISTRY, " (see pushpull.list_models() or `pushpull models`)"))
    return _REGISTRY[key]


def _check_options(info: ModelInfo, kwargs: dict) -> None:
    for key in kwargs:
        if key not in info.options:
            raise TypeError(unknown_name_message(f"option of {info.name}", key, info.options))
    num_classes = kwargs.get("num_classes", 1)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    aa = kwargs.get("aa", 0)
    if isinstance(aa, bool) or aa not in AA_SIZES:
        raise ValueError(f"aa (anti-aliasing filter) must be 0 (off), 2 (Rect-2), 3 (Tri-3) or 5 (Bin-5), got {aa!r}")
    alpha, scale = kwargs.get("alpha", 1.0), kwargs.get("scale", 2.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if info.variant == "plain":
        changed = [k for k, v in PUSHPULL_DEFAULTS.items() if k in kwargs and kwargs[k] != v]
        if changed:
            raise ValueError(f"{info.name} has no push-pull layer, so option(s) {', '.join(changed)} do not apply; "
                             f"use {info.name}_pp or another push-pull variant")


def create_model(name: str, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """Build a registered model (in training mode, freshly initialised unless ``pretrained``).

    Options: ``num_classes``, ``aa`` (0 or blur size 2/3/5), and for push-pull variants
    ``alpha``, ``scale``, ``trainable_alpha``, ``impl``; some families also take
    ``drop_rate``. Models take normalised float tensors (N, 3, H, W).

    ``pretrained=True`` loads the model's default weights (the original authors' checkpoint),
    a string the weights of that name (``pushpull.list_weights()``), through
    :func:`pushpull.load_model`: downloaded and converted once, then read from the cache.
    Their normalisation is ``pushpull.get_weights(NAME).mean/std``; options must agree
    with what the weights were trained with.
    """
    if pretrained is not False:
        from .load import load_model  # deferred: the loader is built on this registry
        from .weights import pretrained_weights

        return load_model(pretrained_weights(name, pretrained).name, model_kwargs=kwargs).model.train()
    info = model_info(name)
    _check_options(info, kwargs)
    if info.variant == "plain":
        kwargs = {k: v for k, v in kwargs.items() if k not in PUSHPULL_DEFAULTS}
    return info.builder(**kwargs)


__all__ = ["ModelInfo", "canonical_name", "create_model", "list_models", "model_info"]
