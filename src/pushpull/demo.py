"""``pushpull demo``: train a small ConvNet and its push-pull twin, compare their robustness to corruptions.

Offline by default, on scikit-learn's handwritten digits (up-sampled to 32x32; recipe
``demo-digits``): about a minute on two CPU cores. With ``data`` pointing at
CIFAR-10 (python layout) the same comparison runs there with recipe ``demo-cifar10``
(wider network, 10 epochs on the 50000 training images, the corruptions applied to every
5th test image). Both networks start from the same seed and differ only in their first
layer: a 5x5 convolution, or a push-pull layer with the same weights shape.

Writes to ``out``: ``plain/`` and ``push-pull/`` (training runs: checkpoints, metrics.csv;
a re-run resumes them), ``results.json``, ``results.md`` (the table) and ``results.png``.
"""

from __future__ import annotations

import io
import math
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._files import atomic_write, write_json
from .data.robustness_sets import SEVERITIES
from .layers import PushPullConv2d

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Corruptions that make sense for both digits and natural images (CIFAR-10-C parameters).
DEMO_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
                    "defocus_blur", "contrast", "pixelate", "jpeg_compression")
VARIANTS = ("plain", "push-pull")


class DemoNet(nn.Sequential):
    """Three conv-BN-ReLU stages (widths w, 2w, 4w) and a linear head; optionally a push-pull first layer."""

    def __init__(self, push_pull: bool = False, width: int = 16, num_classes: int = 10):
        stem = PushPullConv2d(3, width, 5, padding=2, bias=False) if push_pull else \
            nn.Conv2d(3, width, 5, padding=2, bias=False)

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        super().__init__(stem, nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         *stage(width, 2 * width), nn.MaxPool2d(2), *stage(2 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))


def run_demo(out: str | Path = "pushpull-demo", data: str | Path | None = None, *, epochs: int | None = None,
             seed: int = 0, corruptions: Sequence[str] = DEMO_CORRUPTIONS, progress: bool = True,
             device: str | None = None) -> dict[str, Any]:
    """Train both networks (resuming what ``out`` already holds), evaluate them, write the table and the plot."""
    from .data.cifar import cifar_datasets, cifar_normalization, load_cifar
    from ._names import check_names
    from .data.corruptions import CORRUPTIONS
    from .data.digits import digits_datasets, digits_split
    from .engine.train import fit
    from .recipes import load_recipe

    corruptions = check_names(corruptions, CORRUPTIONS, "corruption")
    tic = time.perf_counter()
    out = Path(out)
    if data is None:
        recipe = load_recipe("demo-digits", epochs=epochs)
        train_set, test_set, (mean, std) = digits_datasets(recipe, seed=seed)
        _, _, test_images, test_labels = digits_split(seed=seed)
        width, setting = 16, "digits (scikit-learn, 32x32)"
    else:
        recipe = load_recipe("demo-cifar10", epochs=epochs)
        train_set, test_set = cifar_datasets(data, recipe)
        mean, std = cifar_normalization("cifar10")
        test_images, test_labels = (a[::5] for a in load_cifar(data, train=False))  # class-major file: stride
        width, setting = 32, "CIFAR-10 (every 5th test image)"

    models = {}
    for variant in VARIANTS:
        torch.manual_seed(seed)
        model = DemoNet(push_pull=variant == "push-pull", width=width)
        _say(progress, f"training the {variant} network ({recipe.epochs} epochs, recipe {recipe.name})")
        result = fit(model, train_set, test_set, recipe, out / variant, seed=seed, resume=True, progress=progress,
                     device=device, checkpoint_minutes=5)
        if not result.finished:  # stopped by Ctrl-C/SIGTERM, checkpoint saved: compare no half-trained network
            raise KeyboardInterrupt
        models[variant] = result.model.eval()

    errors = evaluate_corruptions(models, test_images, test_labels, mean, std, corruptions, seed=seed,
                                  progress=progress)
    results = {"setting": setting, "recipe": recipe.to_dict(), "seed": seed, "test_images": int(len(test_labels)),
               "errors": errors, "seconds": time.perf_counter() - tic}
    table = format_table(errors, len(test_labels))
    write_json(out / "results.json", results)
    atomic_write(out / "results.md", table + "\n")
    save_plot(errors, out / "results.png", len(test_labels), title=f"pushpull demo: {setting}")
    return results


