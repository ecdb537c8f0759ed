"""How sparse learned weights and activations are (paper Fig. 4).

Three complementary views of one set of numbers:

* fraction of near-zero values, ``|x| <= t``, at several thresholds ``t``;
* Hoyer sparsity ``(sqrt(n) - |x|_1 / |x|_2) / (sqrt(n) - 1)``: 1 for a single non-zero
  value, 0 when all magnitudes are equal; independent of scale;
* excess kurtosis ``E[(x - mu)^4] / sigma^4 - 3``: 0 for a Gaussian, higher for a peaked,
  heavy-tailed (sparse) distribution; independent of scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .layers import layer_kernel, layer_output, select_layers

DEFAULT_THRESHOLDS = (1e-3, 1e-2, 5e-2, 1e-1)


def flat64(x: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """All values of an array or tensor (parameters included) as a flat float64 numpy array."""
    if isinstance(x, Tensor):
        return x.detach().cpu().double().flatten().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def hoyer_sparsity(x: Tensor | np.ndarray) -> float:
    """Hoyer's sparsity measure of all values of ``x`` (1: one non-zero value, 0: all equal magnitudes)."""
    v = np.abs(flat64(x))
    n = v.size
    if n < 2:
        raise ValueError("Hoyer sparsity needs at least two values")
    l2 = np.sqrt(v @ v)
    if l2 == 0:
        return 1.0  # all zeros: as sparse as it gets
    return float((np.sqrt(n) - v.sum() / l2) / (np.sqrt(n) - 1))


def excess_kurtosis(x: Tensor | np.ndarray) -> float:
    """Sample excess kurtosis (population moments; 0 for a Gaussian), nan when all values are equal."""
    v = flat64(x)
    d = v - v.mean()
    var = (d @ d) / v.size
    if var == 0:
        return float("nan")
    return float(np.mean(d**4) / var**2 - 3)


