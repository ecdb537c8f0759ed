"""What a registered model costs: parameters and forward FLOPs for one image.

FLOPs are counted with ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs) on the meta
device, so no memory is allocated and no arithmetic is done: a model costs about 0.1 s. Push-pull
layers are counted as defined (a push and a pull convolution), whichever fast path would run.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import create_model, model_info


class ModelStats(NamedTuple):
    """A model's size: learned parameters, and forward FLOPs for one image (None: not counted)."""

    parameters: int
    flops: int | None


def count_parameters(model: nn.Module) -> int:
    """Number of learned values (every parameter, trainable alpha included)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Forward FLOPs of ``model`` for one zero image of ``input_size`` (C, H, W), without gradients.

    The image is made on the device of the model's first parameter (e.g. ``meta``: shapes only);
    works inside ``FakeTensorMode`` too.
    """
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_size, device=device))
    return counter.get_total_flops()


@functools.lru_cache(maxsize=None)
def model_stats(name: str, aa: int = 0, flops: bool = True) -> ModelStats:
    """Parameters and (with ``flops``) forward FLOPs for one image at the model's native input size.

    ``name`` is any registry spelling, ``aa`` the anti-aliasing filter size (0: none). Counted on
    the meta device (shapes only), with a real CPU pass only if some layer does not support it;
    push-pull layers with their defining two convolutions (the fast paths compute the same
    function with other operations, which depend on the machine). Remembered per model.
    """
    info = model_info(name)
    options = {"aa": aa} if info.variant == "plain" else {"aa": aa, "impl": "reference"}

    def measure(device: str) -> ModelStats:
        with torch.device(device):
            model = create_model(info.name, **options).eval()
        return ModelStats(count_parameters(model), count_flops(model, info.input_size) if flops else None)

    try:
        return measure("meta")
    except (RuntimeError, NotImplementedError):
        return measure("cpu")


__all__ = ["ModelStats", "count_flops", "count_parameters", "model_stats"]
