"""Robustness evaluation: clean error, -C errors per corruption and severity, -P flip statistics.

The runner: it checks the arguments, builds the model and the data source
(:mod:`pushpull.data.sources`), starts the data thread (:mod:`pushpull.engine.batches`)
and runs the model under ``torch.inference_mode``. Each finished unit (clean set, one
corruption at one severity, one perturbation) is written to the results file
(:mod:`pushpull.engine.results`) at once, atomically, so an interrupted run resumes where
it stopped.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import metrics
from .._names import check_names, split_names
from ..baselines import default_baseline, load_baseline
from ..data.robustness_sets import SEVERITIES, check_severities
from ..data.streams import STREAM_RULE
from ..data.sources import (BENCHMARKS, ArraySources, Benchmark, BenchmarkDataset, ImageNetSources, Unit, UnitKind,
                            official_cifar_test, strided_indices)
from ..models.load import load_model
from .batches import Normalize, Source, batches, prefetch
from .results import is_done, new_results, record, write_results
from .results import resume as resume_results

__all__ = ["evaluate", "Normalize", "strided_indices", "BENCHMARKS"]

# ----------------------------------------------------------------------------- evaluate


def parse_benchmarks(benchmarks: str | Sequence[str]) -> tuple[BenchmarkDataset, bool, bool]:
    """The dataset of ``benchmarks`` (a list or a comma string, one dataset) and whether -C / -P are asked for."""
    names = [Benchmark(b) for b in check_names([b.lower() for b in split_names(benchmarks)], BENCHMARKS,
                                               "benchmark")]
    datasets = {b.dataset for b in names}
    if len(datasets) > 1:
        raise ValueError(f"benchmarks of different datasets in one run: {', '.join(names)}")
    return datasets.pop(), any(b.corrupted for b in names), any(not b.corrupted for b in names)


def _chosen(given: str | Sequence[str] | None, default: Sequence[str], known: Sequence[str], kind: str) -> list[str]:
    """The names asked for: ``default`` when None, none for an empty list or string, else checked."""
    if given is None:
        return list(default)
    return check_names(given, known, kind) if split_names(given) else []


def _clean_data(data: str | Path | tuple[np.ndarray, np.ndarray], dataset: BenchmarkDataset,
                folders: dict) -> tuple[ArraySources | ImageNetSources, dict]:
    """The source of ``data`` (a folder or (images, labels) arrays) and the results' ``data`` entry."""
    from ..data.cifar import load_cifar

    official, notes = None, []
    if isinstance(data, tuple):
        if dataset is BenchmarkDataset.IMAGENET:
            raise ValueError("in-memory arrays are evaluated with the CIFAR tables; for ImageNet pass the val folder")
        source = ArraySources(*data, **folders)
        digest = hashlib.sha256(np.ascontiguousarray(source.images).tobytes())
        digest.update(source.labels.tobytes())
        where = {"root": None, "arrays_sha256": digest.hexdigest()}
    elif dataset is BenchmarkDataset.IMAGENET:
        source, where = ImageNetSources(data, **folders), {"root": str(data)}
    else:
        source, where = ArraySources(*load_cifar(data, train=False, dataset=dataset.value), **folders), \
            {"root": str(data)}
        official, note = official_cifar_test(data, dataset)
        notes += [note] if note else []
    if source.shortfall:
        notes.append(source.shortfall)
    n, evaluated = len(source.labels), len(source.indices)
    entry = {"dataset": dataset.value, **where, "split": dataset.split, "num_test_images": int(n),
             "limit": folders["limit"], "num_evaluated": int(evaluated),
             "subset": "all" if evaluated == n else
             "strided: image floor(k * N / M) for k < M, over the images the -C/-P folders hold",
             "official": official, "notes": notes}
    return source, entry


