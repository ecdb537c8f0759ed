"""The results file of ``pushpull eval``: its schema, what a resume must match, the JSON and its CSV twin.

One writer for the format (``pushpull-robustness-results``, version 1). Fields added
since version 1 (``data.official``, ``data.notes``) are optional for readers and are not
part of what a resume compares, so older files still load and resume.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from .._files import atomic_write, read_json, write_json
from ..data.sources import Unit, UnitKind

RESULTS_FORMAT = "pushpull-robustness-results"
RESULTS_VERSION = 1
# Informational data fields: shown by reports, not compared on resume (older files lack them).
_NOTE_FIELDS = ("official", "notes")


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
    if not isinstance(previous, dict) or previous.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path} exists and is not a pushpull results file; choose another --out")
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


def record(results: dict, unit: Unit, *, n: int, wrong: int = 0, fp_sum: float = 0.0, t5d_sum: float = 0.0,
           frames: int = 1) -> None:
    """Store a finished unit: an error rate (``wrong`` of ``n``) or mean flip statistics over ``n`` sequences."""
    if unit.kind is UnitKind.CLEAN:
        results["clean"] = {"error": wrong / n, "n": n}
    elif unit.kind is UnitKind.CORRUPTION:
        entry = results["corruptions"].setdefault(unit.name, {"errors": {}, "n": n})
        entry["errors"][str(unit.severity)] = wrong / n
        entry["errors"] = dict(sorted(entry["errors"].items()))
    else:
        results["perturbations"][unit.name] = {"flip_probability": fp_sum / n, "top5_distance": t5d_sum / n,
                                               "n": n, "frames": frames}


def write_results(results: dict, path: Path) -> None:
    """The results JSON and its CSV twin, each written atomically."""
    write_json(path, results)
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
