"""The public API: every advertised name resolves, and the command line lists every command."""

from __future__ import annotations

import pytest

import pushpull
from pushpull.cli import build_parser


@pytest.mark.parametrize("name", pushpull.__all__)
def test_every_public_name_resolves(name):
    assert getattr(pushpull, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        pushpull.no_such_thing  # noqa: B018


def test_cli_discovers_every_command():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"demo", "eval", "train", "make-c", "make-p", "models", "report", "analyze",
            "import-official", "show-corruptions"} <= commands
