"""Robustness evaluation: clean error, -C errors per corruption and severity, -P flip statistics.

The runner: it checks the arguments, builds the model and the data source
(:mod:`pushpull.data.sources`), starts the data thread (:mod:`pushpull.engine.batches`)
and runs the model under ``torch.inference_mode``. Each finished unit (clean set, one
corruption at one severity, one perturbation) is written to the results file
(:mod:`pushpull.engine.results`) at once, atomically, so an interrupted run resumes where
it stopped.

Under ``torchrun`` each process evaluates its slice of the images of every unit (a
:class:`~pushpull.engine.distributed.Shard`); the unit's integer counts are added over the
processes and rank 0 writes the file, which is the one process's, digit for digit: every
image is evaluated alike wherever it lands (generated -C/-P images come from per-image
random streams), and sums of integers do not depend on their order. With ``shard`` (a
job-array task) the file is that shard's partial results, for ``pushpull merge-results``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing, suppress
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
from ..models.registry import is_external
from .batches import Batch, Normalize, Source, UnitDone, batches, prefetch
from .distributed import DistContext, Shard, all_gather_object, process_group, process_shard
from .results import Counts, as_partial, finish, is_done, new_results, partial_path, record, write_results
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
    shard: Shard | None = None,
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

    Under ``torchrun`` (RANK/WORLD_SIZE set) the processes share the work and rank 0 writes
    ``out``; every process returns the results. ``shard`` (``Shard(K, N)``: one task of a
    job array) evaluates only that slice of the images and writes its partial results to
    :func:`~pushpull.engine.results.partial_path` of ``out`` (``r.json`` -> ``r.shard-K-of-N.json``).
    """
    from ..data.corruptions import CORRUPTIONS
    from ..data.perturbations import ALL_PERTURBATIONS, NOISE_SEQUENCES, PERTURBATIONS
    from .train import resolve_device  # cuda:<local rank> under torchrun

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
        raise ValueError(f"model {model!r} needs --weights FILE" + ("" if is_external(model) else
                         ", or --pretrained for its published weights (`pushpull weights list`)"))
    model, info = loaded.model, loaded.describe()
    info["label"] = label or info["label"]
    norm = info["normalization"]

    source, data_entry = _clean_data(data, dataset, dict(limit=limit, c_dir=c_dir, corruptions=c_names,
                                                         severities=severities, p_dir=p_dir,
                                                         perturbations=p_names, seed=seed))
    results = new_results(info, data_entry, {
        **({dataset.c.value: {**_origin(c_dir, seed), "severities": severities, "corruptions": c_names}}
           if want_c else {}),
        **({dataset.p.value: {**_origin(p_dir, seed), "perturbations": p_names}} if want_p else {}),
    }, {"flip_rule": flip_rule, "batch_size": batch_size, "device": str(device)})
    if baseline == "auto":
        baseline = default_baseline(dataset.c.value)
    baseline = load_baseline(baseline) if baseline else None  # a bad baseline fails now, not after the work
    if shard is not None:
        as_partial(results, shard, baseline)
        out = partial_path(out, shard) if out is not None else None
    out = Path(out) if out is not None else None

    with process_group(str(device)) as ctx:
        if ctx.is_main:
            for note in data_entry["notes"]:  # said once, up front, and kept in the results
                print(f"note: {note}", file=sys.stderr)
        if out is not None and resume:
            results = _resumed(results, out, ctx)
        units = [Unit(UnitKind.CLEAN)] + [Unit(UnitKind.CORRUPTION, c, s) for c in c_names for s in severities] \
            + [Unit(UnitKind.PERTURBATION, p) for p in p_names]
        todo = [u for u in units if not is_done(results, u)]
        job = shard or Shard()
        start, stop = job.bounds(len(source.indices))  # this job's images (all, or the array task's)
        first, last = process_shard(ctx, job).bounds(len(source.indices))  # this process's part of them
        source.indices = source.indices[first:last]
        _run(model, todo, source, Normalize(norm["mean"], norm["std"]), results, out=out if ctx.is_main else None,
             batch_size=batch_size, device=resolve_device(device, ctx), flip_rule=flip_rule, noise=NOISE_SEQUENCES,
             progress=progress and ctx.is_main, ctx=ctx, expected=stop - start)

    finish(results, baseline)
    if out is not None and ctx.is_main:
        write_results(results, out)
    return results


