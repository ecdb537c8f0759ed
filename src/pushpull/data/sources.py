"""Where the evaluator's uint8 images come from: the clean test set, -C/-P folders, or generated.

The names the evaluator branches on are enums here, checked once: benchmark names
(``cifar10-c``, ...), their dataset and its corruption/perturbation parameter table, and
the kinds of result unit. They are ``str`` enums, so results files keep plain strings.

Folders are read with the -C/-P readers of :mod:`pushpull.data.robustness_sets`; a source
only decides which test images to evaluate (all, the images a ``make-c/-p --limit``
folder holds, then ``limit`` strided over those) and says so when that is fewer than asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

# --limit strides the way make-c/-p --limit does: _coverage relies on it to find a subset folder's images.
from .generate import select_indices as strided_indices
from .robustness_sets import (IMAGENET_C_JPEG, CorruptedCIFAR, CorruptedImageNet, PerturbedImageNet, open_npy,
                              read_image, read_labels, read_video)

Chunk = tuple[np.ndarray, "np.ndarray | None", int]  # (uint8 images, labels or None for -P, frames)


class _StrEnum(str, Enum):
    """Compares, hashes, formats and serialises (JSON) as its value."""

    def __str__(self) -> str:
        return self.value


class ParamTable(_StrEnum):
    """The corruption/perturbation parameter table a dataset's images are made with (``corruptions.TABLES``)."""

    CIFAR = "cifar"
    IMAGENET = "imagenet"
    TINY_IMAGENET = "tinyimagenet"
    IMAGENET64 = "imagenet64"


class BenchmarkDataset(_StrEnum):
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    IMAGENET = "imagenet"

    @property
    def params(self) -> ParamTable:
        """CIFAR-100-C was made with CIFAR-10-C's table."""
        return ParamTable.IMAGENET if self is BenchmarkDataset.IMAGENET else ParamTable.CIFAR

    @property
    def split(self) -> str:
        return "val" if self is BenchmarkDataset.IMAGENET else "test"

    @property
    def c(self) -> Benchmark:
        return Benchmark(f"{self.value}-c")

    @property
    def p(self) -> Benchmark:
        return Benchmark(f"{self.value}-p")


class Benchmark(_StrEnum):
    CIFAR10_C = "cifar10-c"
    CIFAR10_P = "cifar10-p"
    CIFAR100_C = "cifar100-c"
    CIFAR100_P = "cifar100-p"
    IMAGENET_C = "imagenet-c"
    IMAGENET_P = "imagenet-p"

    @property
    def dataset(self) -> BenchmarkDataset:
        return BenchmarkDataset(self.value.rsplit("-", 1)[0])

    @property
    def corrupted(self) -> bool:
        """-C (corruptions), else -P (perturbations)."""
        return self.value.endswith("-c")


BENCHMARKS = tuple(b.value for b in Benchmark)


class UnitKind(_StrEnum):
    CLEAN = "clean"
    CORRUPTION = "corruption"
    PERTURBATION = "perturbation"


@dataclass(frozen=True)
class Unit:
    """One entry of the results: the clean set, a corruption at a severity, or a perturbation."""

    kind: UnitKind
    name: str = ""
    severity: int = 0

    @property
    def label(self) -> str:
        if self.kind is UnitKind.CORRUPTION:
            return f"{self.name} s{self.severity}"
        return self.name or self.kind.value


