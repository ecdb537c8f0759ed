"""The saved-model format: weights in safetensors plus a JSON sidecar that says how to rebuild.

``model.safetensors`` holds the state dict (no pickle); ``model.json`` beside it holds::

    {"format_version": 1, "model": "resnet20_pp", "model_kwargs": {...}, "num_classes": 10,
     "normalization": {"mean": [...], "std": [...]}, "source": "...", "created": "<UTC ISO 8601>",
     "weights": "model.safetensors", "sha256": "<hex digest of the weights file>", "extra": {...}}

:func:`pushpull.models.load_model` rebuilds ``create_model(model, **model_kwargs)``, checks
the digest and loads the weights strictly. Both files are written atomically (temp file +
``os.replace``). :func:`read_checkpoint` here is the one place pushpull reads a weights file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .._files import atomic_write, read_json, write_json
from .registry import create_model, model_info

FORMAT_VERSION = 1


class UnsafeCheckpointError(ValueError):
    """The checkpoint needs a full (code-executing) unpickle, which was not allowed."""


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON metadata file that goes with the weights at ``path``."""
    return Path(path).with_suffix(".json")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def three_channels(values: Sequence[float], what: str) -> tuple[float, float, float]:
    """R, G, B values from 3, or from 1 standing for all three (as a sidecar may store it)."""
    values = tuple(float(v) for v in values)
    values = values * 3 if len(values) == 1 else values
    if len(values) != 3:
        raise ValueError(f"normalisation {what} needs 3 values (R, G, B), got {list(values)}")
    return values


def _stats(values: Sequence[float], what: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) not in (1, 3):
        raise ValueError(f"normalization {what} must have 1 or 3 values, got {values}")
    return values


def save_model(model: nn.Module, path: str | os.PathLike, *, name: str, model_kwargs: dict[str, Any] | None = None,
               mean: Sequence[float], std: Sequence[float], source: str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights to ``path`` (``.safetensors``) and its metadata to the JSON sidecar.

    ``name`` and ``model_kwargs`` must rebuild the architecture with ``create_model``
    (checked now, so a file that cannot be loaded is never written); ``mean``/``std`` are
    the input normalisation in [0, 1] units; ``source`` says where the weights come from
    (a training run, an imported checkpoint ...); ``extra`` is any JSON-serialisable dict.
    Returns the weights path.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"saved models use the .safetensors suffix, got {path.name!r}")
    model_kwargs = dict(model_kwargs or {})
    info = model_info(name)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        expected = create_model(info.name, **model_kwargs).state_dict()
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    check_fits(state, expected, f"{info.name} {model_kwargs}")
    meta = {
        "format_version": FORMAT_VERSION,
        "model": info.name,
        "model_kwargs": model_kwargs,
        "num_classes": int(model_kwargs.get("num_classes", info.num_classes)),
        "normalization": {"mean": _stats(mean, "mean"), "std": _stats(std, "std")},
        "source": str(source),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights": path.name,
        "sha256": "",
        "extra": extra or {},
    }
    json.dumps(meta)  # fail before writing anything if extra is not serialisable
    weights = save(state, metadata={"format": "pt", "model": info.name})
    meta["sha256"] = hashlib.sha256(weights).hexdigest()  # of the bytes written, without reading the file back
    atomic_write(path, weights)
    write_json(sidecar_path(path), meta)
    return path


def check_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append("wrong shapes: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:3]))
        raise ValueError(f"the weights do not fit {what}: " + "; ".join(parts))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of a saved model (``path`` is the ``.safetensors`` or the ``.json`` file)."""
    meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise FileNotFoundError(f"model metadata not found: {meta_path} (expected beside the weights; for bare "
                                "weights name the architecture: load_model(NAME, weights=FILE), or --weights)")
    meta = read_json(meta_path)
    for key in ("format_version", "model", "model_kwargs", "normalization"):
        if not isinstance(meta, dict) or key not in meta:
            raise ValueError(f"{meta_path} is not a pushpull model sidecar (no {key!r})")
    norm = meta["normalization"]
    if not (isinstance(meta["format_version"], int) and isinstance(meta["model_kwargs"], dict)
            and isinstance(norm, dict) and {"mean", "std"} <= set(norm)):
        raise ValueError(f"{meta_path} is damaged: 'format_version' must be a number, 'model_kwargs' an object "
                         "and 'normalization' must hold 'mean' and 'std'")
    if meta["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{meta_path} has format_version {meta['format_version']}; this pushpull reads up to "
                         f"{FORMAT_VERSION}: upgrade pushpull")
    return meta


def read_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> Any:
    """The object stored in a weights file; the one place pushpull reads such a file.

    ``.safetensors`` gives its tensors (the format cannot run code); any other file is a
    ``torch.save`` file read with ``torch.load(weights_only=True)``. A file that needs a full
    unpickle (which can run arbitrary code) is refused with :class:`UnsafeCheckpointError`
    unless ``allow_pickle``. Every error is one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if not _saved_by_torch(path):  # a text file, an image...: no unpickling would help
                raise ValueError(f"{path} is not a checkpoint (neither a torch.save nor a .safetensors file)") from None
            if not allow_pickle:
                raise UnsafeCheckpointError(
                    f"{path} cannot be read safely (torch.load(weights_only=True) refused it: "
                    f"{str(err).splitlines()[0]}). Unpickling it in full can run arbitrary code: only if you trust "
                    "its origin, retry with allow_pickle=True (command line: --allow-pickle)") from err
        return torch.load(path, map_location="cpu", weights_only=False)
    # torch.load's unpickler fails on a truncated or damaged file with whatever it meets first
    except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError, OSError, struct.error, IndexError,
            KeyError, AssertionError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is not a readable checkpoint ({reason})") from err


def _saved_by_torch(path: Path) -> bool:
    """Whether the file starts as ``torch.save`` writes: a zip archive, a pickle (legacy format) or a tar (oldest)."""
    with path.open("rb") as f:
        head = f.read(512)
    return head.startswith(b"PK\x03\x04") or head.startswith(b"\x80") or head[257:262] == b"ustar"


def state_dict_in(checkpoint: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint read from ``path``: itself, or what it wraps under ``state_dict``,
    ``model`` or ``model_state``; a DataParallel ``module.`` prefix is dropped."""
    state = checkpoint
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


__all__ = ["FORMAT_VERSION", "UnsafeCheckpointError", "read_checkpoint", "read_metadata", "save_model",
           "sidecar_path", "state_dict_in"]
