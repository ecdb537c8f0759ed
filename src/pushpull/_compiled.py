"""The one builder of the project's optional C kernels (the layer's, the corruptions', the -P sequences').

Each kernel library is compiled on first use with the system's C compiler (``$CC``, ``cc`` or
``gcc``) into :func:`cache_dir`, under a name keyed by its source, the compiler, the flags and
the CPU, and loaded with :mod:`ctypes`. Where that is not possible (no compiler, not Linux, a
failed build) :func:`load_library` returns None and the caller runs its other exact path, so the
kernels only ever make things faster, never different. Whether they are used at all is the one
switch ``PUSHPULL_NATIVE`` (:func:`pushpull.layers.config.native_enabled`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ._files import atomic_path

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$PUSHPULL_CACHE`` or ``$XDG_CACHE_HOME/pushpull`` (``~/.cache``)."""
    root = os.environ.get("PUSHPULL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pushpull"


def cpu_signature() -> str:
    """The CPU's model and flags: a kernel built with ``-march=native`` runs only where they match."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return "|".join([platform.machine(), platform.processor(), *lines])


def cache_size(text: str) -> int:
    """Bytes of a size as Linux's sysfs writes cache sizes: ``512K``, ``2048K``, ``1M``."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip()
    return int(text[:-1]) * units[text[-1].upper()] if text[-1:].upper() in units else int(text)


@functools.lru_cache(maxsize=1)
def l2_cache_bytes() -> int:
    """The L2 cache of one core, from sysfs (1 MB where it cannot be read): where kernels that stream an
    operand repeatedly stop finding it in cache."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                return cache_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
    return 1 << 20


def load_library(sources: Path | Sequence[Path], flags: Sequence[str], name: str) -> ctypes.CDLL | None:
    """``sources`` compiled with ``flags`` (built once, cached) and loaded; None where that cannot be done.

    ``sources``: one C file, or several (their ``.c`` files compiled together; headers they include
    listed too, so that a change to any of them rebuilds). ``name`` names the library in its file
    name and in the one log line a failure gives. Concurrent processes never load a half-written
    library: it appears atomically.
    """
    files = [sources] if isinstance(sources, Path) else list(sources)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if sys.platform != "linux" or compiler is None:
        log.info("pushpull: no C compiler found; the %s kernels are off (same results, slower)", name)
        return None
    identity = "\n".join([compiler, *flags, cpu_signature()]).encode()
    key = hashlib.sha256(b"".join(f.read_bytes() for f in files) + identity).hexdigest()[:16]
    target = cache_dir() / f"pushpull_{name}_{key}.so"
    try:
        if not target.exists():
            with atomic_path(target) as partial:
                units = [str(f) for f in files if f.suffix == ".c"]
                subprocess.run([compiler, *flags, *units, "-o", str(partial), "-lm"], check=True, capture_output=True,
                               timeout=120)
        return ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        detail = (getattr(err, "stderr", b"") or b"").decode(errors="replace")[-500:]
        log.warning("pushpull: could not build the %s kernels (%s %s); using the other exact path", name, err, detail)
        return None