# The official CIFAR test files' md5 (as distributed by the dataset's authors; torchvision checks the same).
OFFICIAL_TEST_MD5 = {BenchmarkDataset.CIFAR10: ("test_batch", "40351d587109b95175f43aff81a1287e"),
                     BenchmarkDataset.CIFAR100: ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")}


def official_cifar_test(root: str | Path, dataset: BenchmarkDataset) -> tuple[bool, str | None]:
    """Whether ``root``'s test file is the official one (its md5), and a note for the results when not."""
    from .cifar import find_cifar_dir

    name, official = OFFICIAL_TEST_MD5[dataset]
    path = find_cifar_dir(root, dataset.value) / name
    digest = hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - the published checksum is an md5
    if digest == official:
        return True, None
    return False, (f"{path} is not the official {dataset.value} test file (md5 {digest}, official {official}): "
                   f"a re-encoded or modified copy; do not compare these numbers with published ones")


def _shortfall(limit: int | None, n: int, covered: int, evaluated: int, held: list[tuple[Path, int]]) -> str | None:
    """Why fewer images are evaluated than asked (None when they are not): one sentence for the results."""
    asked = n if limit is None else limit
    if evaluated >= asked:
        return None
    held = [(folder, rows) for folder, rows in held if rows < n]  # the folders that cut the set
    what = f"asked for {asked} images (limit {limit})" if limit is not None else f"asked for all {n} test images"
    if not held:
        why = f"the test split holds {n}"
    elif len(held) == 1:
        why = f"{held[0][0]} holds {held[0][1]} of the {n} test images (a make-c/-p --limit folder)"
    else:
        why = (" and ".join(f"{folder} holds {rows}" for folder, rows in held)
               + f" of the {n} test images; {covered} are in both")
    return f"{what}, evaluating {evaluated}: {why}"


def _select(n: int, covered: np.ndarray, limit: int | None, held: list[tuple[Path, int]],
            folders: str) -> tuple[np.ndarray, str | None]:
    if len(covered) == 0:
        raise ValueError(f"the -C and -P folders hold no test image in common ({folders})")
    indices = covered[strided_indices(len(covered), limit)]
    return indices, _shortfall(limit, n, len(covered), len(indices), held)


def _coverage(n: int, rows: int, folder: Path) -> np.ndarray:
    """Test-set indices a folder of ``rows`` images covers: all, or make-c/-p's strided ``--limit``."""
    if rows == n:
        return np.arange(n)
    if 0 < rows < n:
        return strided_indices(n, rows)
    raise ValueError(f"{folder} holds {rows} images per set but the test split has {n}")


def _require_files(folder: Path, names: Sequence[str], kind: str) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"benchmark folder not found: {folder}")
    missing = [f"{name}.npy" for name in names if not (folder / f"{name}.npy").is_file()]
    if missing:
        raise FileNotFoundError(f"benchmark folder {folder} lacks {kind} file(s) {', '.join(missing)}; "
                                f"choose a subset with --{kind}s or complete the folder")


