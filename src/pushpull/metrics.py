"""Robustness metrics of the -C and -P benchmarks, as pure functions over arrays.

Definitions follow Hendrycks & Dietterich (ICLR 2019) and the push-pull paper's
Appendix B. Errors are fractions in [0, 1] (reports print percent):

- ``E``: top-1 error on the clean test set; ``E[c, s]``: error on corruption c, severity s.
- ``CE_c = sum_s E[c, s] / sum_s E_base[c, s]`` (eq. 2); the unnormalised CE is the mean
  over severities; ``mCE`` is the mean CE over the 15 benchmark corruptions.
- ``rCE_c = sum_s (E[c, s] - E) / sum_s (E_base[c, s] - E_base)`` (eq. 3).
- ``FP_p``: probability that the top-1 prediction changes between frames (eq. 4). With
  Hendrycks' rule the noise sequences compare every frame with frame 0 (their frames are
  independent draws around a clean frame 0), the others compare consecutive frames; the
  original push-pull code compares consecutive frames for all. ``FR_p = FP_p / FP_base_p``.
- ``T5D``: Hendrycks' top-5 distance: for the top-5 classes of the reference frame, the
  sum of how far each moved in the ranking of the next frame (positions clipped at 6th).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from .baselines import Baseline

FlipRule = Literal["hendrycks", "consecutive"]
FLIP_RULES: tuple[str, ...] = ("hendrycks", "consecutive")


def error_rate(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 error: the fraction of ``predictions`` that differ from ``labels``."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    if predictions.size == 0:
        raise ValueError("cannot compute an error rate on zero samples")
    return float(np.mean(predictions != labels))


def unnormalized_ce(errors: Sequence[float]) -> float:
    """Unnormalised corruption error: the mean error over the severities evaluated."""
    return float(np.mean(_as_errors(errors)))


def corruption_error(errors: Sequence[float], baseline_errors: Sequence[float]) -> float:
    """CE (eq. 2): summed errors over severities divided by the baseline's summed errors."""
    errors, baseline_errors = _paired(errors, baseline_errors)
    return float(errors.sum() / baseline_errors.sum())


def relative_ce(errors: Sequence[float], clean_error: float, baseline_errors: Sequence[float],
                baseline_clean_error: float) -> float:
    """Relative CE (eq. 3): the gap to the clean error, normalised by the baseline's gap."""
    errors, baseline_errors = _paired(errors, baseline_errors)
    gap = float((baseline_errors - baseline_clean_error).sum())
    if gap == 0:
        raise ValueError("the baseline's corrupted and clean errors are equal: rCE is undefined")
    return float((errors - clean_error).sum() / gap)


def mean_over(values: Mapping[str, float], names: Sequence[str]) -> float:
    """Mean of ``values`` over ``names``; every name must be present (so mCE means the 15)."""
    missing = [n for n in names if n not in values or values[n] is None]
    if missing:
        raise KeyError(f"cannot average: no value for {', '.join(missing)}")
    return float(np.mean([values[n] for n in names]))


def _reference_frames(num_frames: int, noise: bool, rule: FlipRule) -> np.ndarray:
    """For frames 1..T-1, the index of the frame each one is compared with."""
    if rule not in FLIP_RULES:
        raise ValueError(f"flip rule must be one of {FLIP_RULES}, got {rule!r}")
    if num_frames < 2:
        raise ValueError(f"a perturbation sequence needs at least 2 frames, got {num_frames}")
    later = np.arange(1, num_frames)
    return np.zeros_like(later) if noise and rule == "hendrycks" else later - 1


def flips(predictions: np.ndarray, *, noise: bool, rule: FlipRule = "hendrycks") -> np.ndarray:
    """Whether each compared frame's top-1 prediction differs from its reference frame's: bool (sequences, T-1).

    Its sum is an integer count: the evaluator adds counts over batches and processes,
    so the FP it reports does not depend on how the sequences were split.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be (sequences, frames), got shape {predictions.shape}")
    ref = _reference_frames(predictions.shape[1], noise, rule)
    return predictions[:, 1:] != predictions[:, ref]


def flip_probability(predictions: np.ndarray, *, noise: bool, rule: FlipRule = "hendrycks") -> float:
    """FP (eq. 4) of top-1 ``predictions`` shaped (sequences, frames): mean over sequences."""
    return float(flips(predictions, noise=noise, rule=rule).mean(axis=1).mean())


def top5_distance(logits: np.ndarray, *, noise: bool, rule: FlipRule = "hendrycks") -> float:
    """T5D of ``logits`` shaped (sequences, frames, classes): mean over frame pairs and sequences."""
    return float(top5_distances(logits, noise=noise, rule=rule).mean(axis=1).mean())


def top5_distances(logits: np.ndarray, *, noise: bool, rule: FlipRule = "hendrycks") -> np.ndarray:
    """The top-5 distance of every compared frame pair: integers (sequences, T-1).

    For each compared pair (reference frame a, frame b): take a's five best classes in
    order (positions 0..4), find each one's position in b's ranking, clip it at 5, and
    sum ``|position in a - clipped position in b|``. Ties rank by class index, like
    ``scipy.stats.rankdata(method="ordinal")`` in the reference code.
    """
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (sequences, frames, classes), got shape {logits.shape}")
    n, t, c = logits.shape
    ref = _reference_frames(t, noise, rule)
    order = np.argsort(-logits, axis=-1, kind="stable")  # order[..., r] = class at position r
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(c), axis=-1)  # position[..., k] = rank of class k
    k = min(5, c)
    top_a = order[:, ref, :k]  # (n, t-1, k): the reference frame's best classes
    moved = np.take_along_axis(position[:, 1:], top_a, axis=-1)
    return np.abs(np.arange(k) - np.minimum(moved, 5)).sum(axis=-1)


def flip_rate(fp: float, baseline_fp: float) -> float:
    """FR: the flip probability normalised by the baseline's."""
    if baseline_fp <= 0:
        raise ValueError(f"baseline flip probability must be positive, got {baseline_fp}")
    return float(fp / baseline_fp)


