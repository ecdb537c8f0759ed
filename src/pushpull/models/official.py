"""Import of the original push-pull implementation's checkpoints (Strisciuglio et al. 2020).

They are legacy ``torch.save`` files holding ``{epoch, state_dict, best_prec1}``. We read
them with ``torch.load(weights_only=True)`` (no code execution) and fall back to a full
unpickle only when asked explicitly. Our module names are the original ones, except that
the original ResNet-CIFAR names the push-pull convs of a ``-b1`` block ``pp1``/``pp2``
(ours: ``conv1``/``conv2``) and stores its blur filters (``.filt``, derived here).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.constants import CIFAR10_MEAN, CIFAR10_STD
from .io import check_fits, save_model
from .registry import create_model, model_info


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint needs a full (code-executing) unpickle, which was not allowed."""


def load_legacy_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, Any]:
    """The object in a ``torch.save`` file, read safely unless ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"{path} cannot be read safely (torch.load(weights_only=True) refused it: "
                f"{str(err).splitlines()[0]}). Unpickling it in full can run arbitrary code: only if you trust "
                "its origin, retry with allow_pickle=True (command line: --allow-pickle)") from err
    return torch.load(path, map_location="cpu", weights_only=False)


def _raw_state(checkpoint: Any) -> Any:
    """The checkpoint's state dict as stored: its ``'state_dict'``, or the checkpoint itself; None if no dict."""
    return checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None


def official_state_dict(checkpoint: Any) -> dict[str, Tensor]:
    """The original checkpoint's weights under our key names."""
    state = _raw_state(checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError("not a push-pull checkpoint: expected a state dict or a dict with a 'state_dict'")
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.endswith(".filt"):  # blur filters: fixed, rebuilt by our BlurPool2d
            continue
        out[re.sub(r"(^|\.)pp([12])\.", r"\1conv\2.", key)] = value
    return out


def infer_model_kwargs(state: dict[str, Tensor], checkpoint: Any = None) -> dict[str, Any]:
    """``num_classes``, ``trainable_alpha`` and ``aa`` as the weights (and stored blur filters) imply."""
    kwargs: dict[str, Any] = {}
    head = next((state[k] for k in ("fc.weight", "classifier.weight") if k in state), None)
    if head is not None:
        kwargs["num_classes"] = int(head.shape[0])
    if any(k.endswith(".alpha") for k in state):
        kwargs["trainable_alpha"] = True
    raw = _raw_state(checkpoint) or {}
    filters = [v for k, v in raw.items() if isinstance(k, str) and k.endswith(".filt")]
    if filters:
        kwargs["aa"] = int(filters[0].shape[-1])
    return kwargs


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint itself: ``path``, or the ``.pth``/``.pth.tar`` file inside a folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = sorted(path.glob("*.pth*"))
    if not found:
        raise FileNotFoundError(f"{path} is a folder without a .pth/.pth.tar checkpoint")
    return found[0]


def guess_model_name(path: str | os.PathLike) -> str:
    """The registry name from the checkpoint's folder (``.../resnet-20-pp/model_best.pth.tar``)."""
    path = Path(path)
    for candidate in (path.parent.name, path.name.split(".")[0]):
        try:
            return model_info(candidate).name
        except ValueError:
            continue
    raise ValueError(f"cannot tell the architecture of {path} from its name: pass the model name "
                     f"(e.g. resnet20_pp, densenet40_12)")


def import_official(path: str | os.PathLike, model_name: str | None = None, *, out: str | os.PathLike | None = None,
                    allow_pickle: bool = False) -> nn.Module:
    """Load an original CIFAR-10 checkpoint into our model (strictly), in eval mode.

    ``path`` is the file or its folder; ``model_name`` defaults to what the folder name says. With ``out`` the model is also
    saved in our format (``.safetensors`` + JSON), recording the original normalisation,
    the source file and the checkpoint's epoch and best accuracy.
    """
    path = checkpoint_file(path)
    checkpoint = load_legacy_checkpoint(path, allow_pickle=allow_pickle)
    state = official_state_dict(checkpoint)
    name = model_info(model_name).name if model_name else guess_model_name(path)
    kwargs = infer_model_kwargs(state, checkpoint)
    model = create_model(name, **kwargs)
    check_fits(state, model.state_dict(), f"{name} {kwargs} (is {Path(path).name} another architecture or variant?)")
    model.load_state_dict(state, strict=True)
    model.eval()
    if out is not None:
        extra = {key: float(v) if isinstance(v, (Tensor, float)) else v for key, v in checkpoint.items()
                 if key in ("epoch", "best_prec1")} if isinstance(checkpoint, dict) else {}
        save_model(model, out, name=name, model_kwargs=kwargs, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                   source=f"official push-pull checkpoint {Path(path).resolve()}", extra=extra)
    return model


__all__ = ["UnsafeCheckpointError", "import_official", "load_legacy_checkpoint",
           "official_state_dict"]
