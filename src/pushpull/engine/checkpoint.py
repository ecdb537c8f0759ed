"""Atomic checkpoints and complete training state (RNGs included), so an interrupted run resumes exactly.

Checkpoints hold only tensors and plain containers and are loaded by
``pushpull.models.io.read_checkpoint`` (``weights_only=True``): no code is unpickled.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_write
from ..models.io import read_checkpoint


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, loaded safely onto the CPU."""
    return read_checkpoint(path)


def rng_state() -> dict[str, Any]:
    """The states of the torch (CPU and CUDA), numpy and python generators, as safe-to-load values."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)), "pos": np_state["state"]["pos"],
                  "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": np_state["key"].numpy().astype(np.uint32),
                         "pos": np_state["pos"]}, "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    random.setstate(state["python"])
