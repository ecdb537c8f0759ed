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

import numpy as np
import torch
from torch import Tensor, nn

from .layers import layer_kernel, layer_output

DEFAULT_THRESHOLDS = (1e-3, 1e-2, 5e-2, 1e-1)


def hoyer_sparsity(x: Tensor | np.ndarray) -> float:
    """Hoyer's sparsity measure of all values of ``x`` (1: one non-zero value, 0: all equal magnitudes)."""
    v = np.abs(np.asarray(x, dtype=np.float64).ravel())
    n = v.size
    if n < 2:
        raise ValueError("Hoyer sparsity needs at least two values")
    l2 = np.sqrt(v @ v)
    if l2 == 0:
        return 1.0  # all zeros: as sparse as it gets
    return float((np.sqrt(n) - v.sum() / l2) / (np.sqrt(n) - 1))


def excess_kurtosis(x: Tensor | np.ndarray) -> float:
    """Sample excess kurtosis (population moments; 0 for a Gaussian), nan when all values are equal."""
    v = np.asarray(x, dtype=np.float64).ravel()
    d = v - v.mean()
    var = (d @ d) / v.size
    if var == 0:
        return float("nan")
    return float(np.mean(d**4) / var**2 - 3)


def sparsity_stats(x: Tensor | np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Count, moments, near-zero fractions, Hoyer sparsity and excess kurtosis of all values of ``x``."""
    v = np.asarray(x, dtype=np.float64).ravel()
    magnitude = np.abs(v)
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "max_abs": float(magnitude.max()),
        "fraction_zero": float(np.mean(v == 0)),
        "fraction_near_zero": {f"{t:g}": float(np.mean(magnitude <= t)) for t in thresholds},
        "hoyer": hoyer_sparsity(v),
        "excess_kurtosis": excess_kurtosis(v),
    }


def weight_values(layers: dict[str, nn.Module]) -> dict[str, np.ndarray]:
    """The learned kernel (push kernel for push-pull) of each layer, flattened, in float64."""
    return {name: layer_kernel(layer).double().flatten().numpy() for name, layer in layers.items()}


def first_block(model: nn.Module) -> str:
    """Name of the model's first block: the first module after the first convolution that holds a convolution.

    Searched among the siblings of the first convolution (``layer1`` in a CIFAR ResNet,
    ``features.denseblock1`` in a DenseNet); when that is an ``nn.Sequential`` of blocks,
    its first element (``layer1.0``).
    """
    from .layers import conv_layers

    convs = list(conv_layers(model))
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d or PushPullConv2d layer")
    parent_name, _, first = convs[0].rpartition(".")
    parent = model.get_submodule(parent_name)
    seen_first = False
    for child_name, child in parent.named_children():
        if child_name == first:
            seen_first = True
            continue
        full = f"{parent_name}.{child_name}" if parent_name else child_name
        if seen_first and any(n == full or n.startswith(full + ".") for n in convs):
            if isinstance(child, nn.Sequential) and len(child) > 0:
                return f"{full}.0"
            return full
    raise ValueError(f"no block after the first convolution {convs[0]!r}; name the layer to measure")


@torch.no_grad()
def activations(model: nn.Module, module_name: str, images: Tensor, batch_size: int = 256) -> np.ndarray:
    """Output of ``model.get_submodule(module_name)`` on normalised ``images``, as float64 (N, ...)."""
    module = model.get_submodule(module_name)
    model.eval()
    parts = [layer_output(model, module, batch).double().numpy() for batch in images.split(batch_size)]
    return np.concatenate(parts)


def plot_sparsity(weights: dict[str, dict[str, np.ndarray]], acts: dict[str, np.ndarray], path: str,
                  bins: int = 101) -> None:
    """Overlaid weight histograms (one per model), and activation histograms when given."""
    from ._figures import new_figure, save_figure

    panels = 2 if acts else 1
    fig, axes = new_figure(1, panels, panel=4.0)
    pooled = {label: np.concatenate(list(layers.values())) for label, layers in weights.items()}
    for ax, data, title in ((axes[0, 0], pooled, "weights"), *(((axes[0, 1], acts, "activations"),) if acts else ())):
        limit = max(float(np.quantile(np.abs(v), 0.999)) for v in data.values()) or 1.0
        edges = np.linspace(-limit, limit, bins) if title == "weights" else np.linspace(
            min(0.0, min(float(v.min()) for v in data.values())), limit, bins)
        for label, values in data.items():
            ax.hist(np.clip(values, edges[0], edges[-1]), bins=edges, density=True, histtype="stepfilled",
                    alpha=0.45, label=f"{label} (Hoyer {hoyer_sparsity(values):.2f}, "
                                      f"kurt {excess_kurtosis(values):.1f})")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        if title == "activations":
            ax.set_yscale("log")
    names = sorted({n for layers in weights.values() for n in layers})
    axes[0, 0].set_xlabel(", ".join(names)[:80])
    save_figure(fig, path)
