"""The results file of ``pushpull eval``: its schema, what a resume must match, the JSON and its CSV twin,
and the partial files of job-array shards with their exact merge.

One writer for the format (``pushpull-robustness-results``, version 1). Fields added
since version 1 (``data.official``, ``data.notes``, the raw counts ``wrong``, ``flips``,
``top5_distance_sum``) are optional for readers and are not part of what a resume
compares, so older files still load and resume.

Every number is a ratio of integer counts (errors of n images; flips and top-5 distances
of n sequences' frame pairs), and the counts are stored beside it. So a job split over
processes or job-array shards adds counts, which is exact in any order, and gives the
file one process writes, digit for digit. A shard's partial file
(``pushpull-robustness-partial``) is that file for its slice of the images, plus which
shard it is and the baseline for the summary; :func:`merge_partials` adds them up.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import atomic_write, read_json, write_json
from ..data.sources import Unit, UnitKind

if TYPE_CHECKING:
    from ..baselines import Baseline
    from .distributed import Shard

RESULTS_FORMAT = "pushpull-robustness-results"
PARTIAL_FORMAT = "pushpull-robustness-partial"
RESULTS_VERSION = 1
# Informational data fields: shown by reports, not compared on resume (older files lack them).
_NOTE_FIELDS = ("official", "notes")


@dataclass
class Counts:
    """A unit's raw counts over some of its images: what processes and shards add up."""

    n: int = 0  # images, or sequences for -P
    wrong: int = 0  # top-1 errors (clean and -C units)
    flips: int = 0  # -P: compared frame pairs whose top-1 prediction changed
    distance: int = 0  # -P: the compared pairs' top-5 distances, summed
    frames: int = 0  # -P: frames per sequence (0 while no sequence is counted)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.n + other.n, self.wrong + other.wrong, self.flips + other.flips,
                      self.distance + other.distance, max(self.frames, other.frames))


def software() -> dict[str, str]:
    """Versions that produced a results file."""
    import numpy as np
    import torch
    import torchvision

    from .. import __version__

    return {"pushpull": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "platform": platform.platform()}