def sparsity_stats(x: Tensor | np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Count, moments, near-zero fractions, Hoyer sparsity and excess kurtosis of all values of ``x``."""
    v = flat64(x)
    magnitude = np.abs(v)
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "max_abs": float(magnitude.max()),
        "fraction_zero": float(np.mean(v == 0)),
        "fraction_near_zero": {f"{t:g}": float(np.mean(magnitude <= t)) for t in thresholds},
        "hoyer": hoyer_sparsity(v),
        "excess_kurtosis": None if np.isnan(kurtosis := excess_kurtosis(v)) else kurtosis,  # JSON has no NaN
    }


def weight_values(layers: dict[str, nn.Module]) -> dict[str, np.ndarray]:
    """The learned kernel (push kernel for push-pull) of each layer, flattened, in float64."""
    return {name: flat64(layer_kernel(layer)) for name, layer in layers.items()}


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish)


def _after_first_conv(model: nn.Module):  # noqa: ANN202 - yields (name, module, holds a convolution)
    """The siblings that follow the first convolution, in registration order."""
    from .layers import conv_layers

    convs = list(conv_layers(model))
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d or PushPullConv2d layer")
    parent_name, _, first = convs[0].rpartition(".")
    siblings = list(model.get_submodule(parent_name).named_children())
    for child_name, child in siblings[[n for n, _ in siblings].index(first) + 1:]:
        full = f"{parent_name}.{child_name}" if parent_name else child_name
        yield full, child, any(n == full or n.startswith(full + ".") for n in convs)


def first_block(model: nn.Module) -> str:
    """Name of the model's first block: the first module after the first convolution that holds a convolution.

    Searched among the siblings of the first convolution (``layer1`` in a CIFAR ResNet,
    ``features.denseblock1`` in a DenseNet); when that is an ``nn.Sequential`` of blocks,
    its first element (``layer1.0``).
    """
    for name, module, holds_conv in _after_first_conv(model):
        if holds_conv:
            return f"{name}.0" if isinstance(module, nn.Sequential) and len(module) else name
    raise ValueError("no block after the first convolution; name the module to measure")


def stem_activation(model: nn.Module) -> str | None:
    """Name of the activation module right after the first convolution (before the first block), if any."""
    for name, module, holds_conv in _after_first_conv(model):
        if holds_conv:
            return None
        if isinstance(module, ACTIVATIONS):
            return name
    return None


@torch.no_grad()
def activations(model: nn.Module, module_name: str, images: Tensor, batch_size: int = 256) -> np.ndarray:
    """Output of ``model.get_submodule(module_name)`` on normalised ``images``, as float64 (N, ...)."""
    module = model.get_submodule(module_name)
    model.eval()
    parts = [layer_output(model, module, batch).double().numpy() for batch in images.split(batch_size)]
    return np.concatenate(parts)


@dataclass
class SparsityReport:
    """One model's Fig. 4 numbers: the flat values of its chosen layers' weights and measured activations."""

    weights: dict[str, np.ndarray]  # layer name -> its kernel's values
    activations: dict[str, np.ndarray] = field(default_factory=dict)  # module name -> its outputs on the images
    images: int = 0  # how many images the activations were measured on
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS

    def to_json(self) -> dict:
        """Statistics per layer, of all layers pooled, and per measured module (with the image count)."""
        entry = {"layers": {n: sparsity_stats(v, self.thresholds) for n, v in self.weights.items()},
                 "all_layers": sparsity_stats(np.concatenate(list(self.weights.values())), self.thresholds)}
        if self.images:
            entry["activations"] = {m: {"images": self.images, **sparsity_stats(v, self.thresholds)}
                                    for m, v in self.activations.items()}
        return entry


def measure_sparsity(model: nn.Module, layers: Sequence[str] | None = None, images: Tensor | None = None,
                     modules: Sequence[str] | None = None,
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> SparsityReport:
    """The weights of ``layers`` (names or globs, see ``select_layers``; default the first convolution) and,
    given normalised ``images``, the outputs of ``modules`` on them (default: the activation right after
    the first convolution, if any, and the first block). A ValueError names what is missing.
    """
    weights = weight_values(select_layers(model, layers))
    if images is None:
        return SparsityReport(weights, thresholds=tuple(thresholds))
    try:
        modules = modules or [m for m in (stem_activation(model), first_block(model)) if m]
        measured = {m: activations(model, m, images).ravel() for m in modules}
    except (ValueError, AttributeError) as e:  # AttributeError: get_submodule of an unknown name
        raise ValueError(f"activations: {e}") from None
    return SparsityReport(weights, measured, len(images), tuple(thresholds))


def plot_sparsity(weights: dict[str, dict[str, np.ndarray]], acts: dict[str, dict[str, np.ndarray]],
                  path: str) -> None:
    """Overlaid histograms, one colour per model: the pooled weights, then each measured activation.

    ``weights[model][layer]`` and ``acts[model][module]`` hold flat values; the i-th
    activation panel overlays every model's i-th module (log scale, zeros counted in the legend).
    """
    from .figures import new_figure, save_figure

    slots = max((len(m) for m in acts.values()), default=0)
    fig, axes = new_figure(1, 1 + slots, panel=3.6)
    names = list(dict.fromkeys(n for layers in weights.values() for n in layers))
    panels = [({label: np.concatenate(list(layers.values())) for label, layers in weights.items()},
               "weights: " + (", ".join(names) if len(names) < 3 else f"{len(names)} layers, {names[0]} ... {names[-1]}"))]
    for i in range(slots):
        chosen = {label: list(modules.items())[i] for label, modules in acts.items() if len(modules) > i}
        panels.append(({label: v for label, (_, v) in chosen.items()},
                       "activations: " + ", ".join(dict.fromkeys(n for n, _ in chosen.values()))))
    for index, (ax, (data, title)) in enumerate(zip(axes[0], panels)):
        high = max(float(np.abs(v).max()) for v in data.values()) or 1.0
        low = -high if index == 0 else min(0.0, min(float(v.min()) for v in data.values()))
        bins = int(np.clip(2 * np.sqrt(min(v.size for v in data.values())), 21, 101))  # few weights: wider bins
        for label, values in data.items():
            legend = f"{label}: Hoyer {hoyer_sparsity(values):.2f}, kurtosis {excess_kurtosis(values):.1f}"
            if index:
                legend += f", zero {np.mean(values == 0):.0%}"
            ax.hist(values, bins=np.linspace(low, high, bins), density=True, histtype="stepfilled", alpha=0.45,
                    label=legend)
        ax.set_title(title[:60], fontsize=9)
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        if index:
            ax.set_yscale("log")
    save_figure(fig, path)
