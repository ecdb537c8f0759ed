"""Clean CIFAR-10/100 from the standard python-pickle layout (``cifar-10-batches-py``), as torch datasets.

The official checksums are not enforced, so re-packed copies (such as a JPEG-q75 copy)
load too. The pickles are read with a restricted unpickler that admits only the plain
containers and numpy arrays such a file holds.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..recipes import Recipe

Dataset = Literal["cifar10", "cifar100"]

_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickler for the CIFAR batches: numpy arrays and builtins only, nothing executable."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _read_batch(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch file missing: {path}")
    with path.open("rb") as f:
        return _ArraysOnly(f, encoding="latin1").load()


def find_cifar_dir(root: str | Path, dataset: Dataset = "cifar10") -> Path:
    """The folder holding the batches: ``root`` itself or ``root/cifar-10-batches-py``."""
    root = Path(root)
    folder = _LAYOUT[dataset][0]
    for candidate in (root / folder, root):
        if (candidate / _LAYOUT[dataset][2][0]).is_file():
            return candidate
    raise FileNotFoundError(f"no {dataset} found under {root}: expected {root / folder}/"
                            f"{_LAYOUT[dataset][2][0]} (the official python layout)")


def load_cifar(root: str | Path, train: bool = False, dataset: Dataset = "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, 32, 32, 3) and labels as int64 (N,), in file order."""
    if dataset not in _LAYOUT:
        raise ValueError(f"dataset must be one of {sorted(_LAYOUT)}, got {dataset!r}")
    folder = find_cifar_dir(root, dataset)
    _, train_files, test_files, label_key = _LAYOUT[dataset]
    images, labels = [], []
    for name in train_files if train else test_files:
        batch = _read_batch(folder / name)
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{folder / name}: expected rows of 3072 bytes, got array of shape {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


# The usual CIFAR-100 training-set statistics, in [0, 1] units.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def cifar_normalization(dataset: Dataset = "cifar10") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the models of ``dataset`` are trained with (stored with every saved model)."""
    from .constants import CIFAR10_MEAN, CIFAR10_STD

    return {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}[dataset]


class ImageArrayDataset(torch.utils.data.Dataset):
    """uint8 (N, H, W, C) images in memory as (transformed CHW tensor, int label) pairs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Tensor], Tensor] | None = None):
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 (N, H, W, C) images and N labels, got {images.dtype} {images.shape} "
                             f"and {len(labels)} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


class Cutout(torch.nn.Module):
    """Zero a ``size`` x ``size`` square (clipped at the borders) at a uniformly random centre.

    As DeVries & Taylor (2017): applied after normalisation, so the square is the mean colour.
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, image: Tensor) -> Tensor:
        h, w = image.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        top, left = max(cy - self.size // 2, 0), max(cx - self.size // 2, 0)
        image = image.clone()
        image[..., top: cy + self.size - self.size // 2, left: cx + self.size - self.size // 2] = 0
        return image

    def extra_repr(self) -> str:
        return f"size={self.size}"


def cifar_transform(recipe: Recipe | None, mean: Sequence[float], std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    """uint8 CHW tensor -> normalised float tensor; with a recipe, its training augmentation too.

    Order as in the WideResNet + AutoAugment + cutout literature: crop, flip, AutoAugment,
    to float, normalise, cutout.
    """
    from torchvision.transforms import v2

    steps: list[Callable[[Tensor], Tensor]] = []
    if recipe is not None:
        if recipe.crop_padding:
            steps.append(v2.RandomCrop(recipe.crop_size, padding=recipe.crop_padding))
        if recipe.flip:
            steps.append(v2.RandomHorizontalFlip())
        if recipe.autoaugment:  # on PIL images: ~50x faster than torchvision's tensor path on the CPU
            steps += [v2.ToPILImage(), v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), v2.PILToTensor()]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if recipe is not None and recipe.cutout:
        steps.append(Cutout(recipe.cutout))
    return v2.Compose(steps)


def cifar_datasets(root: str | Path, recipe: Recipe, download: bool = False) -> tuple[ImageArrayDataset, ImageArrayDataset]:
    """(augmented training set, plain test set) of ``recipe.dataset`` under ``root``.

    With ``download`` the official archive is fetched by torchvision first when missing.
    """
    if recipe.dataset not in _LAYOUT:
        raise ValueError(f"cifar_datasets: recipe {recipe.name!r} is for {recipe.dataset!r}, not CIFAR")
    if download:
        _download(root, recipe.dataset)
    mean, std = cifar_normalization(recipe.dataset)  # type: ignore[arg-type]
    train = ImageArrayDataset(*load_cifar(root, True, recipe.dataset), cifar_transform(recipe, mean, std))  # type: ignore[arg-type]
    test = ImageArrayDataset(*load_cifar(root, False, recipe.dataset), cifar_transform(None, mean, std))  # type: ignore[arg-type]
    return train, test


def _download(root: str | Path, dataset: Dataset) -> None:
    try:
        find_cifar_dir(root, dataset)
        return
    except FileNotFoundError:
        pass
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[dataset]
    made = not Path(root).exists()
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except OSError as err:  # urllib's URLError among them: offline, DNS, a proxy, a full disk
        if made and Path(root).is_dir() and not any(Path(root).iterdir()):
            Path(root).rmdir()  # leave no empty folder behind
        reason = getattr(err, "reason", None) or err.strerror or err
        raise OSError(f"cannot download {dataset} into {root} ({reason}); without network put the official "
                      f"{_LAYOUT[dataset][0]}/ folder there") from None
