"""Fetch one file over HTTP(S): resumable, bounded in time, and kept only when its sha256 matches.

The bytes go to ``<dest>.part`` (kept when a transfer breaks off, so the next call asks the
server for the rest with an HTTP ``Range`` header) and are renamed to ``dest`` only after the
whole file hashes to the pinned digest; a file that does not is deleted. Every failure is one
:class:`DownloadError` line saying what happened. Plain ``urllib``: no retries, no extra
dependency; the caller decides what to say about being offline.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .io import file_sha256

TIMEOUT_ENV = "PUSHPULL_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 30.0  # seconds without a byte from the server before giving up
_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download that could not finish: no connection, an HTTP error, a stall or a cut-off transfer."""


class HashMismatchError(ValueError):
    """A downloaded or given file whose sha256 is not the pinned one (the file has been deleted)."""


def download_timeout(timeout: float | None = None) -> float:
    """``timeout``, else ``$PUSHPULL_DOWNLOAD_TIMEOUT``, else 30 s."""
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV)
        try:
            timeout = float(text) if text else DEFAULT_TIMEOUT
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if not timeout > 0:
        raise ValueError(f"the download timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def part_path(dest: str | os.PathLike) -> Path:
    """Where the bytes of ``dest`` collect until they are complete and verified."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def check_sha256(path: Path, sha256: str, what: str) -> None:
    """Delete ``path`` and raise :class:`HashMismatchError` unless its digest is ``sha256``."""
    digest = file_sha256(path)
    if digest != sha256:
        path.unlink(missing_ok=True)
        raise HashMismatchError(f"{what} has sha256 {digest}, not the pinned {sha256}: it was deleted "
                                "(a damaged or replaced file; nothing was loaded from it)")


def download(url: str, dest: str | os.PathLike, *, sha256: str, size: int, timeout: float | None = None,
             progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` (``size`` bytes, ``sha256`` pinned); resume a ``.part`` left by a broken transfer."""
    dest, timeout = Path(dest), download_timeout(timeout)
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:  # not a prefix of this file
        part.unlink()
        have = 0
    if have < size:
        _transfer(url, part, have, size, timeout, progress)
    check_sha256(part, sha256, f"the download of {url}")
    os.replace(part, dest)  # not atomic_path: the .part must survive a failure, to be resumed
    return dest


def _transfer(url: str, part: Path, have: int, size: int, timeout: float, progress: bool) -> None:
    from tqdm import tqdm

    from .. import __version__

    headers = {"User-Agent": f"pushpull/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise DownloadError(f"{url}: no answer within {timeout:g} s (timed out; {TIMEOUT_ENV} sets the "
                                "limit)") from None
        raise DownloadError(f"{url}: cannot connect ({reason})") from None
    except (TimeoutError, socket.timeout):
        raise DownloadError(f"{url}: no answer within {timeout:g} s (timed out; {TIMEOUT_ENV} sets the limit)") \
            from None
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        with open(part, "ab" if have else "wb") as f, \
                tqdm(total=size, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name.removesuffix(".part"),
                     disable=not progress, file=sys.stderr, leave=False) as bar:
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
            except (TimeoutError, socket.timeout):
                raise DownloadError(f"{url}: the server stalled (no data for {timeout:g} s) after {have:,} of "
                                    f"{size:,} bytes, kept in {part}: run again to resume ({TIMEOUT_ENV} sets "
                                    "the limit)") from None
            except (http.client.IncompleteRead, ConnectionError) as err:
                raise DownloadError(f"{url}: the transfer broke off after {have:,} of {size:,} bytes "
                                    f"({type(err).__name__}), kept in {part}: run again to resume") from None
    if have < size:
        raise DownloadError(f"{url}: the transfer broke off after {have:,} of {size:,} bytes, kept in {part}: "
                            "run again to resume")


__all__ = ["DEFAULT_TIMEOUT", "DownloadError", "HashMismatchError", "TIMEOUT_ENV", "check_sha256", "download",
           "download_timeout", "part_path"]
