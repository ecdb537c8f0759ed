"""Writing the analyses' outputs: figures (matplotlib, headless) and JSON, both atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def new_figure(rows: int, cols: int, panel: float = 2.0, **subplot_kw: Any):  # noqa: ANN201 - matplotlib types
    """A figure with a (rows, cols) array of axes, on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(panel * cols + 0.6, panel * rows + 0.6), squeeze=False,
                        subplot_kw=subplot_kw or None, layout="constrained")


def _atomic_target(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    return path, tmp


def save_figure(fig: Any, path: str | Path, dpi: int = 150) -> None:
    """Save and close ``fig``; the file appears complete or not at all."""
    import matplotlib.pyplot as plt

    path, tmp = _atomic_target(path)
    try:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(data: Any, path: str | Path) -> None:
    """Write ``data`` as indented JSON, atomically."""
    path, tmp = _atomic_target(path)
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
