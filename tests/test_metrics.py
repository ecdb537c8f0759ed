"""Metrics against hand-computed cases and against a literal transcription of Hendrycks' loops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pushpull import metrics
from pushpull.baselines import Baseline, builtin_baselines, load_baseline

BENCH = ("a", "b")  # two-corruption / two-perturbation stand-ins for the benchmark lists


def test_error_rate_hand_case():
    assert metrics.error_rate(np.array([0, 1, 2, 3]), np.array([0, 1, 1, 1])) == 0.5
    with pytest.raises(ValueError, match="shape"):
        metrics.error_rate(np.zeros(3), np.zeros(4))


def test_ce_and_rce_hand_case():
    errors, base = [0.1, 0.2, 0.3, 0.4, 0.5], [0.2] * 5
    assert metrics.unnormalized_ce(errors) == pytest.approx(0.3)
    assert metrics.corruption_error(errors, base) == pytest.approx(1.5 / 1.0)
    # (1.5 - 5 * 0.05) / (1.0 - 5 * 0.1)
    assert metrics.relative_ce(errors, 0.05, base, 0.1) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="severities"):
        metrics.corruption_error(errors, base[:3])


def test_flip_probability_noise_vs_consecutive_rule():
    preds = np.array([[0, 1, 0, 0],    # vs frame 0: 1,0,0 ; consecutive: 1,1,0
                      [2, 2, 2, 3]])   # vs frame 0: 0,0,1 ; consecutive: 0,0,1
    assert metrics.flip_probability(preds, noise=True) == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert metrics.flip_probability(preds, noise=False) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert metrics.flip_probability(preds, noise=True, rule="consecutive") == pytest.approx((2 / 3 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="flip rule"):
        metrics.flip_probability(preds, noise=True, rule="nope")


def test_top5_distance_hand_cases():
    ranking_a = np.arange(7, 0, -1, dtype=float)  # class 0 best ... class 6 worst
    swap01 = ranking_a[[1, 0, 2, 3, 4, 5, 6]]  # classes 0 and 1 swap places: distance 1 + 1
    drop0 = np.array([0, 7, 6, 5, 4, 3, 2], dtype=float)  # class 0 falls to last (clipped to 5): 5 + 4 * 1
    logits = np.stack([np.stack([ranking_a, swap01]), np.stack([ranking_a, drop0])])
    assert metrics.top5_distance(logits[:1], noise=False) == 2
    assert metrics.top5_distance(logits[1:], noise=False) == 9
    assert metrics.top5_distance(logits, noise=False) == 5.5


def _reference_loops(logits: np.ndarray, noise: bool) -> tuple[float, float]:
    """FP and T5D transcribed from hendrycks/robustness ImageNet-P/test.py (difficulty 1)."""
    from scipy.stats import rankdata

    n_classes = logits.shape[-1]
    cum = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (n_classes - 1 - 5)))
    fp = t5d = 0.0
    for vid in logits:
        preds = vid.argmax(1)
        ranks = [rankdata(-frame, method="ordinal").astype(np.int64) for frame in vid]
        flips, dists = [], []
        prev, perm1 = preds[0], ranks[0]
        for pred, perm2 in zip(preds[1:], ranks[1:]):
            flips.append(int(prev != pred))
            sigma = perm2[np.argsort(perm1)]
            dists.append(np.sum(np.abs(cum[:5] - cum[sigma - 1][:5])))
            if not noise:
                prev, perm1 = pred, perm2
        fp += np.mean(flips) / len(logits)
        t5d += np.mean(dists) / len(logits)
    return fp, t5d


@pytest.mark.parametrize("noise", [True, False])
def test_fp_and_t5d_match_reference_loops_on_random_logits(noise):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(12, 9, 10))
    logits[:, 1::2] = logits[:, :-1:2] + 0.3 * rng.normal(size=logits[:, 1::2].shape)  # some stable frames
    logits[0, 3, :] = 1.0  # a frame of ties: ordinal ranking breaks them by class index
    want_fp, want_t5d = _reference_loops(logits, noise)
    assert metrics.flip_probability(logits.argmax(-1), noise=noise) == pytest.approx(want_fp, abs=1e-12)
    assert metrics.top5_distance(logits, noise=noise) == pytest.approx(want_t5d, abs=1e-12)


def test_flip_rate():
    assert metrics.flip_rate(0.02, 0.04) == 0.5
    with pytest.raises(ValueError):
        metrics.flip_rate(0.02, 0.0)


def _results(clean, corruptions, perturbations):
    return {"clean": {"error": clean},
            "corruptions": {c: {"errors": {str(s + 1): e for s, e in enumerate(errs)}}
                            for c, errs in corruptions.items()},
            "perturbations": {p: {"flip_probability": fp, "top5_distance": 0.5} for p, fp in perturbations.items()}}


def test_summarize_normalises_by_baseline_and_keeps_extras_out_of_means():
    base = Baseline("base", 0.1, corruption_errors={"a": dict(zip(range(1, 6), [0.2] * 5))},
                    corruption_mean_errors={"b": 0.4}, flip_probabilities={"a": 0.04, "b": 0.01})
    res = _results(0.05, {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.4] * 5, "extra": [0.9] * 5}, {"a": 0.02, "b": 0.02})
    s = metrics.summarize(res, base, corruptions=BENCH, perturbations=BENCH)
    assert s["corruptions"]["a"]["ce"] == pytest.approx(1.5)
    assert s["corruptions"]["b"]["ce"] == pytest.approx(1.0)  # mean-only baseline stands for each severity
    assert s["corruptions"]["b"]["rce"] == pytest.approx((2.0 - 0.25) / (2.0 - 0.5))
    assert s["mCE"] == pytest.approx(1.25)
    assert s["rCE"] == pytest.approx((2.5 + 1.75 / 1.5) / 2)
    assert s["mean_ce_unnormalized"] == pytest.approx(0.35)
    assert s["extras_mean_ce_unnormalized"] == pytest.approx(0.9)
    assert s["corruptions"]["extra"]["ce"] is None
    assert s["mFR"] == pytest.approx((0.5 + 2.0) / 2)
    assert s["mFP"] == pytest.approx(0.02)


def test_summarize_means_are_none_when_incomplete():
    base = Baseline("base", 0.1, corruption_mean_errors={"a": 0.2, "b": 0.4})
    partial = _results(0.05, {"a": [0.1, 0.2]}, {})  # two severities only: a mean-only baseline cannot pair
    s = metrics.summarize(partial, base, corruptions=BENCH, perturbations=BENCH)
    assert s["corruptions"]["a"]["ce"] is None and s["corruptions"]["a"]["ce_unnormalized"] == pytest.approx(0.15)
    assert s["mCE"] is None and s["mFR"] is None and s["mean_ce_unnormalized"] is None
    assert metrics.summarize(partial, None, corruptions=BENCH, perturbations=BENCH)["baseline"] is None


def test_builtin_baselines_hold_the_published_numbers():
    assert {"alexnet-cifar10", "alexnet-imagenet"} <= set(builtin_baselines())
    cifar = load_baseline("alexnet-cifar10")
    assert cifar.clean_error == pytest.approx(0.1387)
    assert len(cifar.corruption_mean_errors) == 15 and len(cifar.flip_probabilities) == 10
    assert cifar.corruption_mean_errors["gaussian_noise"] == pytest.approx(0.3844)
    assert cifar.flip_probabilities["translate"] == pytest.approx(0.1364)
    assert cifar.errors_for("fog", [1, 3]) is None  # published as a mean over all 5 severities only
    imagenet = load_baseline("alexnet-imagenet")
    assert len(imagenet.corruption_errors) == 15
    # Hendrycks & Dietterich's AlexNet mean errors (the CE denominators published elsewhere)
    for name, mean in {"gaussian_noise": 0.886428, "brightness": 0.564592, "jpeg_compression": 0.606500}.items():
        assert imagenet.errors_for(name, [1, 2, 3, 4, 5]).mean() == pytest.approx(mean, abs=1e-5)


def test_results_file_as_baseline_and_bad_files(tmp_path):
    res = _results(0.05, {"a": [0.1, 0.2, 0.3, 0.4, 0.5]}, {"a": 0.02})
    res["model"] = {"label": "my-resnet"}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    base = load_baseline(path)
    assert base.name == "my-resnet" and base.clean_error == 0.05
    assert base.errors_for("a", [2, 4]).tolist() == [0.2, 0.4]
    s = metrics.summarize(res, base, corruptions=("a",), perturbations=("a",))
    assert s["mCE"] == pytest.approx(1.0) and s["rCE"] == pytest.approx(1.0) and s["mFR"] == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="neither a built-in"):
        load_baseline(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="none of the keys"):
        load_baseline(tmp_path / "bad.json")
