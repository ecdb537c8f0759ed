"""Response maps of one filter on noisy images, and how well they keep the clean response (paper Fig. 2).

A filter that is robust to noise gives, on a noisy image, a response map that still
looks like (correlates with) its response on the clean image. The paper shows this for
a plain convolution and a push-pull filter with the same learned shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..layers import PushPullConv2d
from .layers import layer_io, layer_kernel
from .sparsity import flat64
from .spectrum import operator_outputs


def pearson(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Pearson correlation of two arrays (flattened), in float64; 0 when either is constant."""
    a, b = flat64(a), flat64(b)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


def kernel_similarity(layer_a: nn.Module, layer_b: nn.Module) -> Tensor:
    """Cosine similarity (out_a, out_b) between the (push) kernels of two conv-like layers."""
    ka, kb = layer_kernel(layer_a), layer_kernel(layer_b)
    if ka.shape[1:] != kb.shape[1:]:
        raise ValueError(f"kernels of different shapes cannot be paired: {tuple(ka.shape[1:])} vs "
                         f"{tuple(kb.shape[1:])}; choose the channels explicitly")
    ka = nn.functional.normalize(ka.flatten(1).double(), dim=1)
    kb = nn.functional.normalize(kb.flatten(1).double(), dim=1)
    return ka @ kb.T


def most_similar_channels(layer_a: nn.Module, layer_b: nn.Module) -> tuple[int, int, float]:
    """The pair of output channels whose kernels have the largest |cosine|, and that cosine."""
    similarity = kernel_similarity(layer_a, layer_b)
    flat = int(similarity.abs().argmax())
    i, j = divmod(flat, similarity.shape[1])
    return i, j, float(similarity[i, j])


@dataclass
class ResponseSet:
    """One filter's response maps on a clean image and its noisy versions."""

    label: str
    layer: str
    channel: int
    maps: np.ndarray  # (1 + n_noisy, H', W'): the clean response first
    correlations: list[float] = field(init=False)  # with the clean response, one per noisy image

    def __post_init__(self) -> None:
        self.correlations = [pearson(self.maps[0], m) for m in self.maps[1:]]

    def to_json(self) -> dict:
        return {"label": self.label, "layer": self.layer, "channel": self.channel,
                "correlation_with_clean": self.correlations}


def filter_responses(model: nn.Module, layer_name: str, channel: int, images: Tensor, label: str = "",
                     components: bool = False) -> list[ResponseSet]:
    """Response maps of output ``channel`` of layer ``layer_name`` on normalised ``images``.

    ``images[0]`` is the clean image, the others its corrupted versions. The maps are the
    layer's own output (for a push-pull layer: ReLU(push) - alpha * ReLU(pull)); with
    ``components`` a push-pull layer's ReLU(push) and alpha * ReLU(pull) maps follow.
    """
    layer = model.get_submodule(layer_name)
    x, out = layer_io(model.eval(), layer, images)
    if not 0 <= channel < out.shape[1]:
        raise ValueError(f"channel {channel} out of range: {layer_name} has {out.shape[1]} output channels")
    label = label or layer_name
    sets = [ResponseSet(label, layer_name, channel, out[:, channel].double().numpy())]
    if components and isinstance(layer, PushPullConv2d) and not layer.dual_output:  # dual: both are channels
        with torch.no_grad():
            parts = operator_outputs(layer, x)
        sets += [ResponseSet(f"{label} {part}", layer_name, channel, parts[part][:, channel].double().numpy())
                 for part in ("push", "pull")]
    return sets


def mean_correlations(responses: Callable[[np.ndarray], Sequence[ResponseSet]], images: np.ndarray,
                      corruption: str, severities: Sequence[int], count: int, *, seed: int = 0) -> dict:
    """Each filter's correlation with its clean response, averaged over ``count`` of ``images``.

    One image is not evidence: this repeats the figure's measurement on test images spread over
    the set (``images`` is class-major). ``responses`` maps one uint8 stack (the clean image, then
    it corrupted at each severity) to the filters' :class:`ResponseSet` s, keyed by their labels.
    Each image is corrupted with its own random stream (its index in ``images``).
    """
    from ..data.generate import select_indices
    from .inputs import noisy_versions

    if count < 1:
        raise ValueError(f"the number of images to average over must be positive, got {count}")
    index = select_indices(len(images), count)
    collected: dict[str, list[list[float]]] = {}
    for stack in noisy_versions(images[index], corruption, severities, seed=seed, indices=index):
        for r in responses(stack):
            collected.setdefault(r.label, []).append(r.correlations)
    return {"images": len(index), "indices": index.tolist(),
            "correlation_with_clean": {label: np.mean(c, 0).tolist() for label, c in collected.items()}}


def plot_responses(images: np.ndarray, column_titles: Sequence[str], responses: Sequence[ResponseSet],
                   path: str) -> None:
    """Figure: the images on top, one row of response maps per filter, correlations in the titles;
    at the right, every filter's correlation with its clean response against the corruption level."""
    from .figures import new_figure, save_figure

    n_cols = len(images)
    fig, axes = new_figure(1 + len(responses), n_cols + 1, panel=1.6)
    for col in range(n_cols):
        axes[0, col].imshow(images[col], interpolation="nearest")
        axes[0, col].set_title(column_titles[col], fontsize=9)
    for row, resp in enumerate(responses, start=1):
        # One symmetric scale per row, so noise shows as texture; a percentile, so a few outliers don't wash it out.
        limit = float(np.percentile(np.abs(resp.maps), 99.5)) or 1.0
        for col in range(n_cols):
            ax = axes[row, col]
            ax.imshow(resp.maps[col], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_title("clean" if col == 0 else f"r = {resp.correlations[col - 1]:.3f}", fontsize=9)
        axes[row, 0].set_ylabel(f"{resp.label}\n{resp.layer}[{resp.channel}]", fontsize=9)
    for ax in axes[:, :n_cols].flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:, n_cols]:
        ax.remove()
    curves = fig.add_subplot(axes[0, 0].get_gridspec()[1:, n_cols])
    for resp in responses:
        curves.plot(range(1, n_cols), resp.correlations, marker="o", label=resp.label)
    prefix = {t.rpartition(" ")[0] for t in column_titles[1:]}  # "gaussian_noise s1" -> ticks "s1"
    common = prefix.pop() if len(prefix) == 1 else ""
    curves.set_xticks(range(1, n_cols), [t.removeprefix(common).strip() for t in column_titles[1:]])
    curves.set_xlabel(common, fontsize=8)
    curves.set_ylabel("correlation with clean response", fontsize=8)
    curves.tick_params(labelsize=7)
    curves.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.suptitle("Response maps; r = correlation with the clean response", fontsize=10)
    save_figure(fig, path)