def evaluate_corruptions(models: dict[str, nn.Module], images: np.ndarray, labels: np.ndarray,
                         mean: Sequence[float], std: Sequence[float], corruptions: Sequence[str], *, seed: int = 0,
                         progress: bool = True) -> dict[str, dict[str, Any]]:
    """Per model: clean error, error per corruption and severity, and their means (errors as fractions).

    Each model goes through :func:`pushpull.evaluate` on the in-memory test images
    (corruptions generated with the CIFAR-10-C parameters, seed ``seed``).
    """
    from .engine.evaluate import evaluate

    errors: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        device = next(model.parameters()).device
        res = evaluate(model, data=(images, labels), benchmarks="cifar10-c", corruptions=list(corruptions),
                       seed=seed, mean=mean, std=std, baseline=None, batch_size=500, device=device,
                       progress=progress)
        per = {c: [res["corruptions"][c]["errors"][str(s)] for s in SEVERITIES] for c in corruptions}
        errors[name] = {"clean": res["clean"]["error"], "corruptions": per,
                        "mean_per_corruption": {c: float(np.mean(e)) for c, e in per.items()}}
        errors[name]["mean_corrupted"] = float(np.mean(list(errors[name]["mean_per_corruption"].values())))
    return errors


def wilson_interval(error: float, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for z = 1.96) of an error rate measured on ``trials`` independent trials."""
    scale = 1 + z * z / trials
    centre = (error + z * z / (2 * trials)) / scale
    half = z * math.sqrt(error * (1 - error) / trials + z * z / (4 * trials * trials)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


def by_family(corruptions: Sequence[str]) -> list[str]:
    """``corruptions`` ordered by family (noise, blur, weather, digital), then any others as given."""
    from .data.corruptions import FAMILIES

    ordered = [c for members in FAMILIES.values() for c in members if c in corruptions]
    return ordered + [c for c in corruptions if c not in ordered]


def near_chance(errors: dict[str, dict[str, Any]], n: int, num_classes: int = 10) -> list[str]:
    """The corruptions at which some network guesses: chance error (1 - 1/num_classes) lies in the 95%
    interval of its error at most severities. Such a corruption can dominate a mean over corruptions."""
    chance = 1 - 1 / num_classes
    names = next(iter(errors.values()))["corruptions"]
    return [c for c in by_family(names) if any(
        2 * sum(lo <= chance <= hi for lo, hi in (wilson_interval(e, n) for e in entry["corruptions"][c]))
        > len(entry["corruptions"][c]) for entry in errors.values())]


@dataclass
class Row:
    """One line of the table and one group of bars: an error per network, measured on ``trials``."""

    label: str
    values: list[float]
    trials: int
    family: str | None = None


def summary_rows(errors: dict[str, dict[str, Any]], n: int, num_classes: int = 10) -> list[Row]:
    """Clean error, the mean over severities of each corruption (by family), the mean over corruptions,
    and that mean without the corruptions near chance (when some are and others are not)."""
    from .data.corruptions import FAMILIES

    family = {c: f for f, members in FAMILIES.items() for c in members}
    entries = list(errors.values())
    names = by_family(list(entries[0]["corruptions"]))

    def mean(entry: dict, subset: list[str]) -> float:
        return float(np.mean([np.mean(entry["corruptions"][c]) for c in subset]))

    def trials(subset: list[str]) -> int:
        return n * sum(len(entries[0]["corruptions"][c]) for c in subset)

    rows = [Row("clean", [e["clean"] for e in entries], n)]
    rows += [Row(c, [mean(e, [c]) for e in entries], trials([c]), family.get(c)) for c in names]
    rows.append(Row("mean over corruptions", [mean(e, names) for e in entries], trials(names)))
    excluded = near_chance(errors, n, num_classes)
    kept = [c for c in names if c not in excluded]
    if excluded and kept:
        rows.append(Row(f"mean without {', '.join(excluded)}", [mean(e, kept) for e in entries], trials(kept)))
    return rows


def format_table(errors: dict[str, dict[str, Any]], n: int, num_classes: int = 10) -> str:
    """Markdown table (in %): clean error, mean error over severities per corruption by family, the
    mean over corruptions, and that mean without the corruptions near chance."""
    names = list(errors)
    rows = summary_rows(errors, n, num_classes)
    width = max(len(r.label) for r in rows)
    lines = [f"| {'error (%)':<{width}} | " + " | ".join(f"{n:>9}" for n in names) + " |",
             f"|{'-' * (width + 2)}|" + "|".join("-" * 10 + ":" for _ in names) + "|"]
    lines += [f"| {r.label:<{width}} | " + " | ".join(f"{100 * v:9.2f}" for v in r.values) + " |" for r in rows]
    return "\n".join(lines)


def save_plot(errors: dict[str, dict[str, Any]], path: Path, n: int, title: str = "", num_classes: int = 10) -> None:
    """:func:`plot_errors` as a PNG, written atomically."""
    buffer = io.BytesIO()
    plot_errors(errors, n, title, num_classes).savefig(buffer, format="png", dpi=120)
    atomic_write(path, buffer.getvalue())


def plot_errors(errors: dict[str, dict[str, Any]], n: int, title: str = "", num_classes: int = 10) -> Figure:
    """Grouped bars with 95% Wilson intervals on a linear scale (all, then zoomed below the corruptions near
    chance), corruptions by family, the chance level, and the mean over corruptions with and without those
    near chance; a caption states n and the rules."""
    from matplotlib.figure import Figure

    names = list(errors)
    rows = summary_rows(errors, n, num_classes)
    chance = 100 * (1 - 1 / num_classes)
    excluded = set(near_chance(errors, n, num_classes))
    fig = Figure(figsize=(11, 7.2), layout="constrained")
    full, zoom = fig.subplots(2, 1, height_ratios=(1, 1.3))
    x = np.arange(len(rows))
    bar = 0.8 / len(names)
    colours = ("#9a9a9a", "#1f77b4", "#ff7f0e", "#2ca02c")
    intervals = [[wilson_interval(v, r.trials) for v in r.values] for r in rows]
    shown = [hi for r, iv in zip(rows, intervals) if r.label not in excluded for _, hi in iv]
    top = min(100.0, 100 * max(shown) * 1.25 + 0.5)  # the zoom: every bar not near chance, with its interval
    for ax, ceiling in ((full, 100.0), (zoom, top)):
        for i, name in enumerate(names):
            values = np.array([100 * r.values[i] for r in rows])
            low = values - [100 * iv[i][0] for iv in intervals]
            high = [100 * iv[i][1] for iv in intervals] - values
            offset = x + (i - (len(names) - 1) / 2) * bar
            ax.bar(offset, values, bar, yerr=[low, high], capsize=2, error_kw={"linewidth": 0.8},
                   color=colours[i % len(colours)], label=name)
            if ax is zoom:
                for xi, v, h in zip(offset, values, high):
                    clipped = v > ceiling
                    ax.text(xi, min(v + h, ceiling) + 0.01 * ceiling, f"{v:.1f}" + ("↑" if clipped else ""),
                            ha="center", va="bottom", fontsize=6.5, rotation=90 if clipped else 0)
        ax.set_ylim(0, ceiling * (1.12 if ax is zoom else 1.0))
        ax.axhline(chance, color="black", linestyle="--", linewidth=0.8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        families = [r.family for r in rows]
        for k in range(1, len(rows)):  # a thin rule between families and before the means
            if families[k] != families[k - 1]:
                ax.axvline(k - 0.5, color="grey", linewidth=0.6)
    full.text(len(rows) - 0.45, chance, f"chance ({chance:.0f}%)", ha="right", va="bottom", fontsize=7)
    for k, r in enumerate(rows):
        if r.family and (k == 0 or rows[k - 1].family != r.family):
            span = sum(1 for q in rows if q.family == r.family)
            full.text(k - 0.5 + span / 2, 101, r.family, ha="center", va="bottom", fontsize=8, style="italic")
    full.set_xticks(x, [""] * len(rows))
    zoom.set_xticks(x, [r.label.replace("_", "\n").replace("mean without ", "mean without\n")
                        .replace("mean over ", "mean over\n") for r in rows], fontsize=7.5)
    full.set_ylabel("top-1 error (%)")
    zoom.set_ylabel("top-1 error (%), zoomed")
    full.set_title(f"{title}: {', '.join(names)}, {n} test images\n" if title else "", fontsize=10)
    full.legend(loc="upper left", fontsize=8)
    severities = len(next(iter(errors.values()))["corruptions"][rows[1].label]) if len(rows) > 2 else 1
    caption = (f"Bars: top-1 error on {n} test images; a corruption's bar is the mean over its {severities} "
               f"severities. Whiskers: 95% Wilson intervals, binomial with n = {n} images (clean), "
               f"{severities * n} image-severity pairs (a corruption) or their total (a mean), pairs taken as "
               "independent (the intervals of means are slightly too narrow).")
    if excluded:
        caption += (f" Near chance, left out of the last mean: {', '.join(sorted(excluded))} (chance error inside "
                    "the interval at most severities, for some network).")
    fig.supxlabel("\n".join(textwrap.wrap(caption, 190)), fontsize=7, x=0.005, ha="left")
    return fig


def _say(enabled: bool, message: str) -> None:
    if enabled:
        tqdm.write(message)
