"""Read and validate the official -C / -P layouts as torch Datasets.

Layouts (Hendrycks & Dietterich's releases, and what ``pushpull make-c`` / ``make-p`` write):

- CIFAR-10/100-C: ``<root>/<corruption>.npy`` uint8 (5·N, 32, 32, 3), severity s in rows
  [(s−1)·N, s·N), and ``<root>/labels.npy`` (5·N,). A ``pushpull-benchmark.json`` manifest,
  when present, says which severities a locally generated file holds.
- CIFAR-10/100-P: ``<root>/<perturbation>.npy`` uint8 (N, T, 32, 32, 3) (+ ``labels.npy``).
- ImageNet-C: ``<root>/<corruption>/<severity>/<wnid>/<file>.JPEG``.
- ImageNet-P: ``<root>/<perturbation>/<wnid>/<file>.mp4`` (decoded with PyAV, extra ``[video]``).

Every item is ``(transform(uint8 tensor), label)``: (3, H, W) for -C, (T, 3, H, W) for -P.
The default transform scales to float in [0, 1]; normalisation is the caller's. Missing
or truncated files fail with an error naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .._files import read_json
from .._names import split_names

SEVERITIES = (1, 2, 3, 4, 5)
MANIFEST = "pushpull-benchmark.json"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
IMAGENET_C_JPEG = {"format": "JPEG", "quality": 85, "optimize": True}  # how the ImageNet-C release stores images

Transform = Callable[[torch.Tensor], object]


class DamagedFileError(ValueError):
    """A file that exists but cannot be read in full: cut short, or not the format its name says.

    Generators catch it to redo their own damaged outputs; readers let it reach the user.
    """


def check_severities(severities: str | Sequence[int]) -> list[int]:
    """Severities from a list or a comma string (``"1,3,5"``), each one of 1..5, in order, once each."""
    items = split_names(severities) if isinstance(severities, str) else list(severities)
    try:
        values = [int(s) for s in items]
    except (TypeError, ValueError):
        values = []
    if not values or any(v not in SEVERITIES for v in values):
        raise ValueError(f"severities must be among {', '.join(map(str, SEVERITIES))}, such as 1,3,5; "
                         f"got {severities!r}")
    return list(dict.fromkeys(values))


def check_severity(severity: int) -> int:
    """One severity, an integer (not a bool) in 1..5, as an ``int``: the rule of every single-severity call."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return int(severity)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (the default transform)."""
    return x.float().div_(255)