def evaluate(
    model: nn.Module | str,
    *,
    data: str | Path | tuple[np.ndarray, np.ndarray],
    benchmarks: str | Sequence[str] = ("cifar10-c", "cifar10-p"),
    c_dir: str | Path | None = None,
    p_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    corruptions: str | Sequence[str] | None = None,
    severities: str | Sequence[int] = SEVERITIES,
    perturbations: str | Sequence[str] | None = None,
    flip_rule: metrics.FlipRule = "hendrycks",
    baseline: str | Path | None = "auto",
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
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
    :func:`pushpull.load_model`. ``data`` is the clean test set: a CIFAR root, the ImageNet val
    folder, or ``(images, labels)`` arrays (uint8 (N, H, W, 3), integer labels; CIFAR
    tables). A -C (-P) benchmark is read from ``c_dir`` (``p_dir``) in the official layout
    when given, else generated from the clean images with seed ``seed``. ``limit``
    evaluates a strided subset; when fewer images are evaluated than asked, a note says
    why (printed, and kept in ``data.notes``). Every list argument (``benchmarks``,
    ``corruptions``, ``severities``, ``perturbations``, ``mean``, ``std``) takes a list or
    a comma string. With ``out``, results are saved after every unit and an existing file
    of the same run is resumed. ``baseline`` ("auto": the paper's for the dataset; None:
    no normalisation) only affects the summary.
    """
    from ..data.corruptions import CORRUPTIONS
    from ..data.perturbations import ALL_PERTURBATIONS, NOISE_SEQUENCES, PERTURBATIONS

    dataset, want_c, want_p = parse_benchmarks(benchmarks)
    if flip_rule not in metrics.FLIP_RULES:
        raise ValueError(f"flip rule must be one of {metrics.FLIP_RULES}, got {flip_rule!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be a positive number of images, got {batch_size}")
    severities = check_severities(severities)
    c_names = _chosen(corruptions, CORRUPTIONS, CORRUPTIONS, "corruption") if want_c else []
    p_names = _chosen(perturbations, PERTURBATIONS, ALL_PERTURBATIONS, "perturbation") if want_p else []
    c_dir = Path(c_dir) if c_dir is not None and want_c else None
    p_dir = Path(p_dir) if p_dir is not None and want_p else None

    loaded = load_model(model, weights=weights, num_classes=num_classes, model_kwargs=model_kwargs, arch=arch,
                        dataset=dataset.value, mean=mean, std=std, allow_pickle=allow_pickle)
    if isinstance(model, str) and loaded.info.weights is None:
        raise ValueError(f"model {model!r} needs --weights FILE, or --pretrained for its published weights "
                         "(`pushpull weights list`)")
    model, info = loaded.model, loaded.describe()
    info["label"] = label or info["label"]
    norm = info["normalization"]

    source, data_entry = _clean_data(data, dataset, dict(limit=limit, c_dir=c_dir, corruptions=c_names,
                                                         severities=severities, p_dir=p_dir,
                                                         perturbations=p_names, seed=seed))
    for note in data_entry["notes"]:  # said once, up front, and kept in the results
        print(f"note: {note}", file=sys.stderr)
    results = new_results(info, data_entry, {
        **({dataset.c.value: {**_origin(c_dir, seed), "severities": severities, "corruptions": c_names}}
           if want_c else {}),
        **({dataset.p.value: {**_origin(p_dir, seed), "perturbations": p_names}} if want_p else {}),
    }, {"flip_rule": flip_rule, "batch_size": batch_size, "device": str(device)})
    out = Path(out) if out is not None else None
    if out is not None and out.is_file() and resume:
        resume_results(results, out)

    if baseline == "auto":
        baseline = default_baseline(dataset.c.value)
    baseline = load_baseline(baseline) if baseline else None  # a bad baseline fails now, not after the work
    units = [Unit(UnitKind.CLEAN)] + [Unit(UnitKind.CORRUPTION, c, s) for c in c_names for s in severities] \
        + [Unit(UnitKind.PERTURBATION, p) for p in p_names]
    todo = [u for u in units if not is_done(results, u)]
    _run(model, todo, source, Normalize(norm["mean"], norm["std"]), results, out=out, batch_size=batch_size,
         device=torch.device(device), flip_rule=flip_rule, noise=NOISE_SEQUENCES, progress=progress)

    results["complete"] = True
    results["summary"] = metrics.summarize(results, baseline)
    if out is not None:
        write_results(results, out)
    return results


def _origin(folder: Path | None, seed: int) -> dict:
    """A benchmark's entry: read from ``folder``, or generated with ``seed`` under the current stream rule."""
    if folder is not None:
        return {"source": "disk", "path": str(folder), "seed": None}
    return {"source": "generated", "path": None, "seed": seed, "stream_rule": STREAM_RULE}


def _run(model: nn.Module, units: list[Unit], source: Source, normalize: Normalize,
         results: dict, *, out: Path | None, batch_size: int, device: torch.device, flip_rule: str,
         noise: frozenset, progress: bool) -> None:
    """Evaluate ``units`` in order, recording each in ``results`` (and ``out``) as it completes."""
    from tqdm.auto import tqdm

    produce = batches(units, source, normalize, batch_size=batch_size, pin_memory=device.type == "cuda")
    n = len(source.indices)
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
            if seen != n:
                raise RuntimeError(f"{batch.unit.label}: evaluated {seen} items, expected {n}")
            record(results, batch.unit, n=seen, wrong=wrong, fp_sum=fp_sum, t5d_sum=t5d_sum, frames=batch.frames)
            wrong = seen = 0
            fp_sum = t5d_sum = 0.0
            if out is not None:
                write_results(results, out)
            bar.set_postfix_str(f"done: {batch.unit.label}")
    bar.close()
