"""Helpers shared by the tests of the C kernels: narrower x86 builds than ``-march=native``.

The kernels size their vector blocks by what ``-march`` allows (AVX-512, AVX2, SSE), so each width is
a different program; these builds let one machine test the narrower ones it can run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

# x86-64 levels and the CPU flags they need
NARROWER_BUILDS = [("-march=x86-64-v3", {"avx2", "fma", "bmi2"}), ("-march=x86-64-v2", {"sse4_2", "popcnt"})]
BUILD_IDS = [march for march, _ in NARROWER_BUILDS]


def cpu_flags() -> set[str]:
    """The CPU's flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))


def skip_unless_buildable(march: str, needs: set[str]) -> None:
    """Skip the test where this CPU cannot run ``march`` or the C compiler does not know it."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 instruction sets")
    if not needs <= cpu_flags():
        pytest.skip(f"this CPU cannot run {march}")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    probe = subprocess.run([compiler, march, "-x", "c", "-c", "-", "-o", os.devnull], input="int x;\n",
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"{compiler} does not know {march} (GCC 11 / Clang 12 name these levels)")


def narrower(flags, march: str) -> list[str]:
    """``flags`` with ``-march=native`` replaced by ``march``, still tuned for this CPU as the native build
    is (GCC's tuning for some CPUs splits chains of FMAs, which changes roundings)."""
    return [g for f in flags for g in ([march, "-mtune=native"] if f == "-march=native" else [f])]