def check_npy(path: str | Path, shape: Sequence[int | None] | None = None) -> tuple[int, ...]:
    """The shape of a uint8 ``.npy`` after checking its header, ``shape`` (None = any) and its length.

    Catches what ``np.load(mmap_mode='r')`` reports obscurely: a missing file, a wrong
    dtype or shape, and a file cut short by an interrupted copy or download.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file missing: {path}")
    with path.open("rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            header = read(f)
        except ValueError as err:
            raise DamagedFileError(f"{path} is not a valid .npy file: {err}") from None
        offset = f.tell()
    found, fortran, dtype = header
    if dtype != np.uint8 or fortran:
        raise ValueError(f"{path}: expected a C-ordered uint8 array, found {dtype} (fortran_order={fortran})")
    if shape is not None and (len(found) != len(shape) or any(e is not None and e != s for e, s in zip(shape, found))):
        want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
        raise ValueError(f"{path}: expected shape {want}, found {found}")
    expected, size = offset + int(np.prod(found)), path.stat().st_size
    if size < expected:
        raise DamagedFileError(f"{path} is truncated: {size} bytes, its header promises {expected} "
                               f"(shape {found}); regenerate or re-download it")
    return tuple(found)


def open_npy(path: str | Path, shape: Sequence[int | None] | None = None) -> np.ndarray:
    """A read-only memory map of a checked uint8 ``.npy``."""
    check_npy(path, shape)
    return np.load(path, mmap_mode="r")


def read_labels(path: str | Path) -> np.ndarray:
    """A ``labels.npy`` as int64; a file cut short or not a ``.npy`` is a :class:`DamagedFileError` naming it."""
    try:
        return np.load(path, allow_pickle=False).astype(np.int64)
    except (ValueError, EOFError) as err:
        with open(path, "rb") as f:
            npy = f.read(6) == b"\x93NUMPY"
        reason = str(err).splitlines()[0] if npy else "not a .npy file"
        raise DamagedFileError(f"{path} cannot be read ({reason}); regenerate or re-download it") from None


def read_manifest(root: str | Path) -> dict:
    """The generation manifest of a local benchmark folder, or {} for an official release."""
    path = Path(root) / MANIFEST
    return read_json(path, "manifest ") if path.is_file() else {}


def _labels(root: Path, rows: int, labels: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if labels is None:
        path = root / "labels.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: pass labels= (e.g. from pushpull.data.cifar.load_cifar)")
        labels = read_labels(path)
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (rows,):
        raise ValueError(f"{root}: {len(labels)} labels for {rows} rows")
    return labels


class CorruptedCIFAR(Dataset):
    """CIFAR-10/100-C: one corruption, all or chosen severities, memory-mapped."""

    def __init__(self, root: str | Path, corruption: str, severities: Sequence[int] | None = None,
                 transform: Transform | None = to_float) -> None:
        self.root = Path(root)
        stored = tuple(read_manifest(self.root).get("severities", SEVERITIES))
        self.severities = tuple(stored if severities is None else severities)
        missing = sorted(set(self.severities) - set(stored))
        if missing:
            raise ValueError(f"{self.root}: severities {missing} not stored (it holds {list(stored)})")
        self.images = open_npy(self.root / f"{corruption}.npy", (None, 32, 32, 3))
        rows = len(self.images)
        if rows % len(stored):
            raise ValueError(f"{self.root / f'{corruption}.npy'}: {rows} rows do not split into "
                             f"{len(stored)} severities")
        self.per_severity = rows // len(stored)
        all_labels = _labels(self.root, rows, None)
        blocks = [stored.index(s) for s in self.severities]
        self.rows = np.concatenate([np.arange(b * self.per_severity, (b + 1) * self.per_severity) for b in blocks])
        self.labels = all_labels[self.rows]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[object, int]:
        image = torch.from_numpy(np.array(self.images[self.rows[i]])).permute(2, 0, 1)
        return (self.transform(image) if self.transform else image), int(self.labels[i])

    def severity_of(self, i: int) -> int:
        """The severity of item ``i`` (items are ordered by severity)."""
        return self.severities[i // self.per_severity]


class PerturbedCIFAR(Dataset):
    """CIFAR-10/100-P: one perturbation; items are (T, 3, 32, 32) sequences."""

    def __init__(self, root: str | Path, perturbation: str, labels: Sequence[int] | np.ndarray | None = None,
                 transform: Transform | None = to_float) -> None:
        self.root = Path(root)
        self.sequences = open_npy(self.root / f"{perturbation}.npy", (None, None, 32, 32, 3))
        self.labels = _labels(self.root, len(self.sequences), labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> tuple[object, int]:
        frames = torch.from_numpy(np.array(self.sequences[i])).permute(0, 3, 1, 2)
        return (self.transform(frames) if self.transform else frames), int(self.labels[i])


def _class_folders(folder: Path, classes: Sequence[str] | None) -> dict[str, int]:
    if not folder.is_dir():
        raise FileNotFoundError(f"benchmark folder missing: {folder}")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if classes is None else list(classes)
    if not names:
        raise FileNotFoundError(f"{folder} holds no class folders (<wnid>/)")
    return {name: i for i, name in enumerate(names)}


def _samples(folder: Path, class_index: dict[str, int], suffixes: tuple[str, ...]) -> list[tuple[Path, int]]:
    samples = [(path, label) for wnid, label in class_index.items() if (folder / wnid).is_dir()
               for path in sorted((folder / wnid).iterdir()) if path.suffix.lower() in suffixes]
    if not samples:
        raise FileNotFoundError(f"no {'/'.join(suffixes)} files under {folder}/<wnid>/")
    return samples


class CorruptedImageNet(Dataset):
    """ImageNet-C: ``<root>/<corruption>/<severity>/<wnid>/*.JPEG``, labels by sorted wnid.

    Pass ``classes`` (the 1000 wnids in order) when a folder may lack some classes, so
    labels keep their meaning.
    """

    def __init__(self, root: str | Path, corruption: str, severity: int, classes: Sequence[str] | None = None,
                 transform: Transform | None = to_float) -> None:
        folder = Path(root) / corruption / str(severity)
        self.class_to_idx = _class_folders(folder, classes)
        self.samples = _samples(folder, self.class_to_idx, IMAGE_SUFFIXES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[object, int]:
        path, label = self.samples[i]
        image = torch.from_numpy(np.array(read_image(path))).permute(2, 0, 1)
        return (self.transform(image) if self.transform else image), label


def read_image(path: str | Path):  # noqa: ANN201 - PIL.Image.Image, imported lazily
    """An image file decoded in full, as RGB; ``DamagedFileError`` naming the file when it cannot be.

    PIL reads a truncated JPEG's header happily and fails later without the file's name;
    every image the package reads (clean val sets, ImageNet-C) goes through here instead.
    """
    from PIL import Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"image file missing: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert loads every pixel: a cut file fails here
    except OSError as err:  # UnidentifiedImageError is an OSError too
        raise DamagedFileError(f"cannot decode {path}: {err}; replace or remove the file") from None


def encode_image(pixels: np.ndarray, **save) -> bytes:
    """uint8 (H, W, 3) pixels as the bytes of an image file; ``save``: PIL's options (``format`` among them)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, **save)
    return buffer.getvalue()


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video as uint8 (T, H, W, 3) RGB (needs PyAV: ``pip install pushpull[video]``)."""
    try:
        import av
    except ImportError:
        raise ImportError("reading ImageNet-P .mp4 files needs PyAV: pip install 'pushpull[video]'") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file missing: {path}")
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError) as err:
        raise DamagedFileError(f"cannot decode {path}: {err}") from None
    if not frames:
        raise DamagedFileError(f"{path} holds no video frames (truncated?)")
    return np.stack(frames)


class PerturbedImageNet(Dataset):
    """ImageNet-P: ``<root>/<perturbation>/<wnid>/*.mp4``; items are (T, 3, H, W) sequences."""

    def __init__(self, root: str | Path, perturbation: str, classes: Sequence[str] | None = None,
                 transform: Transform | None = to_float) -> None:
        folder = Path(root) / perturbation
        self.class_to_idx = _class_folders(folder, classes)
        self.samples = _samples(folder, self.class_to_idx, (".mp4",))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[object, int]:
        path, label = self.samples[i]
        frames = torch.from_numpy(read_video(path)).permute(0, 3, 1, 2)
        return (self.transform(frames) if self.transform else frames), label
