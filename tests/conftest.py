from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest


ENV_VAR = "PUSHPULL_SHARED"


def shared_dir() -> Path | None:
    """The project's shared data folder (datasets, official checkpoints), or None.

    ``$PUSHPULL_SHARED`` when set, else ``../shared`` beside the clone (or beside the
    working directory). Users' clones usually lack it: the tests that need it skip.
    """
    env = os.environ.get(ENV_VAR)
    candidates = [Path(env)] if env else [Path(__file__).resolve().parents[2] / "shared", Path.cwd().parent / "shared"]
    return next((path for path in candidates if path.is_dir()), None)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (as torchrun gives each of its processes): tiny models on a small,
    shared machine, where OpenMP hand-offs cost more than the maths. Use with ``pytest.mark.usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder (datasets, official checkpoints); skips when absent."""
    path = shared_dir()
    if path is None:
        pytest.skip(f"shared data folder not found: set {ENV_VAR} or place it at ../shared beside the clone")
    return path


@pytest.fixture(scope="session")
def cifar10_root(shared: Path) -> Path:
    """A folder holding ``cifar-10-batches-py`` written from the shared CIFAR-10 (JPEG q75) copy.

    Materialised once into ``.pytest_cache`` (about 15 s) and reused by later runs.
    """
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1] / ".pytest_cache" / "cifar10"
    if not (root / "cifar-10-batches-py" / "batches.meta").exists():
        tmp = root.with_name(f"cifar10.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        script = shared / "datasets" / "cifar10" / "materialize.py"
        subprocess.run([sys.executable, str(script), str(tmp)], check=True, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return root


class FakeCifar10(NamedTuple):
    """What :func:`write_fake_cifar10` wrote: the root to pass as ``data``, and its test split as loaded."""

    root: Path
    images: np.ndarray  # test split, uint8 (n_test, 32, 32, 3)
    labels: np.ndarray  # test split, int64 (n_test,)


def write_fake_cifar10(root: Path, n_test: int = 8, n_train: int = 0, labels=None,
                       seed: int | np.random.Generator = 0, protocol: int = pickle.DEFAULT_PROTOCOL) -> FakeCifar10:
    """Write ``root/cifar-10-batches-py`` in the official python layout, with random images.

    One writer for every test that needs a small CIFAR-10 stand-in (they used to each carry a copy).
    ``test_batch`` holds ``n_test`` images; ``data_batch_1`` .. ``_5`` hold ``n_train`` each, or are not
    written when ``n_train`` is 0. Per batch the images come first from ``seed``, then the labels
    (random in 0..9 unless ``labels`` gives the test split's, written as ``list(labels)``: numpy integers
    stay numpy scalars in the pickle). ``seed`` may be a generator the caller goes on drawing from.
    ``protocol=2`` writes the batches as the official (Python 2) files are written.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [(f"data_batch_{i}", n_train, None) for i in range(1, 6) if n_train] + [("test_batch", n_test, labels)]
    for name, n, given in batches:
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        written = rng.integers(0, 10, n).tolist() if given is None else list(given)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.transpose(0, 3, 1, 2).reshape(n, -1), "labels": written}, f, protocol=protocol)
    return FakeCifar10(root, images, np.asarray(written, dtype=np.int64))


@pytest.fixture(scope="session")
def fake_cifar10():
    """:func:`write_fake_cifar10`, as a fixture (session scope, so module-scoped fixtures can use it too)."""
    return write_fake_cifar10


def real_photos() -> list[tuple[str, np.ndarray]]:
    """The colour photographs that ship with scikit-learn and matplotlib, at their native sizes (RGB uint8).

    china.jpg and flower.jpg (427x640), grace_hopper.jpg (600x512): natural images for the
    tests that must not run on noise, available offline wherever the project installs.
    """
    import matplotlib
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos = [(Path(name).stem, image) for name, image in zip(sample.filenames, sample.images)]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(hopper) as image:
        photos.append(("grace_hopper", np.asarray(image.convert("RGB"))))
    return photos


def write_photo_imagenet(root: Path, per_class: int = 4, size: int = 256) -> list[Path]:
    """An ImageNet-style val folder ``root/<wnid>/<name>.JPEG`` of real photo crops, ``per_class`` per wnid.

    One wnid per photo (3), crops of ``size``x``size`` (resized from a random square window
    with a fixed seed), JPEG q95 like the ImageNet val images. Returns the files, sorted.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for k, (name, photo) in enumerate(real_photos()):
        folder = root / f"n{k:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = photo.shape[:2]
        for i in range(per_class):
            side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BICUBIC)
            path = folder / f"ILSVRC2012_val_{k * per_class + i + 1:08d}.JPEG"
            crop.save(path, quality=95)
            files.append(path)
    return sorted(files)


@pytest.fixture(scope="session")
def photo_imagenet(tmp_path_factory) -> Path:
    """:func:`write_photo_imagenet` once per session (12 crops of 256x256 in 3 wnid folders); treat as read-only."""
    root = tmp_path_factory.mktemp("photo-imagenet")
    write_photo_imagenet(root)
    return root
