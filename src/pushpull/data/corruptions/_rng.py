"""Per-image random streams: image i's randomness depends only on (seed, corruption, severity, index)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def image_streams(seed: int, corruption_id: int, severity: int, indices: Sequence[int]) -> list[np.random.Generator]:
    """One independent generator per image, so results never depend on batching, workers or machine."""
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return [np.random.default_rng([int(seed), int(corruption_id), int(severity), int(i)]) for i in indices]