class ArraySources:
    """Images held in memory (a CIFAR test split, or any uint8 arrays), with -C/-P ``.npy`` folders or generated.

    A folder may hold the whole test split or a ``make-c/-p --limit`` subset (images
    ``k * N // M``); then only the images it holds are evaluated (and ``limit`` strides
    over those). Every file is opened and checked (names, shapes, length, labels) before
    any work starts.
    """

    params = ParamTable.CIFAR

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, limit: int | None,
                 c_dir: Path | None, corruptions: Sequence[str], severities: Sequence[int],
                 p_dir: Path | None, perturbations: Sequence[str], seed: int) -> None:
        (self.images, self.labels), self.seed = _checked_arrays(images, labels), seed
        n = len(self.labels)
        covered, held = np.arange(n), []
        self.c_sets: dict[str, CorruptedCIFAR] = {}
        self.p_arrays: dict[str, np.ndarray] = {}
        if c_dir is not None and corruptions:
            if self.images.shape[1:] != (32, 32, 3):
                raise ValueError(f"-C folders hold 32x32 images; these test images are {self.images.shape[1:3]}")
            _require_files(c_dir, [*corruptions, "labels"], "corruption")
            self.c_sets = {c: CorruptedCIFAR(c_dir, c, severities, transform=None) for c in corruptions}
            per = {s.per_severity for s in self.c_sets.values()}
            if len(per) != 1:
                raise ValueError(f"{c_dir}: the corruption files hold different numbers of images")
            self.c_rows = _coverage(n, per.pop(), c_dir)
            first = next(iter(self.c_sets.values()))
            if not all(np.array_equal(block, self.labels[self.c_rows])
                       for block in first.labels.reshape(len(severities), -1)):
                raise ValueError(f"{c_dir / 'labels.npy'} does not match the clean test labels: is {c_dir} built "
                                 f"from this dataset's test split, in order?")
            covered = np.intersect1d(covered, self.c_rows)
            held.append((c_dir, len(self.c_rows)))
        if p_dir is not None and perturbations:
            _require_files(p_dir, perturbations, "perturbation")
            shape = (None, None, *self.images.shape[1:])
            self.p_arrays = {p: open_npy(p_dir / f"{p}.npy", shape) for p in perturbations}
            lengths = {len(a) for a in self.p_arrays.values()}
            if len(lengths) != 1:
                raise ValueError(f"{p_dir}: the perturbation files hold different numbers of sequences")
            self.p_rows = _coverage(n, lengths.pop(), p_dir)
            if (p_dir / "labels.npy").is_file() and not np.array_equal(
                    read_labels(p_dir / "labels.npy"), self.labels[self.p_rows]):
                raise ValueError(f"{p_dir / 'labels.npy'} does not match the clean test labels")
            covered = np.intersect1d(covered, self.p_rows)
            held.append((p_dir, len(self.p_rows)))
        self.indices, self.shortfall = _select(n, covered, limit, held, f"{c_dir}, {p_dir}")

    def chunks(self, unit: Unit, size: int) -> Iterator[Chunk]:
        """(uint8 images, labels, frames) chunks of ``unit``, ``size`` images (or sequences) at a time."""
        if unit.kind is UnitKind.PERTURBATION:
            array = self.p_arrays.get(unit.name)
            sections = -(-len(self.indices) // size)  # none for an empty slice (a shard with no image)
            for idx in np.array_split(self.indices, sections) if sections else []:
                if array is not None:
                    seqs = np.asarray(array[np.searchsorted(self.p_rows, idx)])
                else:
                    from .perturbations import perturb

                    seqs = perturb(self.images[idx], unit.name, seed=self.seed, indices=idx, params=self.params.value)
                yield seqs.reshape(-1, *seqs.shape[2:]), None, seqs.shape[1]
            return
        stored = self.c_sets.get(unit.name) if unit.kind is UnitKind.CORRUPTION else None
        for start in range(0, len(self.indices), size):
            idx = self.indices[start:start + size]
            if unit.kind is UnitKind.CLEAN:
                images = self.images[idx]
            elif stored is not None:
                rows = stored.rows.reshape(len(stored.severities), -1)[stored.severities.index(unit.severity)]
                images = np.asarray(stored.images[rows[np.searchsorted(self.c_rows, idx)]])
            else:
                from .corruptions import corrupt

                images = corrupt(self.images[idx], unit.name, unit.severity, seed=self.seed, indices=idx,
                                 params=self.params.value)
            yield images, self.labels[idx], 1


def _checked_arrays(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}")
    return images, labels.astype(np.int64)


class ImageNetSources:
    """ImageNet: the val folder (``<wnid>/*.JPEG``, shorter side 256, centre crop 224), ImageNet-C
    folders (``<c>/<s>/<wnid>/<file>``), ImageNet-P videos (``<p>/<wnid>/<stem>.mp4``), or generated.

    Images are decoded by a thread pool (one thread per CPU of this process's share), once each; a file that cannot be decoded stops the
    run with an error naming it. Generated -C images go through the release's JPEG
    (quality 85) round trip, so they equal ``make-c`` output; generated -P sequences skip
    the release's H.264 encoding. Folders made with ``--limit`` are evaluated on the images
    they hold (listed from the first corruption/perturbation).
    """

    params = ParamTable.IMAGENET

    def __init__(self, root: str | Path, *, limit: int | None, c_dir: Path | None, corruptions: Sequence[str],
                 severities: Sequence[int], p_dir: Path | None, perturbations: Sequence[str], seed: int) -> None:
        from .generate import imagenet_val_files

        self.files = imagenet_val_files(root)
        self.classes = sorted({wnid for _, wnid in self.files})
        class_index = {wnid: i for i, wnid in enumerate(self.classes)}
        self.labels = np.array([class_index[wnid] for _, wnid in self.files])
        self.seed, self.c_dir, self.p_dir = seed, c_dir, p_dir
        covered, held = np.arange(len(self.files)), []
        for folder, names, subdirs in ((c_dir, corruptions, [str(s) for s in severities]),
                                       (p_dir, perturbations, [""])):
            if folder is None or not names:
                continue
            missing = [f"{n}/{d}".rstrip("/") for n in names for d in subdirs if not (folder / n / d).is_dir()]
            if missing:
                raise FileNotFoundError(f"benchmark folder {folder} lacks {', '.join(missing[:5])}")
            present = self._held(folder, names[0], int(subdirs[0]) if subdirs[0] else None)
            rows = np.flatnonzero([(wnid, path.stem) in present for path, wnid in self.files])
            covered = np.intersect1d(covered, rows)
            held.append((folder, len(rows)))
        self.indices, self.shortfall = _select(len(self.files), covered, limit, held, f"{c_dir}, {p_dir}")

    def _held(self, folder: Path, name: str, severity: int | None) -> dict[tuple[str, str], Path]:
        """(wnid, file stem) -> file of one ImageNet-C severity or ImageNet-P perturbation folder."""
        dataset = (CorruptedImageNet(folder, name, severity, classes=self.classes, transform=None) if severity
                   else PerturbedImageNet(folder, name, classes=self.classes, transform=None))
        return {(path.parent.name, path.stem): path for path, _ in dataset.samples}

    def chunks(self, unit: Unit, size: int) -> Iterator[Chunk]:
        from ..engine.distributed import cores_per_process

        with ThreadPoolExecutor(cores_per_process()) as pool:  # decoding releases the GIL: one thread per core
            yield from self._chunks(unit, size, pool)

    def _chunks(self, unit: Unit, size: int, pool: ThreadPoolExecutor) -> Iterator[Chunk]:
        from .generate import load_resized

        def decode(paths: list[Path], read: Callable[[Path], np.ndarray]) -> np.ndarray:
            return np.stack(list(pool.map(read, paths)))  # the readers name a missing or damaged file

        def stored(folder: Path, severity: int | None) -> Callable[[Path, str], Path]:
            files = self._held(folder, unit.name, severity)
            where = folder / unit.name / (str(severity) if severity else "")

            def find(path: Path, wnid: str) -> Path:
                if (wnid, path.stem) not in files:
                    raise FileNotFoundError(f"benchmark file missing: {where / wnid / path.stem}.*")
                return files[wnid, path.stem]
            return find

        c_file = stored(self.c_dir, unit.severity) if unit.kind is UnitKind.CORRUPTION and self.c_dir else None
        p_file = stored(self.p_dir, None) if unit.kind is UnitKind.PERTURBATION and self.p_dir else None
        for start in range(0, len(self.indices), size):
            idx = self.indices[start:start + size]
            files = [self.files[i] for i in idx]
            if unit.kind is UnitKind.PERTURBATION:
                if p_file is not None:
                    seqs = decode([p_file(p, w) for p, w in files], read_video)
                else:
                    from .perturbations import perturb

                    clean = decode([p for p, _ in files], lambda p: load_resized(p, 256))
                    seqs = perturb(clean, unit.name, seed=self.seed, indices=idx, params=self.params.value, crop=224)
                yield seqs.reshape(-1, *seqs.shape[2:]), None, seqs.shape[1]
                continue
            if unit.kind is UnitKind.CLEAN:
                images = decode([p for p, _ in files], lambda p: load_resized(p, 224))
            elif c_file is not None:
                images = decode([c_file(p, w) for p, w in files], lambda p: np.asarray(read_image(p)))
            else:
                from .corruptions import corrupt

                clean = decode([p for p, _ in files], lambda p: load_resized(p, 224))
                images = np.stack(list(pool.map(_jpeg85, corrupt(
                    clean, unit.name, unit.severity, seed=self.seed, indices=idx, params=self.params.value))))
            yield images, self.labels[idx], 1


def _jpeg85(image: np.ndarray) -> np.ndarray:
    """The ImageNet-C release's storage: JPEG quality 85 (optimised), decoded again."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, **IMAGENET_C_JPEG)
    buffer.seek(0)
    with Image.open(buffer) as img:
        return np.asarray(img.convert("RGB"))
