"""The paper's training settings (section 4.3) as versioned JSON files, and their loader.

A recipe is everything that defines *what* is trained (optimiser, schedule, augmentation,
dataset); *how* it runs (device, workers, precision, number of processes) is not part of
it. ``batch_size`` is the global batch: with N data-parallel processes each takes
``batch_size / N``, so a recipe means the same thing on one GPU or many.

    >>> recipe = load_recipe("cifar-resnet", epochs=2)
    >>> recipe.lr_at(80)   # 0-based epoch 80 is the first at lr 0.01
    0.010000000000000002
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._files import read_json
from .._names import check_name, unknown_name_message

DATASETS = ("cifar10", "cifar100", "imagenet", "digits")  # digits: the offline demo's data


@dataclass(frozen=True)
class Recipe:
    """One training setting. Every field can be overridden (``load_recipe(name, **overrides)``).

    Fields with a ``help`` are the ones the command line exposes as ``--<field-name>``.
    """

    name: str
    version: int
    dataset: str = field(metadata={"help": "cifar10, cifar100, imagenet or digits"})
    epochs: int = field(metadata={"help": "number of epochs"})
    batch_size: int = field(metadata={"help": "global batch size (split over data-parallel processes)"})
    lr: float = field(metadata={"help": "initial learning rate"})
    momentum: float = field(metadata={"help": "SGD momentum"})
    nesterov: bool = field(metadata={"help": "Nesterov momentum"})
    weight_decay: float = field(metadata={"help": "L2 weight decay"})
    milestones: tuple[int, ...] = field(metadata={"help": "0-based epochs from which lr is multiplied by gamma"})
    gamma: float = field(metadata={"help": "lr factor at each milestone"})
    crop_padding: int = field(metadata={"help": "CIFAR random crop: zero padding in px (0: no crop)"})
    flip: bool = field(metadata={"help": "random horizontal flip"})
    cutout: int = field(metadata={"help": "cutout square side in px (0: off)"})
    autoaugment: bool = field(metadata={"help": "AutoAugment (CIFAR-10 policy on CIFAR, ImageNet policy on ImageNet)"})
    crop_size: int = field(metadata={"help": "training crop side (ImageNet: random-resized crop)"})
    eval_resize: int = field(metadata={"help": "ImageNet evaluation: resize the short side, then centre-crop crop_size"})
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        problems = _type_problems(self)
        if problems:
            raise ValueError(f"recipe {self.name!r}: " + "; ".join(problems))
        object.__setattr__(self, "milestones", tuple(self.milestones))
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.dataset not in DATASETS:
            problems.append(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "gamma"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("momentum", "weight_decay", "crop_padding", "cutout"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if any(m < 0 for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)):
            problems.append(f"milestones must be increasing non-negative epochs, got {list(self.milestones)}")
        if self.nesterov and self.momentum == 0:
            problems.append("nesterov needs momentum > 0")
        if problems:
            raise ValueError(f"recipe {self.name!r}: " + "; ".join(problems))

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: ``lr * gamma ** (number of milestones <= epoch)``."""
        return self.lr * self.gamma ** sum(m <= epoch for m in self.milestones)

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with some fields changed; unknown names are an error."""
        _check_names(overrides, f"override of recipe {self.name!r}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out


def _type_problems(recipe: Recipe) -> list[str]:
    """Fields whose values have the wrong type (JSON and keyword overrides are not type-checked otherwise)."""
    expected = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
    problems = []
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if f.type == "tuple[int, ...]":
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        else:
            ok = isinstance(value, expected[f.type]) and (f.type == "bool" or not isinstance(value, bool))
        if not ok:
            problems.append(f"{f.name} must be {f.type}, got {value!r}")
    return problems


def _check_names(values: dict[str, Any], what: str) -> None:
    known = [f.name for f in dataclasses.fields(Recipe)]
    for name in values:
        if name not in known:
            raise ValueError(f"{what}: {unknown_name_message('field', name, known)}")


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    return sorted(p.name[: -len(".json")] for p in resources.files(__name__).iterdir() if p.name.endswith(".json"))


def load_recipe(recipe: str | Path | Recipe, **overrides: Any) -> Recipe:
    """A shipped recipe by name, or a JSON file by path, with ``overrides`` applied (``None`` values ignored)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(recipe, Recipe):
        return recipe.replace(**overrides)
    path = Path(recipe)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"recipe file not found: {path}")
        values = read_json(path, "recipe file ")
    elif str(recipe) in list_recipes():
        values = json.loads(resources.files(__name__).joinpath(f"{recipe}.json").read_text())  # shipped, checked by tests
    else:
        check_name(str(recipe), list_recipes(), "recipe", " (or give a .json path)")
    if not isinstance(values, dict):
        raise ValueError(f"recipe {recipe}: expected a JSON object, got {type(values).__name__}")
    _check_names(values, f"recipe {recipe}")
    missing = sorted(f.name for f in dataclasses.fields(Recipe)
                     if f.name not in values and f.default is dataclasses.MISSING)
    if missing:
        raise ValueError(f"recipe {recipe}: missing field(s) {missing}")
    return Recipe(**values).replace(**overrides)


def default_recipe(model: str) -> str:
    """The paper's recipe for a model name: DenseNet, WideResNet, ImageNet ResNet, else CIFAR ResNet."""
    name = model.lower()
    if name.startswith("densenet"):
        return "cifar-densenet"
    if name.startswith(("wrn", "wide")):
        return "cifar-wrn"
    if name.startswith(("resnet18", "resnet50", "resnet34", "resnet101", "resnet152")):
        return "imagenet-resnet"
    return "cifar-resnet"
