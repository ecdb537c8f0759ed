"""Robustness evaluation: clean error, -C errors per corruption and severity, -P flip statistics.

Data flow: a background thread prepares every batch (reads the -C/-P arrays from disk or
generates them from the clean set, converts and normalises) while the main thread runs
the model under ``torch.inference_mode``. Each finished unit (clean set, one corruption
at one severity, one perturbation) is written to the results JSON at once, atomically,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from .. import metrics
from .._files import atomic_write
from ..baselines import default_baseline, load_baseline
from ..data.robustness_sets import SEVERITIES
# --limit strides the way make-c/-p --limit does: _coverage relies on it to find a subset folder's images.
from ..data.generate import select_indices as strided_indices

RESULTS_FORMAT = "pushpull-robustness-results"
RESULTS_VERSION = 1
BENCHMARKS = ("cifar10-c", "cifar10-p", "cifar100-c", "cifar100-p", "imagenet-c", "imagenet-p")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Unit:
    """One entry of the results: the clean set, a corruption at a severity, or a perturbation."""

    kind: str  # "clean" | "corruption" | "perturbation"
    name: str = ""
    severity: int = 0

    @property
    def label(self) -> str:
        return {"clean": "clean", "corruption": f"{self.name} s{self.severity}", "perturbation": self.name}[self.kind]


@dataclass
class Batch:
    unit: Unit
    images: torch.Tensor  # normalised float (B, 3, H, W); B = sequences x frames for -P
    labels: np.ndarray | None  # (B,) for classification units
    frames: int  # 1, or T for -P
    last: bool  # the unit's final batch


class CifarSources:
    """Where each unit's uint8 images come from: the clean set, -C/-P arrays on disk, or generated.

    A folder may hold the whole test split or a ``make-c/-p --limit`` subset (images
    ``k * N // M``); then only the images it holds are evaluated (and ``limit`` strides
    over those). Every file is opened and checked (names, shapes, length, labels) before
    any work starts.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, limit: int | None,
                 c_dir: Path | None, corruptions: Sequence[str], severities: Sequence[int],
                 p_dir: Path | None, perturbations: Sequence[str], seed: int) -> None:
        from ..data.robustness_sets import open_npy, read_manifest

        self.images, self.labels, self.seed = images, labels, seed
        n = len(labels)
        covered = np.arange(n)
        self.c_arrays: dict[str, np.ndarray] = {}
        self.p_arrays: dict[str, np.ndarray] = {}
        if c_dir is not None and corruptions:
            _require_files(c_dir, [*corruptions, "labels"], "corruption")
            stored = tuple(read_manifest(c_dir).get("severities", SEVERITIES))
            missing = sorted(set(severities) - set(stored))
            if missing:
                raise ValueError(f"{c_dir} does not hold severities {missing} (it holds {list(stored)})")
            self.c_arrays = {c: open_npy(c_dir / f"{c}.npy", (None, *images.shape[1:])) for c in corruptions}
            c_labels = np.load(c_dir / "labels.npy").astype(np.int64)
            rows = {len(a) for a in self.c_arrays.values()} | {len(c_labels)}
            if len(rows) != 1 or len(c_labels) % len(stored):
                raise ValueError(f"{c_dir}: files differ in length or do not split into {len(stored)} severities")
            per = len(c_labels) // len(stored)
            self.c_rows = _coverage(n, per, c_dir)
            self.c_block = {s: stored.index(s) * per for s in severities}
            if not all(np.array_equal(c_labels[b:b + per], labels[self.c_rows]) for b in self.c_block.values()):
                raise ValueError(f"{c_dir / 'labels.npy'} does not match the clean test labels: is {c_dir} built "
                                 f"from this dataset's test split, in order?")
            covered = np.intersect1d(covered, self.c_rows)
        if p_dir is not None and perturbations:
            _require_files(p_dir, perturbations, "perturbation")
            self.p_arrays = {p: open_npy(p_dir / f"{p}.npy", (None, None, *images.shape[1:])) for p in perturbations}
            lengths = {len(a) for a in self.p_arrays.values()}
            if len(lengths) != 1:
                raise ValueError(f"{p_dir}: the perturbation files hold different numbers of sequences")
            self.p_rows = _coverage(n, lengths.pop(), p_dir)
            if (p_dir / "labels.npy").is_file() and not np.array_equal(
                    np.load(p_dir / "labels.npy").astype(np.int64), labels[self.p_rows]):
                raise ValueError(f"{p_dir / 'labels.npy'} does not match the clean test labels")
            covered = np.intersect1d(covered, self.p_rows)
        if len(covered) == 0:
            raise ValueError(f"the -C and -P folders hold no test image in common ({c_dir}, {p_dir})")
        self.indices = covered[strided_indices(len(covered), limit)]

    def chunks(self, unit: Unit, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None, int]]:
        """(uint8 images, labels, frames) chunks of ``unit``, ``size`` images (or sequences) at a time."""
        if unit.kind == "perturbation":
            array = self.p_arrays.get(unit.name)
            for idx in np.array_split(self.indices, max(1, -(-len(self.indices) // size))):
                if array is not None:
                    seqs = np.asarray(array[np.searchsorted(self.p_rows, idx)])
                else:
                    from ..data.perturbations import perturb

                    seqs = perturb(self.images[idx], unit.name, seed=self.seed, indices=idx, params="cifar")
                yield seqs.reshape(-1, *seqs.shape[2:]), None, seqs.shape[1]
            return
        array = self.c_arrays.get(unit.name) if unit.kind == "corruption" else None
        for start in range(0, len(self.indices), size):
            idx = self.indices[start:start + size]
            if unit.kind == "clean":
                images = self.images[idx]
            elif array is not None:
                images = np.asarray(array[self.c_block[unit.severity] + np.searchsorted(self.c_rows, idx)])
            else:
                from ..data.corruptions import corrupt

                images = corrupt(self.images[idx], unit.name, unit.severity, seed=self.seed, indices=idx,
                                 params="cifar")
            yield images, self.labels[idx], 1


class ImageNetSources:
    """ImageNet: the val folder (``<wnid>/*.JPEG``, shorter side 256, centre crop 224), ImageNet-C
    folders (``<c>/<s>/<wnid>/<file>``), ImageNet-P videos (``<p>/<wnid>/<stem>.mp4``), or generated.

    Images are decoded by a thread pool, once each. Generated -C images go through the
    release's JPEG (quality 85) round trip, so they equal ``make-c`` output; generated -P
    sequences skip the release's H.264 encoding. Folders made with ``--limit`` are
    evaluated on the images they hold (listed from the first corruption/perturbation).
    """

    def __init__(self, root: str | Path, *, limit: int | None, c_dir: Path | None, corruptions: Sequence[str],
                 severities: Sequence[int], p_dir: Path | None, perturbations: Sequence[str], seed: int) -> None:
        from ..data.generate import imagenet_val_files

        self.files = imagenet_val_files(root)
        class_index = {wnid: i for i, wnid in enumerate(sorted({wnid for _, wnid in self.files}))}
        self.labels = np.array([class_index[wnid] for _, wnid in self.files])
        self.seed, self.c_dir, self.p_dir = seed, c_dir, p_dir
        held = np.ones(len(self.files), dtype=bool)
        for folder, names, subdirs, suffix in ((c_dir, corruptions, [str(s) for s in severities], None),
                                               (p_dir, perturbations, [""], ".mp4")):
            if folder is None or not names:
                continue
            missing = [f"{n}/{d}".rstrip("/") for n in names for d in subdirs if not (folder / n / d).is_dir()]
            if missing:
                raise FileNotFoundError(f"benchmark folder {folder} lacks {', '.join(missing[:5])}")
            first = folder / names[0] / subdirs[0]
            present = {(w.name, f.stem if suffix else f.name)
                       for w in first.iterdir() if w.is_dir() for f in w.iterdir()}
            held &= np.array([(wnid, path.stem if suffix else path.name) in present for path, wnid in self.files])
        covered = np.flatnonzero(held)
        if len(covered) == 0:
            raise ValueError(f"the benchmark folders hold no image of the val set {root}")
        self.indices = covered[strided_indices(len(covered), limit)]

    def chunks(self, unit: Unit, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None, int]]:
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
            yield from self._chunks(unit, size, pool)

    def _chunks(self, unit: Unit, size: int,
                pool: ThreadPoolExecutor) -> Iterator[tuple[np.ndarray, np.ndarray | None, int]]:
        from ..data.robustness_sets import read_video
        from ..data.generate import load_resized

        def decode(paths: list[Path], read: Callable[[Path], np.ndarray]) -> np.ndarray:
            def checked(path: Path) -> np.ndarray:
                if not path.is_file():
                    raise FileNotFoundError(f"benchmark file missing: {path}")
                return read(path)

            return np.stack(list(pool.map(checked, paths)))

        for start in range(0, len(self.indices), size):
            idx = self.indices[start:start + size]
            files = [self.files[i] for i in idx]
            if unit.kind == "perturbation":
                if self.p_dir is not None:
                    seqs = decode([self.p_dir / unit.name / w / f"{p.stem}.mp4" for p, w in files], read_video)
                else:
                    from ..data.perturbations import perturb

                    clean = decode([p for p, _ in files], lambda p: load_resized(p, 256))
                    seqs = perturb(clean, unit.name, seed=self.seed, indices=idx, params="imagenet", crop=224)
                yield seqs.reshape(-1, *seqs.shape[2:]), None, seqs.shape[1]
                continue
            if unit.kind == "clean":
                images = decode([p for p, _ in files], lambda p: load_resized(p, 224))
            elif self.c_dir is not None:
                images = decode([self.c_dir / unit.name / str(unit.severity) / w / p.name for p, w in files],
                                      _read_rgb)
            else:
                from ..data.corruptions import corrupt

                clean = decode([p for p, _ in files], lambda p: load_resized(p, 224))
                images = np.stack(list(pool.map(_jpeg85, corrupt(
                    clean, unit.name, unit.severity, seed=self.seed, indices=idx, params="imagenet"))))
            yield images, self.labels[idx], 1


def _read_rgb(source: Path | BinaryIO) -> np.ndarray:
    from PIL import Image

    with Image.open(source) as img:
        return np.asarray(img.convert("RGB"))


def _jpeg85(image: np.ndarray) -> np.ndarray:
    """The ImageNet-C release's storage: JPEG quality 85 (optimised), decoded again."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=85, optimize=True)
    buffer.seek(0)
    return _read_rgb(buffer)


def _require_files(folder: Path, names: Sequence[str], kind: str) -> None:
    missing = [f"{name}.npy" for name in names if not (folder / f"{name}.npy").is_file()]
    if missing:
        raise FileNotFoundError(f"benchmark folder {folder} lacks {kind} file(s) {', '.join(missing)}; "
                                f"choose a subset with --{kind}s or complete the folder")


def _coverage(n: int, rows: int, folder: Path) -> np.ndarray:
    """Test-set indices a folder of ``rows`` images covers: all, or make-c/-p's strided ``--limit``."""
    if rows == n:
        return np.arange(n)
    if 0 < rows < n:
        return strided_indices(n, rows)
    raise ValueError(f"{folder} holds {rows} images per set but the test split has {n}")


class Normalize:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in the model's normalisation.

    Done in numpy, which is single-threaded: on the data thread it does not fight the
    model's OpenMP threads the way torch ops would.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        std_a = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.scale = (1.0 / (255.0 * std_a)).astype(np.float32)
        self.shift = (-np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1) / std_a).astype(np.float32)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
        out = np.empty((images.shape[0], 3, *images.shape[1:3]), dtype=np.float32)
        out[...] = images.transpose(0, 3, 1, 2)
        out *= self.scale
        out += self.shift
        return torch.from_numpy(out)


def prefetch(produce: Callable[[], Iterator[Batch]], depth: int = 3) -> Iterator[Batch]:
    """Run ``produce`` on a background thread, ``depth`` batches ahead; its errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        """Queue ``item`` unless the consumer has gone; False once it has."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for item in produce():
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    thread = threading.Thread(target=worker, name="pushpull-eval-data", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------- results


def _software() -> dict[str, str]:
    import torchvision

    from .. import __version__

    return {"pushpull": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "platform": platform.platform()}


def _fingerprint(results: dict) -> dict:
    """What must match for a results file to be resumed (or extended with more corruptions)."""
    lists = ("corruptions", "perturbations", "severities")
    return {"weights_sha256": results["model"]["weights_sha256"], "data": results["data"],
            "benchmarks": {b: {k: v for k, v in entry.items() if k not in lists}
                           for b, entry in results["benchmarks"].items()},
            "settings": {k: v for k, v in results["settings"].items() if k not in ("batch_size", "device")}}


def is_done(results: dict, unit: Unit) -> bool:
    if unit.kind == "clean":
        return results.get("clean") is not None
    if unit.kind == "corruption":
        return str(unit.severity) in results["corruptions"].get(unit.name, {}).get("errors", {})
    return unit.name in results["perturbations"]


def write_results(results: dict, path: Path) -> None:
    """The results JSON and its CSV twin, each written atomically."""
    atomic_write(path, json.dumps(results, indent=1) + "\n")
    atomic_write(path.with_suffix(".csv"), results_csv(results))


def results_csv(results: dict) -> str:
    """One row per number: ``metric,name,severity,value`` (errors and probabilities as fractions)."""
    rows = ["metric,name,severity,value"]
    if results.get("clean"):
        rows.append(f"error,clean,,{results['clean']['error']:.6f}")
    for name, entry in results["corruptions"].items():
        rows += [f"error,{name},{s},{e:.6f}" for s, e in sorted(entry["errors"].items())]
    for name, entry in results["perturbations"].items():
        rows.append(f"flip_probability,{name},,{entry['flip_probability']:.6f}")
        rows.append(f"top5_distance,{name},,{entry['top5_distance']:.6f}")
    summary = results.get("summary") or {}
    for key in ("mCE", "rCE", "mFR", "mean_ce_unnormalized", "mFP", "mT5D"):
        if summary.get(key) is not None:
            rows.append(f"{key},,,{summary[key]:.6f}")
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- evaluate


def _parse_benchmarks(benchmarks: str | Sequence[str]) -> tuple[str, bool, bool]:
    names = [b.strip().lower() for b in (benchmarks.split(",") if isinstance(benchmarks, str) else benchmarks) if b]
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BENCHMARKS)}")
    datasets = {b.split("-")[0] for b in names}
    if len(datasets) > 1:
        raise ValueError(f"benchmarks of different datasets in one run: {', '.join(names)}")
    return datasets.pop(), any(b.endswith("-c") for b in names), any(b.endswith("-p") for b in names)