def new_results(model: dict, data: dict, benchmarks: dict, settings: dict) -> dict[str, Any]:
    """An empty results dict: what was evaluated, how, and by which software; no numbers yet."""
    return {"format": RESULTS_FORMAT, "format_version": RESULTS_VERSION, "model": model, "data": data,
            "benchmarks": benchmarks, "settings": settings, "software": software(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "complete": False, "clean": None, "corruptions": {}, "perturbations": {}, "summary": None}


def fingerprint(results: dict) -> dict:
    """What must match for a results file to be resumed (or extended with more corruptions).

    The model's weights, options and input normalisation; the data; each benchmark's source,
    seed and random-stream rule (a generated entry without one was made under rule 1).
    """
    lists = ("corruptions", "perturbations", "severities")
    model = results["model"]
    norm = model.get("normalization") or {}
    return {"weights_sha256": model["weights_sha256"], "model_kwargs": model.get("model_kwargs") or {},
            "normalization": {"mean": norm.get("mean"), "std": norm.get("std")},
            "data": {k: v for k, v in results["data"].items() if k not in _NOTE_FIELDS},
            "benchmarks": {b: {**({"stream_rule": 1} if entry.get("source") == "generated" else {}),
                               **{k: v for k, v in entry.items() if k not in lists}}
                           for b, entry in results["benchmarks"].items()},
            "settings": {k: v for k, v in results["settings"].items() if k not in ("batch_size", "device")}}


def resume(results: dict, path: Path) -> None:
    """Carry the finished units of the run saved in ``path`` into ``results``; refuse a different run."""
    previous = read_json(path, "results file ")
    if not isinstance(previous, dict) or previous.get("format") not in (RESULTS_FORMAT, PARTIAL_FORMAT):
        raise ValueError(f"{path} exists and is not a pushpull results file; choose another --out")
    if previous.get("format") != results["format"] or previous.get("shard") != results.get("shard"):
        def what(r: dict) -> str:
            return f"shard {r['shard']['index']}/{r['shard']['count']}" if r.get("shard") else "a whole run"

        raise ValueError(f"{path} holds the results of {what(previous)}, not of {what(results)}; choose another --out")
    if fingerprint(previous) != fingerprint(results):
        raise ValueError(f"{path} holds results of a different run (model, data, benchmark or settings "
                         f"differ); choose another --out or pass --no-resume to overwrite it")
    for key in ("clean", "corruptions", "perturbations", "created"):
        results[key] = previous[key]
    for name, entry in results["benchmarks"].items():  # a rerun may add corruptions or perturbations
        for key in ("corruptions", "perturbations", "severities"):
            if key in entry:
                entry[key] = list(dict.fromkeys(previous["benchmarks"][name][key] + entry[key]))


def is_done(results: dict, unit: Unit) -> bool:
    """Whether ``results`` already holds ``unit``."""
    if unit.kind is UnitKind.CLEAN:
        return results.get("clean") is not None
    if unit.kind is UnitKind.CORRUPTION:
        return str(unit.severity) in results["corruptions"].get(unit.name, {}).get("errors", {})
    return unit.name in results["perturbations"]


def record(results: dict, unit: Unit, counts: Counts) -> None:
    """Store a finished unit: its counts, and the error rate or flip statistics they give."""
    n = counts.n
    if unit.kind is UnitKind.CLEAN:
        results["clean"] = {"error": _ratio(counts.wrong, n), "n": n, "wrong": counts.wrong}
    elif unit.kind is UnitKind.CORRUPTION:
        entry = results["corruptions"].setdefault(unit.name, {"errors": {}, "n": n})
        entry["errors"][str(unit.severity)] = _ratio(counts.wrong, n)
        entry["errors"] = dict(sorted(entry["errors"].items()))
        entry["wrong"] = dict(sorted({**entry.get("wrong", {}), str(unit.severity): counts.wrong}.items()))
    else:
        pairs = n * (counts.frames - 1)  # every sequence of a perturbation has the same length
        results["perturbations"][unit.name] = {
            "flip_probability": _ratio(counts.flips, pairs), "top5_distance": _ratio(counts.distance, pairs), "n": n,
            "frames": counts.frames, "flips": counts.flips, "top5_distance_sum": counts.distance}


def _ratio(count: int, total: int) -> float | None:
    """``count / total``; None for a shard whose slice holds no image (more shards than images)."""
    return count / total if total else None


def units(results: dict) -> list[Unit]:
    """The units ``results`` holds, in the order they were evaluated."""
    found = [Unit(UnitKind.CLEAN)] if results.get("clean") is not None else []
    found += [Unit(UnitKind.CORRUPTION, name, int(s)) for name, entry in results["corruptions"].items()
              for s in entry["errors"]]
    return found + [Unit(UnitKind.PERTURBATION, name) for name in results["perturbations"]]


def counts(results: dict, unit: Unit) -> Counts:
    """The raw counts ``results`` holds for ``unit`` (written with it by :func:`record`)."""
    if unit.kind is UnitKind.CLEAN:
        entry = results["clean"]
        return Counts(entry["n"], entry["wrong"])
    if unit.kind is UnitKind.CORRUPTION:
        entry = results["corruptions"][unit.name]
        return Counts(entry["n"], entry["wrong"][str(unit.severity)])
    entry = results["perturbations"][unit.name]
    return Counts(entry["n"], flips=entry["flips"], distance=entry["top5_distance_sum"], frames=entry["frames"])


def finish(results: dict, baseline: Baseline | None) -> None:
    """Mark ``results`` complete, with its summary (normalised by ``baseline``; a shard's has none)."""
    from .. import metrics

    results["complete"] = True
    results["summary"] = metrics.summarize(results, baseline) if results["format"] == RESULTS_FORMAT else None


# ----------------------------------------------------------------------------- job-array shards


def as_partial(results: dict, shard: Shard, baseline: Baseline | None) -> None:
    """Make ``results`` the partial results of ``shard``, keeping ``baseline`` for the merged summary."""
    results["format"] = PARTIAL_FORMAT
    results["shard"] = {"index": shard.index, "count": shard.count}
    results["baseline"] = baseline.to_dict() if baseline is not None else None


def partial_path(out: str | Path, shard: Shard) -> Path:
    """Where shard K/N of a job whose results go to ``out`` keeps its partial results: ``r.shard-K-of-N.json``.

    So every task of a job array can be given the same ``--out``.
    """
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{shard.index}-of-{shard.count}{out.suffix or '.json'}")


def read_partial(path: Path) -> dict:
    """A shard's partial results file; a one-line error naming ``path`` when it is not one, or unfinished."""
    part = read_json(path, "partial results file ")
    if not isinstance(part, dict) or part.get("format") not in (RESULTS_FORMAT, PARTIAL_FORMAT):
        raise ValueError(f"{path} is not a pushpull results file")
    if part["format"] == RESULTS_FORMAT:
        raise ValueError(f"{path} holds whole results, not a shard's (`pushpull eval --shard K/N` writes those)")
    shard = part["shard"]
    if not part.get("complete"):
        raise ValueError(f"{path}: shard {shard['index']}/{shard['count']} is unfinished; rerun its "
                         f"`pushpull eval ... --shard {shard['index']}/{shard['count']}` to complete it")
    return part


def _differences(part: dict) -> dict[str, object]:
    """What every shard of one job shares, by what a mismatch is called."""
    model = {k: v for k, v in part["model"].items() if k not in ("weights", "weights_sha256")}
    return {"weights (weights_sha256)": part["model"]["weights_sha256"], "model": model, "data": part["data"],
            "benchmarks": part["benchmarks"], "baseline": part["baseline"],
            "settings": {k: v for k, v in part["settings"].items() if k not in ("batch_size", "device")}}


def merge_partials(paths: Sequence[Path]) -> dict[str, Any]:
    """The results of the whole job from all its shards' partial files: counts added, rates recomputed.

    Refuses (one line naming the file) shards of another job (model, weights, data,
    benchmarks, baseline or settings differ), of another shard count, a shard given twice,
    a missing or unfinished shard.
    """
    from ..baselines import Baseline

    if not paths:
        raise ValueError("no partial results files given")
    parts = [(Path(p), read_partial(Path(p))) for p in paths]
    first_path, first = parts[0]
    total, seen, shared = first["shard"]["count"], {}, _differences(first)
    for path, part in parts:
        index, count = part["shard"]["index"], part["shard"]["count"]
        if count != total:
            raise ValueError(f"{path} is shard {index}/{count} but {first_path} is of {total} shards")
        if index in seen:
            raise ValueError(f"{path} and {seen[index]} are both shard {index}/{count}")
        seen[index] = path
        for what, value in _differences(part).items():
            if value != shared[what]:
                raise ValueError(f"{path} is not of the same evaluation as {first_path}: its {what} differ")
    missing = [f"{k}/{total}" for k in range(total) if k not in seen]
    if missing:
        raise ValueError(f"shard {', '.join(missing)} missing: the {total} shards' partial files are all needed")

    merged = {k: v for k, v in first.items() if k not in ("shard", "baseline")}
    merged.update(format=RESULTS_FORMAT, created=min(part["created"] for _, part in parts), complete=False,
                  clean=None, corruptions={}, perturbations={}, summary=None)
    for unit in units(first):
        summed = sum((counts(part, unit) for _, part in parts), Counts())
        if summed.n != first["data"]["num_evaluated"]:
            raise ValueError(f"{unit.label}: the shards hold {summed.n} images, the job {first['data']['num_evaluated']}")
        record(merged, unit, summed)
    finish(merged, Baseline.from_dict(first["baseline"]) if first["baseline"] is not None else None)
    return merged


def write_results(results: dict, path: Path) -> None:
    """The results JSON and its CSV twin (not for a shard's partial file), each written atomically."""
    write_json(path, results)
    if results["format"] == RESULTS_FORMAT:
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
