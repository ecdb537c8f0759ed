"""Files that appear complete or not at all: written beside their final name, then ``os.replace``d.

A reader, or a run resumed after an interruption, can trust any file it finds: an
interrupted writer leaves the old version (or nothing) and no temporary file behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds.

    Same folder, so ``os.replace`` is an atomic rename; a unique name (pid + random part), so
    concurrent writers never share it; ``path``'s suffix kept, so writers that choose a format
    from the extension still work. The block creates the file itself (usual permissions). On
    failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.is_dir():  # else os.replace fails at the end, naming the temporary file
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (a str as UTF-8) to ``path`` through :func:`atomic_path`: never half-written."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


class BackgroundWrites:
    """:func:`atomic_write` on a thread, so a process making many files computes the next while the disk flushes.

    Leaving the block waits for every write and raises the first error; each file still appears
    whole or not at all.
    """

    def __enter__(self) -> BackgroundWrites:
        self._pool, self._pending = ThreadPoolExecutor(1), []
        return self

    def write(self, path: str | Path, data: bytes) -> None:
        self._pending.append(self._pool.submit(atomic_write, path, data))

    def __exit__(self, *_) -> None:
        try:
            for done in self._pending:
                done.result()
        finally:
            self._pool.shutdown(cancel_futures=True)


@contextmanager
def locked(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the block, so that a read-modify-write
    of a file in it by concurrent processes (a job array's tasks) never loses an update. ``flock`` on the
    folder itself leaves no lock file behind and excludes threads as well as processes; where the file
    system cannot lock a folder (NFS), the block runs unlocked."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locking here
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` to ``path`` as indented JSON (UTF-8, final newline), atomically.

    The text is made before anything is opened, so data that is not JSON leaves ``path`` untouched.
    """
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk before the rename, so a crash cannot leave an empty file under the
    final name. Best effort: skipped for non-regular files and where the system refuses."""
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: str | Path, label: str = "") -> Any:
    """The JSON value stored in ``path``; a ValueError naming the file (after ``label``) when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # not JSON, or not even text
        raise ValueError(f"{label}{path} is not valid JSON: {err}") from None
