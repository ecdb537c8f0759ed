from __future__ import annotations

from pathlib import Path

import pytest

from pushpull._shared import ENV_VAR, shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder (datasets, official checkpoints); skips when absent."""
    path = shared_dir()
    if path is None:
        pytest.skip(f"shared data folder not found: set {ENV_VAR} or place it at ../shared beside the clone")
    return path


@pytest.fixture(scope="session")
def cifar10_root(shared: Path) -> Path:
    """A folder holding ``cifar-10-batches-py`` written from the shared CIFAR-10 (JPEG q75) copy.

    Materialised once into ``.pytest_cache`` (about 15 s) and reused by later runs.
    """
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1] / ".pytest_cache" / "cifar10"
    if not (root / "cifar-10-batches-py" / "batches.meta").exists():
        tmp = root.with_name(f"cifar10.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        script = shared / "datasets" / "cifar10" / "materialize.py"
        subprocess.run([sys.executable, str(script), str(tmp)], check=True, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return root
