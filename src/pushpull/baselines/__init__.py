"""Normalisation baselines for CE, rCE and FR: built-in AlexNet numbers or any results file.

Built in (JSON files beside this module):

- ``alexnet-cifar10``: the push-pull paper's AlexNet-CIFAR: clean error, CIFAR-10-C error
  per corruption (mean over severities only, as published) and CIFAR-10-P FP.
- ``alexnet-imagenet``: Hendrycks & Dietterich's torchvision AlexNet, ImageNet-C error per
  corruption and severity (no ImageNet-P flip probabilities).

A baseline file and a results file of ``pushpull eval`` share the same keys (``clean``,
``corruptions``, ``perturbations``), so any model's saved results can be the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._files import read_json
from .._names import unknown_name_message
from ..data.robustness_sets import SEVERITIES as ALL_SEVERITIES  # severities 1..5: defined once, there

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Baseline:
    """A model's reference numbers: per-severity errors where known, else the mean over all 5."""

    name: str
    clean_error: float | None = None
    corruption_errors: dict[str, dict[int, float]] = field(default_factory=dict)
    corruption_mean_errors: dict[str, float] = field(default_factory=dict)
    flip_probabilities: dict[str, float] = field(default_factory=dict)

    def errors_for(self, corruption: str, severities: Sequence[int]) -> np.ndarray | None:
        """The baseline's errors at ``severities`` (to pair with a model's), or None if unknown.

        A baseline published only as the mean over the 5 severities stands for each of them,
        which makes sums over all 5 exact; it cannot pair with a subset of severities.
        """
        per_severity = self.corruption_errors.get(corruption)
        if per_severity and all(s in per_severity for s in severities):
            return np.array([per_severity[s] for s in severities], dtype=np.float64)
        mean = self.corruption_mean_errors.get(corruption)
        if mean is not None and sorted(severities) == list(ALL_SEVERITIES):
            return np.full(len(severities), mean, dtype=np.float64)
        return None

    def to_dict(self) -> dict:
        """The baseline as :meth:`from_dict` reads it back (equal, field by field): a partial results file keeps it."""
        corruptions = {c: {"errors": {str(s): e for s, e in errors.items()}}
                       for c, errors in self.corruption_errors.items()}
        corruptions |= {c: {"mean_error": m} for c, m in self.corruption_mean_errors.items() if c not in corruptions}
        return {"name": self.name, "clean": {"error": self.clean_error}, "corruptions": corruptions,
                "perturbations": {p: {"flip_probability": fp} for p, fp in self.flip_probabilities.items()}}

    @classmethod
    def from_dict(cls, data: dict, name: str | None = None) -> Baseline:
        """Read the ``clean``/``corruptions``/``perturbations`` keys of a baseline or results dict."""
        corruption_errors, mean_errors = {}, {}
        for corruption, entry in (data.get("corruptions") or {}).items():
            errors = {int(s): float(e) for s, e in (entry.get("errors") or {}).items() if e is not None}
            if errors:
                corruption_errors[corruption] = errors
                if sorted(errors) == list(ALL_SEVERITIES):
                    mean_errors[corruption] = float(np.mean(list(errors.values())))
            elif entry.get("mean_error") is not None:
                mean_errors[corruption] = float(entry["mean_error"])
        flips = {p: float(e["flip_probability"]) for p, e in (data.get("perturbations") or {}).items()
                 if e.get("flip_probability") is not None}
        clean = (data.get("clean") or {}).get("error")
        label = name or data.get("name") or (data.get("model") or {}).get("label") or "baseline"
        return cls(label, None if clean is None else float(clean), corruption_errors, mean_errors, flips)


def builtin_baselines() -> list[str]:
    """Names of the baselines shipped with the package."""
    return sorted(p.stem for p in _HERE.glob("*.json"))


def default_baseline(benchmark: str) -> str | None:
    """The paper's normalisation baseline for a benchmark name such as ``cifar10-c``."""
    dataset = benchmark.split("-")[0]
    return {"cifar10": "alexnet-cifar10", "imagenet": "alexnet-imagenet"}.get(dataset)


def load_baseline(spec: str | Path | Baseline) -> Baseline:
    """A built-in baseline by name, or a baseline/results JSON file by path."""
    if isinstance(spec, Baseline):
        return spec
    path = _HERE / f"{spec}.json" if str(spec) in builtin_baselines() else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(unknown_name_message("baseline", str(spec), builtin_baselines(),
                                                     " (neither a built-in nor an existing results/baseline JSON file)"))
    data = read_json(path, "baseline file ")
    if not isinstance(data, dict) or not ({"clean", "corruptions", "perturbations"} & data.keys()):
        raise ValueError(f"baseline file {path} has none of the keys clean/corruptions/perturbations")
    return Baseline.from_dict(data, name=data.get("name") or (data.get("model") or {}).get("label") or path.stem)
