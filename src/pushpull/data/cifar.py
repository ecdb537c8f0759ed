"""Clean CIFAR-10/100 from the standard python-pickle layout (``cifar-10-batches-py``).

The official checksums are not enforced, so re-packed copies (such as a JPEG-q75 copy)
load too. The pickles are read with a restricted unpickler that admits only the plain
containers and numpy arrays such a file holds.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np

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
