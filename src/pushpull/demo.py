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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._files import atomic_write, write_json
from .data.robustness_sets import SEVERITIES
from .layers import PushPullConv2d

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
        models[variant] = result.model.eval()

    errors = evaluate_corruptions(models, test_images, test_labels, mean, std, corruptions, seed=seed,
                                  progress=progress)
    results = {"setting": setting, "recipe": recipe.to_dict(), "seed": seed, "test_images": int(len(test_labels)),
               "errors": errors, "seconds": time.perf_counter() - tic}
    table = format_table(errors)
    write_json(out / "results.json", results)
    atomic_write(out / "results.md", table + "\n")
    save_plot(errors, out / "results.png", title=f"pushpull demo: {setting}")
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


def format_table(errors: dict[str, dict[str, Any]]) -> str:
    """Markdown table: clean error, mean error over severities per corruption, and their mean (in %)."""
    names = list(errors)
    rows = [("clean", [errors[n]["clean"] for n in names])]
    rows += [(c, [errors[n]["mean_per_corruption"][c] for n in names]) for c in errors[names[0]]["mean_per_corruption"]]
    rows.append(("mean over corruptions", [errors[n]["mean_corrupted"] for n in names]))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'error (%)':<{width}} | " + " | ".join(f"{n:>9}" for n in names) + " |",
             f"|{'-' * (width + 2)}|" + "|".join("-" * 10 + ":" for _ in names) + "|"]
    lines += [f"| {label:<{width}} | " + " | ".join(f"{100 * v:9.2f}" for v in values) + " |" for label, values in rows]
    return "\n".join(lines)


def save_plot(errors: dict[str, dict[str, Any]], path: Path, title: str = "") -> None:
    """Grouped bars: clean error and mean error per corruption, one colour per model (PNG, written atomically)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    names = list(errors)
    labels = ["clean", *errors[names[0]]["mean_per_corruption"], "mean"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(labels))
    bar = 0.8 / len(names)
    for i, name in enumerate(names):
        entry = errors[name]
        values = [entry["clean"], *entry["mean_per_corruption"].values(), entry["mean_corrupted"]]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * bar, [100 * v for v in values], bar, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    # Log scale: a corruption that breaks both models must not flatten the differences elsewhere.
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.set_xticks(x, [label.replace("_", "\n") for label in labels], fontsize=8)
    ax.set_ylabel("top-1 error (%, log scale)\nmean over severities 1-5")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write(path, buffer.getvalue())


def _say(enabled: bool, message: str) -> None:
    if enabled:
        tqdm.write(message)
