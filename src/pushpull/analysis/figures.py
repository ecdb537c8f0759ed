"""The analyses' figures: matplotlib on its headless backend, each saved atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .._files import atomic_write


def new_figure(rows: int, cols: int, panel: float = 2.0, **subplot_kw: Any):  # noqa: ANN201 - matplotlib types
    """A figure with a (rows, cols) array of axes, on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(panel * cols + 0.6, panel * rows + 0.6), squeeze=False,
                        subplot_kw=subplot_kw or None, layout="constrained")


def save_figure(fig: Any, path: str | Path, dpi: int = 150) -> None:
    """Save and close ``fig``, in the format its suffix names; the file appears complete or not at all."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    atomic_write(path, buffer.getvalue())
