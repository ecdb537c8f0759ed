"""Frequency and orientation tuning of conv and push-pull filters, measured on sinusoidal gratings.

The push-pull operator ``ReLU(x * k + b) - alpha * ReLU(x * (-k_hat) - b)`` is not linear,
so it has no transfer function: its tuning is measured the way a physiologist measures
a neuron's, by showing gratings of many frequencies and orientations and recording the
response. A grating is ``mean + contrast * cos(2 pi f (x cos(theta) + y sin(theta)) + phase)``
in [0, 1] pixel units, on the dataset mean (so a blank image is the model's zero input);
``theta`` is the direction across the stripes (0: vertical stripes, varying along x) and
``f`` is in cycles per pixel (0.5 is the Nyquist limit).

The response of an operator to a grating is its output averaged over the grating's phase
(at positions whose receptive field lies inside the image, so padding plays no part),
minus its output on the blank image. Operators:

* plain convolution: ``conv`` = ReLU(x * k + b), the rectified response the network uses;
* push-pull layer: ``push`` = ReLU(x * k + b), ``pull`` = alpha * ReLU(x * (-k_hat) - b)
  and ``push_pull`` = the layer's output, which equals ``push - pull`` pointwise.

For a linear filter without bias the response is ``contrast * |K(f, theta)| / pi``, with
``K`` the Fourier transform of the kernel seen by a grey grating (``kernel_response``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import PushPullConv2d, pull_kernel, push_pull_conv2d
from ..layers.geometry import PaddingArg, pull_padding


def gratings(size: int, frequencies: Sequence[float], orientations: Sequence[float], phases: int,
             contrast: float, std: Sequence[float]) -> Tensor:
    """Normalised gratings (n_orientations, n_frequencies, phases, C, size, size), float64.

    ``orientations`` in degrees. The dataset mean cancels in the normalisation, so only
    ``contrast / std`` per channel remains.
    """
    coords = torch.arange(size, dtype=torch.float64)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    theta = torch.deg2rad(torch.as_tensor(orientations, dtype=torch.float64)).view(-1, 1, 1, 1, 1)
    freq = torch.as_tensor(frequencies, dtype=torch.float64).view(1, -1, 1, 1, 1)
    phase = (2 * math.pi / phases * torch.arange(phases, dtype=torch.float64)).view(1, 1, -1, 1, 1)
    wave = torch.cos(2 * math.pi * freq * (x * torch.cos(theta) + y * torch.sin(theta)) + phase)
    scale = contrast / torch.as_tensor(std, dtype=torch.float64).view(-1, 1, 1)
    return wave.unsqueeze(3) * scale


def operator_outputs(layer: nn.Module, x: Tensor, padding: PaddingArg | None = None) -> dict[str, Tensor]:
    """The rectified operators of a conv-like layer on ``x`` (see the module docstring).

    ``padding`` replaces the layer's own (None: keep it); outputs clear of the padding
    do not depend on it, so the measurement runs unpadded, on just the input it needs.
    """
    padding = layer.padding if padding is None else padding
    if isinstance(layer, PushPullConv2d):
        dual = push_pull_conv2d(x, layer.weight, layer.bias, layer.stride, padding, layer.dilation,
                                layer.groups, layer.scale, 1.0, True, layer.push.padding_mode)
        channels = layer.push.out_channels
        push, pull = dual[:, :channels], layer.effective_alpha() * dual[:, channels:]
        return {"push": push, "pull": pull, "push_pull": push - pull}  # = layer(x), one pass cheaper
    if isinstance(layer, nn.Conv2d):
        if padding != layer.padding:
            return {"conv": F.relu(F.conv2d(x, layer.weight, layer.bias, layer.stride, padding, layer.dilation,
                                            layer.groups))}
        return {"conv": F.relu(layer(x))}
    raise TypeError(f"expected an nn.Conv2d or PushPullConv2d, got {type(layer).__name__}")


def _unpadded_window(layer: nn.Module) -> tuple[int, list[slice]]:
    """Smallest input size with an output whose whole receptive field is inside it (run without
    padding), and the slices of such outputs. For push-pull, the pull's field contains the push's."""
    kernel, dilation, stride = layer.kernel_size, layer.dilation, layer.stride
    before = [0, 0]
    if isinstance(layer, PushPullConv2d):  # the pull conv is padded to centre it on the push
        pads = pull_padding((0, 0, 0, 0), kernel, layer.pull_size, dilation)
        before, kernel = [pads[2], pads[0]], layer.pull_size
    reach = [d * (k - 1) for d, k in zip(dilation, kernel)]
    size = max(r + 1 + max(b, 0) + s for s, r, b in zip(stride, reach, before))
    window = [slice(max(-(-b // s), 0), (size - 1 - r + b) // s + 1) for s, r, b in zip(stride, reach, before)]
    return size, window


def kernel_response(kernel: Tensor, std: Sequence[float], frequencies: Sequence[float],
                    orientations: Sequence[float], dilation: int | tuple[int, int] = 1) -> np.ndarray:
    """|Fourier transform| of each kernel (out, C, kh, kw) for grey gratings: (out, n_orient, n_freq).

    A grey grating of contrast c gives channel ``j`` the input ``c / std[j] * cos(...)``, so
    the kernel it sees is ``sum_j kernel[:, j] / std[j]``.
    """
    dy, dx = (dilation, dilation) if isinstance(dilation, int) else dilation
    grey = (kernel.detach().double() / torch.as_tensor(std, dtype=torch.float64).view(1, -1, 1, 1)).sum(1)
    kh, kw = grey.shape[-2:]
    ys = dy * torch.arange(kh, dtype=torch.float64).view(kh, 1)
    xs = dx * torch.arange(kw, dtype=torch.float64).view(1, kw)
    theta = torch.deg2rad(torch.as_tensor(orientations, dtype=torch.float64)).view(-1, 1, 1, 1)
    freq = torch.as_tensor(frequencies, dtype=torch.float64).view(1, -1, 1, 1)
    angle = 2 * math.pi * freq * (xs * torch.cos(theta) + ys * torch.sin(theta))  # (O, F, kh, kw)
    real = torch.einsum("nyx,ofyx->nof", grey, torch.cos(angle))
    imag = torch.einsum("nyx,ofyx->nof", grey, torch.sin(angle))
    return torch.sqrt(real**2 + imag**2).numpy()


@dataclass
class Spectrum:
    """Responses (out_channels, n_orientations, n_frequencies) per operator, on a (theta, f) grid."""

    layer: str
    frequencies: np.ndarray
    orientations: np.ndarray
    responses: dict[str, np.ndarray]
    kernels: dict[str, np.ndarray]  # |Fourier transform| of the push/pull (or conv) kernels, same grid

    def summary(self, operator: str, channel: int) -> dict:
        """Preferred frequency and orientation, peak response, and half-height frequency bandwidth."""
        grid = self.responses[operator][channel]
        o, f = np.unravel_index(int(np.argmax(grid)), grid.shape)
        curve, peak = grid[o], float(grid[o, f])
        lo, hi = f, f
        while lo > 0 and curve[lo - 1] >= peak / 2:
            lo -= 1
        while hi < len(curve) - 1 and curve[hi + 1] >= peak / 2:
            hi += 1
        return {"peak_frequency": float(self.frequencies[f]), "peak_orientation": float(self.orientations[o]),
                "peak_response": peak,
                "half_height_bandwidth": float(self.frequencies[hi] - self.frequencies[lo]) if peak > 0 else 0.0}

    def to_json(self) -> dict:
        channels = next(iter(self.responses.values())).shape[0]
        return {
            "layer": self.layer,
            "frequencies_cycles_per_pixel": self.frequencies.tolist(),
            "orientations_degrees": self.orientations.tolist(),
            "channels": [
                {"channel": c,
                 "summary": {op: self.summary(op, c) for op in self.responses},
                 "response": {op: r[c].tolist() for op, r in self.responses.items()},
                 "kernel_fourier_magnitude": {op: k[c].tolist() for op, k in self.kernels.items()}}
                for c in range(channels)
            ],
        }


@torch.no_grad()
def frequency_response(layer: nn.Module, std: Sequence[float], *, name: str = "",
                       frequencies: Sequence[float] | None = None, orientations: Sequence[float] | None = None,
                       contrast: float = 0.25, phases: int = 16) -> Spectrum:
    """Measure the tuning of every output channel of a conv-like layer that takes images.

    ``std`` is the model's input normalisation (one value per input channel).
    Computation is in float64 on a copy of the layer, so the numbers are exact to
    rounding and the model is untouched.
    """
    frequencies = np.linspace(0.025, 0.5, 20) if frequencies is None else np.asarray(frequencies, float)
    orientations = np.arange(0, 180, 15.0) if orientations is None else np.asarray(orientations, float)
    if len(std) != layer.in_channels:
        raise ValueError(f"gratings are images of {len(std)} channels but layer {name or type(layer).__name__} "
                         f"takes {layer.in_channels}: measure a layer that sees the input image")
    with _one_thread():
        return _measure(copy.deepcopy(layer).double().eval(), std, name, frequencies, orientations, contrast, phases)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Many tiny convolutions: thread start-up and barriers cost far more than they save (100x on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _measure(probe: nn.Module, std: Sequence[float], name: str, frequencies: np.ndarray, orientations: np.ndarray,
             contrast: float, phases: int) -> Spectrum:
    size, (rows, cols) = _unpadded_window(probe)
    images = gratings(size, frequencies, orientations, phases, contrast, std)
    shape = images.shape[:3]
    blank = operator_outputs(probe, torch.zeros_like(images[0, 0, :1]), padding=0)
    responses: dict[str, list[Tensor]] = {op: [] for op in blank}
    for batch in images.flatten(0, 2).split(1024):
        for op, out in operator_outputs(probe, batch, padding=0).items():
            inner = out[..., rows, cols] - blank[op][..., rows, cols]
            responses[op].append(inner.mean((-2, -1)))
    result = {op: torch.cat(parts).view(*shape, -1).mean(2).permute(2, 0, 1).numpy() for op, parts in
              responses.items()}
    kernels = {}
    if probe.groups == 1:
        kernel = probe.weight
        if isinstance(probe, PushPullConv2d):
            kernels = {"push": kernel_response(kernel, std, frequencies, orientations, probe.dilation),
                       "pull": kernel_response(pull_kernel(kernel, probe.scale), std, frequencies, orientations,
                                               probe.dilation)}
        else:
            kernels = {"conv": kernel_response(kernel, std, frequencies, orientations, probe.dilation)}
    return Spectrum(name, frequencies, orientations, result, kernels)


def plot_spectrum(spectra: Sequence[tuple[str, Spectrum]], path: str, channels: Sequence[int] | None = None,
                  per_row: int = 8) -> None:
    """Polar maps (angle: orientation, radius: frequency) per operator and channel, plus tuning curves.

    One block of rows per model; push-pull output in a diverging colour map (it goes
    negative where the pull wins), the rectified push and pull in a sequential one.
    """
    from .figures import new_figure, save_figure

    blocks = []  # (model label, spectrum, channel list)
    for label, spec in spectra:
        n = next(iter(spec.responses.values())).shape[0]
        chosen = list(range(n)) if channels is None else list(channels)
        for start in range(0, len(chosen), per_row):
            blocks.append((label, spec, chosen[start:start + per_row]))
    rows = sum(len(spec.responses) + 1 for _, spec, _ in blocks)
    cols = max(len(ch) for _, _, ch in blocks)
    fig, axes = new_figure(rows, cols, panel=1.5)
    row = 0
    for label, spec, chans in blocks:
        theta = np.deg2rad(np.concatenate([spec.orientations, spec.orientations + 180, [360.0]]))
        radius = spec.frequencies
        for op, values in spec.responses.items():
            for col in range(cols):
                axes[row, col].remove()
                if col >= len(chans):
                    continue
                ax = fig.add_subplot(rows, cols, row * cols + col + 1, projection="polar")
                grid = values[chans[col]]
                grid = np.concatenate([grid, grid, grid[:1]])  # a grating at theta + 180 is the same grating
                limit = float(np.abs(grid).max()) or 1.0
                signed = bool((grid < 0).any())
                ax.pcolormesh(theta, radius, grid.T, shading="nearest", cmap="RdBu_r" if signed else "viridis",
                              vmin=-limit if signed else 0, vmax=limit)
                ax.set_theta_direction(-1)  # image coordinates: y points down
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{op} [{chans[col]}]", fontsize=8)
            row += 1
        for col in range(cols):
            ax = axes[row, col]
            if col >= len(chans):
                ax.remove()
                continue
            main = "push_pull" if "push_pull" in spec.responses else next(iter(spec.responses))
            o = int(np.argmax(spec.responses[main][chans[col]].max(1)))  # preferred orientation, as summary()
            unit = float(np.abs(next(iter(spec.responses.values()))[chans[col], o]).max()) or 1.0
            for op, values in spec.responses.items():  # one unit per panel, so push - pull = push_pull holds
                ax.plot(spec.frequencies, values[chans[col], o] / unit, label=op)
            ax.axhline(0, color="0.7", lw=0.5)
            ax.set_title(f"{label} [{chans[col]}] at {spec.orientations[o]:g}°", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.set_xlabel("cycles/pixel", fontsize=7)
            if col == 0:
                ax.legend(fontsize=6)
        row += 1
    fig.suptitle("Response to gratings (polar: orientation, radius: frequency)\n" +
                 ", ".join(f"{label}: {spec.layer}" for label, spec in spectra), fontsize=9)
    save_figure(fig, path)