def _resumed(results: dict, out: Path, ctx: DistContext) -> dict:
    """``results`` with the finished units of ``out`` (:func:`~pushpull.engine.results.resume`).

    Rank 0 alone reads the file (the others may run where it is not); every process gets
    its outcome, so a refused file stops them all with the same message.
    """
    error: Exception | None = None
    if ctx.is_main and out.is_file():
        try:
            resume_results(results, out)
        except (OSError, ValueError) as err:
            error = err
    if ctx.enabled:
        shared, message = all_gather_object((results, None if error is None else str(error)), ctx)[0]
        if message is not None and error is None:
            raise ValueError(message)
        results = shared
    if error is not None:
        raise error
    return results


def _origin(folder: Path | None, seed: int) -> dict:
    """A benchmark's entry: read from ``folder``, or generated with ``seed`` under the current stream rule."""
    if folder is not None:
        return {"source": "disk", "path": str(folder), "seed": None}
    return {"source": "generated", "path": None, "seed": seed, "stream_rule": STREAM_RULE}


class PeerFailed(RuntimeError):
    """Another process of the group stopped with an error (its message says which and why)."""


def _run(model: nn.Module, units: list[Unit], source: Source, normalize: Normalize, results: dict, *,
         out: Path | None, batch_size: int, device: torch.device, flip_rule: str, noise: frozenset, progress: bool,
         ctx: DistContext, expected: int) -> None:
    """Evaluate ``units`` in order, recording each in ``results`` (and ``out``) as it completes.

    This process evaluates ``source.indices``; a unit's counts are added over the group's
    processes, ``expected`` images (or sequences) in all. One exchange per unit carries
    either a process's counts or its error, so a failure stops every process at once.
    """
    from tqdm.auto import tqdm

    stream = prefetch(batches(units, source, normalize, batch_size=batch_size, pin_memory=device.type == "cuda"))
    model = model.to(device).eval()
    bar = tqdm(total=expected * len(units), desc="evaluating", unit="img", disable=not progress)  # -P: sequences
    with torch.inference_mode(), closing(stream):
        for done, unit in enumerate(units, 1):
            try:
                local = _unit_counts(model, stream, device, flip_rule, noise, bar, ctx.world_size)
            except Exception as err:
                if ctx.enabled and not isinstance(err, PeerFailed):
                    with suppress(PeerFailed):  # the others stop with this message; this process raises its own
                        _exchange(None, f"rank {ctx.rank}: {err}", ctx)
                raise
            counts = _exchange(local, None, ctx)
            if counts.n != expected:
                raise RuntimeError(f"{unit.label}: evaluated {counts.n} items, expected {expected}")
            record(results, unit, counts)
            if out is not None:
                write_results(results, out)
            bar.n = done * expected
            bar.set_postfix_str(f"done: {unit.label}")
    bar.close()


def _unit_counts(model: nn.Module, stream: Iterator[Batch | UnitDone], device: torch.device, flip_rule: str,
                 noise: frozenset, bar: Any, world_size: int) -> Counts:
    """This process's counts of the next unit of ``stream``."""
    counts = Counts()
    for batch in stream:
        if isinstance(batch, UnitDone):
            return counts
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
            more = Counts(len(batch.labels), int((logits.argmax(1) != batch.labels).sum()))
        else:
            seqs = logits.reshape(-1, batch.frames, logits.shape[1])
            is_noise = batch.unit.name in noise
            more = Counts(len(seqs), flips=int(metrics.flips(seqs.argmax(-1), noise=is_noise, rule=flip_rule).sum()),
                          distance=int(metrics.top5_distances(seqs, noise=is_noise, rule=flip_rule).sum()),
                          frames=batch.frames)
        counts += more
        bar.update(more.n * world_size)  # about: the other processes go alike; set exactly at the unit's end
    raise RuntimeError("the data stream ended inside a unit")


def _exchange(counts: Counts | None, error: str | None, ctx: DistContext) -> Counts:
    """The unit's counts added over the group; a process's ``error`` raises :class:`PeerFailed` on the others."""
    if not ctx.enabled:
        return counts
    gathered = all_gather_object((counts, error), ctx)
    failed = next((message for _, message in gathered if message is not None), None)
    if failed is not None:
        raise PeerFailed(failed)
    return sum((c for c, _ in gathered), Counts())
