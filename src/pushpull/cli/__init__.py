"""The ``pushpull`` command line: argument parsing only, the work is done by the library.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the
parsed arguments, returning an exit code). Modules are discovered, so adding a command
means adding a file.

One convention for every command, kept here and nowhere else: exit status 2 for a usage
error (argparse's, or :class:`UsageError` raised by a command), 1 for a failure (the
library's ``OSError``/``ValueError``/``RuntimeError``...), 130 on Ctrl-C; each message is
one line ``pushpull <command>: error: ...`` on stderr, and a traceback is shown only
with ``--debug`` or ``PUSHPULL_DEBUG=1``. A command that resumes says so with
``set_defaults(resume_hint=...)``, which is printed on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import pkgutil
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__

USAGE, FAILURE, INTERRUPTED = 2, 1, 130
# What the library raises for bad files, folders and values: reported as one line. Anything else
# (TypeError, KeyError, ...) is likely a bug: one line too, with its type and the --debug hint.
FAILURES = (OSError, ValueError, RuntimeError, FloatingPointError, EOFError, pickle.UnpicklingError)
MAX_MESSAGE = 1000


class UsageError(Exception):
    """A command-line value that argparse could not check (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and which remembers its ``prog`` in the namespace.

    ``--debug`` is accepted before or after the command (shown only in the top-level help).
    """

    def __init__(self, *args, top_level: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(command_prog=self.prog)  # the innermost (sub-)parser's wins: it names the command
        self.add_argument("--debug", action="store_true", default=False if top_level else argparse.SUPPRESS,
                          help="show the full traceback of an error (or set PUSHPULL_DEBUG=1)" if top_level
                          else argparse.SUPPRESS)

    def _check_value(self, action: argparse.Action, value: object) -> None:
        """A value outside ``choices`` (a command, ``--dataset``, ...) gets close matches, like every name."""
        if action.choices is not None and value not in action.choices:
            from .._names import unknown_name_message

            kind = "command" if isinstance(action, argparse._SubParsersAction) else "value"
            raise argparse.ArgumentError(action, unknown_name_message(kind, str(value), map(str, action.choices)))

    def error(self, message: str) -> NoReturn:
        _usage_error(self.prog, message)
        raise SystemExit(USAGE)


def build_parser() -> Parser:
    parser = Parser(prog="pushpull", top_level=True,
                    description="Push-pull (inhibition-augmented) ConvNets and robustness benchmarks.")
    parser.add_argument("--version", action="version", version=f"pushpull {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exit_:  # --help, --version and argparse's errors (already reported)
        return exit_.code if isinstance(exit_.code, int) else 0
    if extra:  # the top-level parser finds these: name the sub-command they were given to
        _usage_error(args.command_prog, f"unrecognized arguments: {' '.join(extra)}")
        return USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return USAGE
    debug = args.debug or os.environ.get("PUSHPULL_DEBUG", "") not in ("", "0")
    try:
        with warnings.catch_warnings():
            if not debug:  # a warning is a line like an error's, without Python's file, line and source
                warnings.showwarning = lambda message, *_, **__: _say(args.command_prog,
                                                                      f"warning: {_one_line(message)}")
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe is handled below, not at exit
        return code
    except BrokenPipeError:  # the reader of the output went away (`pushpull models | head`): not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush stays quiet
        return FAILURE
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        _say(args.command_prog, "interrupted" + (f"; {hint}" if hint else ""))
        return INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the one place errors become exit codes
        if debug:
            traceback.print_exc()
        if isinstance(err, UsageError):
            _say(args.command_prog, f"error: {_one_line(err)}")
            return USAGE
        if isinstance(err, FAILURES):
            _say(args.command_prog, f"error: {_one_line(err)}")
        else:
            _say(args.command_prog, f"error: {type(err).__name__}: {_one_line(err)}"
                            + ("" if debug else " (unexpected; rerun with --debug for the traceback)"))
        return FAILURE


def _one_line(err: BaseException) -> str:
    """The error's message on one line: an OS error names its file, long texts are cut."""
    if isinstance(err, FileExistsError) and err.filename is not None and os.path.isfile(err.filename):
        text = f"{err.filename} is a file; a folder is needed there"  # mkdir(exist_ok=True) of an --out folder
    elif isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    elif isinstance(err, KeyError) and len(err.args) == 1:
        text = repr(err.args[0])
    else:
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "... (rerun with --debug for all of it)"


def _usage_error(prog: str, message: str) -> None:
    _say(prog, f"error: {message} (see {prog} --help)")


def _say(prog: str, message: str) -> None:
    """One line on stderr in one write, so the lines of several processes (torchrun) never run together."""
    sys.stderr.write(f"{prog}: {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
