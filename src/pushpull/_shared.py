"""Where the project's shared test data lives (datasets, official checkpoints).

Set ``PUSHPULL_SHARED`` to point elsewhere; by default it is ``../shared`` beside the
repository checkout. Users' clones usually do not have it: callers skip or fail clearly.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PUSHPULL_SHARED"


def shared_dir() -> Path | None:
    """The shared data folder if it exists, else None."""
    env = os.environ.get(ENV_VAR)
    candidates = [Path(env)] if env else [Path(__file__).resolve().parents[3] / "shared", Path.cwd().parent / "shared"]
    for path in candidates:
        if path.is_dir():
            return path
    return None
