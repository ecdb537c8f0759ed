"""Stopping a run early on request: SIGINT (Ctrl-C) and SIGTERM (cluster pre-emption) become a flag the loop reads.

The loop finishes its step, writes the checkpoint and says how to continue; the command
line then exits with the signal's code (130, 143).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

RESUME_HINT = "rerun the same command to resume"


@dataclass
class StopRequest:
    """Set by SIGINT (Ctrl-C) or SIGTERM (cluster pre-emption): finish the step, checkpoint, stop."""

    signal: str | None = None  # the first signal's name


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn SIGINT/SIGTERM into a stop request for the length of the block; a second Ctrl-C stops at once.

    The handler only records the signal (printing from a handler can break a write it interrupted);
    the loop reports it. Checkpoints are atomic, so stopping at once keeps the previous one.
    """
    stop = StopRequest()

    def request(signum: int, _frame: Any) -> None:
        if stop.signal is None:
            stop.signal = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = {s: signal.signal(s, request) for s in _STOP_SIGNALS}
    except ValueError:  # not the main thread: leave signals alone
        yield stop
        return
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
