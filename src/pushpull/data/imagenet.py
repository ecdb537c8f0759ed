"""ImageNet from the standard folder layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``), as torchvision ImageFolders.

Training: random-resized crop + flip (+ AutoAugment, ImageNet policy); evaluation: resize
the short side, centre crop. Images are normalised with the ImageNet statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .constants import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

    from ..recipes import Recipe


def imagenet_transform(recipe: Recipe, train: bool) -> Callable:
    """PIL image -> normalised float tensor, with the recipe's training augmentation when ``train``."""
    import torch
    from torchvision.transforms import v2

    if train:
        steps = [v2.RandomResizedCrop(recipe.crop_size, antialias=True)]
        steps += [v2.RandomHorizontalFlip()] if recipe.flip else []
        steps += [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)] if recipe.autoaugment else []
    else:
        steps = [v2.Resize(recipe.eval_resize, antialias=True), v2.CenterCrop(recipe.crop_size)]
    steps += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def imagenet_datasets(root: str | Path, recipe: Recipe) -> tuple[ImageFolder, ImageFolder]:
    """(training set, validation set) under ``root``; both must hold the same class folders."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"ImageNet {split} folder not found: {root / split} (expected "
                                    f"{root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG)")
    train = ImageFolder(str(root / "train"), transform=imagenet_transform(recipe, train=True))
    val = ImageFolder(str(root / "val"), transform=imagenet_transform(recipe, train=False))
    if train.classes != val.classes:
        raise ValueError(f"{root}: train/ has {len(train.classes)} classes and val/ {len(val.classes)}; "
                         "they must be the same folders")
    return train, val