def check_names(given: Sequence[str] | None, known: Sequence[str], kind: str) -> list[str]:
    """``given`` as a list (``known`` when None), with an error naming any name not in ``known``."""
    if given is None:
        return list(known)
    unknown = [n for n in given if n not in known]
    if unknown:
        raise ValueError(f"unknown {kind}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return list(given)


def evaluate(
    model: nn.Module | str,
    *,
    data: str | Path,
    benchmarks: str | Sequence[str] = ("cifar10-c", "cifar10-p"),
    c_dir: str | Path | None = None,
    p_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    perturbations: Sequence[str] | None = None,
    flip_rule: metrics.FlipRule = "hendrycks",
    baseline: str | Path | None = "auto",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    model_kwargs: dict | None = None,
    allow_pickle: bool = False,
    arch: str | None = None,
    label: str | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a classifier on the clean test set and the -C/-P benchmarks; return the results dict.

    ``model`` is an ``nn.Module`` (taking normalised images) or a spec for
    :func:`pushpull.load_model`. ``data`` is the clean test set (CIFAR root, or the ImageNet val
    folder). A -C (-P) benchmark is read from ``c_dir`` (``p_dir``) in the official layout
    when given, else generated from the clean images with seed ``seed``. ``limit`` evaluates a strided subset.
    With ``out``, results are saved after every unit and an existing file of the same run
    is resumed. ``baseline`` ("auto": the paper's for the dataset; None: no normalisation)
    only affects the summary.
    """
    from ..data.cifar import load_cifar
    from ..models import load_model

    dataset, want_c, want_p = _parse_benchmarks(benchmarks)
    if flip_rule not in metrics.FLIP_RULES:
        raise ValueError(f"flip rule must be one of {metrics.FLIP_RULES}, got {flip_rule!r}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise ValueError(f"severities must be among {SEVERITIES}, got {list(severities)}")
    from ..data.corruptions import CORRUPTIONS
    from ..data.perturbations import ALL_PERTURBATIONS, NOISE_SEQUENCES, PERTURBATIONS

    c_names = check_names(corruptions, CORRUPTIONS, "corruption") if want_c else []
    p_names = (check_names(perturbations, ALL_PERTURBATIONS, "perturbation") if perturbations is not None
               else list(PERTURBATIONS)) if want_p else []
    c_dir = Path(c_dir) if c_dir is not None and want_c else None
    p_dir = Path(p_dir) if p_dir is not None and want_p else None

    loaded = load_model(model, weights=weights, num_classes=num_classes, model_kwargs=model_kwargs, arch=arch,
                        dataset=dataset, mean=mean, std=std, allow_pickle=allow_pickle)
    if isinstance(model, str) and loaded.info.weights is None:
        raise ValueError(f"model {model!r} needs --weights FILE (no downloads: evaluation runs offline)")
    model, info = loaded.model, loaded.describe()
    info["label"] = label or info["label"]
    norm = info["normalization"]

    folders = dict(limit=limit, c_dir=c_dir, corruptions=c_names, severities=severities, p_dir=p_dir,
                   perturbations=p_names, seed=seed)
    if dataset == "imagenet":
        sources = ImageNetSources(data, **folders)
    else:
        images, labels = load_cifar(data, train=False, dataset=dataset)
        sources = CifarSources(images, labels, **folders)
    indices, labels = sources.indices, sources.labels

    results: dict[str, Any] = {
        "format": RESULTS_FORMAT, "format_version": RESULTS_VERSION, "model": info,
        "data": {"dataset": dataset, "root": str(data), "split": "val" if dataset == "imagenet" else "test",
                 "num_test_images": int(len(labels)),
                 "limit": limit, "num_evaluated": int(len(indices)),
                 "subset": "all" if len(indices) == len(labels) else
                 "strided: image floor(k * N / M) for k < M, over the images the -C/-P folders hold"},
        "benchmarks": {
            **({f"{dataset}-c": {"source": "disk" if c_dir else "generated", "path": str(c_dir) if c_dir else None,
                                 "seed": None if c_dir else seed, "severities": list(severities),
                                 "corruptions": c_names}} if want_c else {}),
            **({f"{dataset}-p": {"source": "disk" if p_dir else "generated", "path": str(p_dir) if p_dir else None,
                                 "seed": None if p_dir else seed, "perturbations": p_names}} if want_p else {}),
        },
        "settings": {"flip_rule": flip_rule, "batch_size": batch_size, "device": str(device)},
        "software": _software(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": False, "clean": None, "corruptions": {}, "perturbations": {}, "summary": None,
    }
    out = Path(out) if out is not None else None
    if out is not None and out.is_file() and resume:
        previous = json.loads(out.read_text())
        if previous.get("format") != RESULTS_FORMAT:
            raise ValueError(f"{out} exists and is not a pushpull results file; choose another --out")
        if _fingerprint(previous) != _fingerprint(results):
            raise ValueError(f"{out} holds results of a different run (model, data, benchmark or settings "
                             f"differ); choose another --out or pass --no-resume to overwrite it")
        for key in ("clean", "corruptions", "perturbations", "created"):
            results[key] = previous[key]
        for name, entry in results["benchmarks"].items():  # a rerun may add corruptions or perturbations
            for key in ("corruptions", "perturbations", "severities"):
                if key in entry:
                    entry[key] = list(dict.fromkeys(previous["benchmarks"][name][key] + entry[key]))

    if baseline == "auto":
        baseline = default_baseline(f"{dataset}-c")
    baseline = load_baseline(baseline) if baseline else None  # a bad baseline fails now, not after the work
    units = [Unit("clean")] + [Unit("corruption", c, s) for c in c_names for s in severities] \
        + [Unit("perturbation", p) for p in p_names]
    todo = [u for u in units if not is_done(results, u)]
    _run(model, todo, sources, Normalize(norm["mean"], norm["std"]), results, out=out, batch_size=batch_size,
         device=torch.device(device), flip_rule=flip_rule, noise=NOISE_SEQUENCES, progress=progress)

    results["complete"] = True
    results["summary"] = metrics.summarize(results, baseline)
    if out is not None:
        write_results(results, out)
    return results


def _run(model: nn.Module, units: list[Unit], sources: CifarSources | ImageNetSources, normalize: Normalize,
         results: dict, *,
         out: Path | None, batch_size: int, device: torch.device, flip_rule: str, noise: frozenset,
         progress: bool) -> None:
    """Evaluate ``units`` in order, recording each in ``results`` (and ``out``) as it completes."""
    from tqdm.auto import tqdm

    from ..data.perturbations import num_frames

    params = "imagenet" if isinstance(sources, ImageNetSources) else "cifar"

    def produce() -> Iterator[Batch]:
        for unit in units:  # about batch_size images per forward pass, -P frames included
            size = batch_size if unit.kind != "perturbation" else max(1, batch_size // num_frames(unit.name, params))
            for (images, labels, frames), last in _lookahead(sources.chunks(unit, size)):
                x = normalize(images)
                if device.type == "cuda":
                    x = x.pin_memory()
                yield Batch(unit, x, labels, frames, last)

    n = len(sources.indices)
    model = model.to(device).eval()
    wrong = seen = 0
    fp_sum = t5d_sum = 0.0
    bar = tqdm(total=n * len(units), desc="evaluating", unit="img", disable=not progress)  # -P: sequences
    with torch.inference_mode():
        for batch in prefetch(produce):
            logits = model(batch.images.to(device, non_blocking=True)).float()
            if logits.ndim != 2:
                raise ValueError(f"the model returned shape {tuple(logits.shape)}; expected (batch, classes)")
            if not torch.isfinite(logits).all():
                raise FloatingPointError(f"the model produced NaN/inf logits on {batch.unit.label}")
            logits = logits.cpu().numpy()
            if batch.labels is not None:
                if batch.labels.max() >= logits.shape[1]:
                    raise ValueError(f"labels go up to {batch.labels.max()} but the model has {logits.shape[1]} "
                                     f"outputs: wrong --num-classes or dataset?")
                wrong += int((logits.argmax(1) != batch.labels).sum())
                seen += len(batch.labels)
                bar.update(len(batch.labels))
            else:
                seqs = logits.reshape(-1, batch.frames, logits.shape[1])
                is_noise = batch.unit.name in noise
                fp_sum += metrics.flip_probability(seqs.argmax(-1), noise=is_noise, rule=flip_rule) * len(seqs)
                t5d_sum += metrics.top5_distance(seqs, noise=is_noise, rule=flip_rule) * len(seqs)
                seen += len(seqs)
                bar.update(len(seqs))
            if not batch.last:
                continue
            unit = batch.unit
            if seen != n:
                raise RuntimeError(f"{unit.label}: evaluated {seen} items, expected {n}")
            if unit.kind == "clean":
                results["clean"] = {"error": wrong / seen, "n": seen}
            elif unit.kind == "corruption":
                entry = results["corruptions"].setdefault(unit.name, {"errors": {}, "n": seen})
                entry["errors"][str(unit.severity)] = wrong / seen
                entry["errors"] = dict(sorted(entry["errors"].items()))
            else:
                results["perturbations"][unit.name] = {"flip_probability": fp_sum / seen,
                                                      "top5_distance": t5d_sum / seen, "n": seen,
                                                      "frames": batch.frames}
            wrong = seen = 0
            fp_sum = t5d_sum = 0.0
            if out is not None:
                write_results(results, out)
            bar.set_postfix_str(f"done: {unit.label}")
    bar.close()


def _lookahead(iterable: Iterator) -> Iterator[tuple[Any, bool]]:
    """Pairs (item, is_last) without materialising the iterator."""
    it = iter(iterable)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True
