"""The original push-pull implementation's checkpoints (Strisciuglio et al. 2020), converted to ours.

They are legacy ``torch.save`` files holding ``{epoch, state_dict, best_prec1}``, read (safely)
by :func:`pushpull.models.io.read_checkpoint`; :func:`pushpull.models.load_model`,
:func:`pushpull.models.import_official` and the weights cache (:mod:`.weights`) use the
conversion here. Our module names are the original ones, except that the original
ResNet-CIFAR names the push-pull convs of a ``-b1`` block ``pp1``/``pp2`` (ours:
``conv1``/``conv2``) and stores its blur filters (``.filt``, derived here). The original
code normalises its inputs with CIFAR-10's statistics."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..data.constants import CIFAR10_MEAN, CIFAR10_STD
from .io import check_fits, state_dict_in
from .registry import create_model, model_info

NORMALIZATION = (CIFAR10_MEAN, CIFAR10_STD)  # the original training and test transforms


def official_weights(checkpoint: Any, path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(the weights under our key names, the ``create_model`` options they imply) of a checkpoint read from ``path``.

    The options are ``num_classes`` (from the head), ``trainable_alpha`` (when alphas are
    stored) and ``aa`` (the size of stored blur filters, which are then dropped: our
    ``BlurPool2d`` derives them).
    """
    raw = state_dict_in(checkpoint, path)
    kwargs: dict[str, Any] = {}
    head = next((raw[k] for k in ("fc.weight", "classifier.weight") if k in raw), None)
    if head is not None:
        kwargs["num_classes"] = int(head.shape[0])
    if any(k.endswith(".alpha") for k in raw):
        kwargs["trainable_alpha"] = True
    filters = [v for k, v in raw.items() if k.endswith(".filt")]
    if filters:
        kwargs["aa"] = int(filters[0].shape[-1])
    state = {re.sub(r"(^|\.)pp([12])\.", r"\1conv\2.", k): v for k, v in raw.items() if not k.endswith(".filt")}
    return state, kwargs


def official_model(checkpoint: Any, path: str | os.PathLike, name: str) -> tuple[nn.Module, dict[str, Any]]:
    """Our model ``name`` holding a checkpoint's weights (loaded strictly), and the ``create_model`` options used."""
    state, kwargs = official_weights(checkpoint, path)
    model = create_model(name, **kwargs)
    check_fits(state, model.state_dict(), f"{name} {kwargs} (is {Path(path).name} another architecture or variant?)")
    model.load_state_dict(state, strict=True)
    return model, kwargs


def official_extra(checkpoint: Any) -> dict[str, Any]:
    """The checkpoint's training epoch and best accuracy, as JSON numbers (for a saved model's sidecar)."""
    if not isinstance(checkpoint, dict):
        return {}
    return {key: float(v) if isinstance(v, (Tensor, float)) else v for key, v in checkpoint.items()
            if key in ("epoch", "best_prec1")}


def guess_model_name(path: str | os.PathLike) -> str:
    """The registry name from the checkpoint's folder (``.../resnet-20-pp/model_best.pth.tar``) or file name."""
    path = Path(path)
    for candidate in (path.parent.name, path.name.split(".")[0]):
        try:
            return model_info(candidate).name
        except ValueError:
            continue
    raise ValueError(f"cannot tell the architecture of {path} from its name: pass the model name "
                     f"(e.g. resnet20_pp, densenet40_12)")


__all__ = ["NORMALIZATION", "guess_model_name", "official_extra", "official_model", "official_weights"]