def benchmark_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The 15 corruptions averaged by mCE and the 10 perturbations averaged by mFR."""
    from .data.corruptions import BENCHMARK_CORRUPTIONS
    from .data.perturbations import PERTURBATIONS

    return tuple(BENCHMARK_CORRUPTIONS), tuple(PERTURBATIONS)


def summarize(results: Mapping, baseline: Baseline | None = None, *,
              corruptions: Sequence[str] | None = None, perturbations: Sequence[str] | None = None) -> dict:
    """Summary metrics of a results dict (as ``pushpull eval`` writes), normalised by ``baseline``.

    ``corruptions``/``perturbations`` are the names averaged by mCE, rCE and mFR (default:
    the 15 benchmark corruptions and the 10 perturbations); other corruptions evaluated
    (the extras) get per-corruption numbers but stay out of the means. A mean is None
    unless every name it averages was evaluated and, for normalised ones, has a baseline.
    """
    if corruptions is None or perturbations is None:
        default_c, default_p = benchmark_names()
        corruptions = default_c if corruptions is None else corruptions
        perturbations = default_p if perturbations is None else perturbations
    clean = (results.get("clean") or {}).get("error")
    per_c: dict[str, dict] = {}
    for name, entry in (results.get("corruptions") or {}).items():
        by_severity = {int(s): e for s, e in (entry.get("errors") or {}).items() if e is not None}
        if not by_severity:
            continue
        severities = sorted(by_severity)
        errors = [by_severity[s] for s in severities]
        row = {"ce_unnormalized": unnormalized_ce(errors), "ce": None, "rce": None, "severities": severities}
        base = baseline.errors_for(name, severities) if baseline else None
        if base is not None:
            row["ce"] = corruption_error(errors, base)
            if clean is not None and baseline.clean_error is not None:
                row["rce"] = relative_ce(errors, clean, base, baseline.clean_error)
        per_c[name] = row
    per_p: dict[str, dict] = {}
    for name, entry in (results.get("perturbations") or {}).items():
        fp = entry.get("flip_probability")
        if fp is None:
            continue
        base_fp = baseline.flip_probabilities.get(name) if baseline else None
        per_p[name] = {"fp": fp, "t5d": entry.get("top5_distance"),
                       "fr": flip_rate(fp, base_fp) if base_fp else None}

    def mean_of(table: dict, names: Sequence[str], key: str) -> float | None:
        values = {n: table[n][key] for n in names if n in table and table[n][key] is not None}
        return mean_over(values, names) if len(values) == len(names) and names else None

    extras = [n for n in per_c if n not in corruptions]
    return {
        "baseline": baseline.name if baseline else None,
        "error": clean,
        "mCE": mean_of(per_c, corruptions, "ce"),
        "rCE": mean_of(per_c, corruptions, "rce"),
        "mean_ce_unnormalized": mean_of(per_c, corruptions, "ce_unnormalized"),
        "extras_mean_ce_unnormalized": mean_of(per_c, extras, "ce_unnormalized"),
        "mFR": mean_of(per_p, perturbations, "fr"),
        "mFP": mean_of(per_p, perturbations, "fp"),
        "mT5D": mean_of(per_p, perturbations, "t5d"),
        "corruptions": per_c,
        "perturbations": per_p,
    }


def _as_errors(errors: Sequence[float]) -> np.ndarray:
    arr = np.asarray(errors, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"expected a non-empty list of errors (one per severity), got shape {arr.shape}")
    return arr


def _paired(errors: Sequence[float], baseline_errors: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    errors, baseline_errors = _as_errors(errors), _as_errors(baseline_errors)
    if errors.shape != baseline_errors.shape:
        raise ValueError(f"{errors.size} severities evaluated but the baseline has {baseline_errors.size}")
    if baseline_errors.sum() <= 0:
        raise ValueError("baseline errors sum to zero: cannot normalise")
    return errors, baseline_errors
