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


def test_help_shows_every_public_name_with_its_docstring():
    import pydoc

    text = pydoc.render_doc(pushpull, renderer=pydoc.plaintext)
    assert set(pushpull._LAZY) <= set(dir(pushpull))  # lazy names are listed before they are imported
    for name in pushpull.__all__:
        obj = getattr(pushpull, name)
        if callable(obj):
            doc = obj.__doc__  # its own, not one inherited from a base class
            assert doc and doc.strip(), f"{name} has no docstring"
            assert doc.strip().splitlines()[0] in text, f"help(pushpull) does not show {name}"
        section = pushpull.__doc__.split("\n\n", 1)[1]
        assert name == "__version__" or f"    {name} " in section, f"the package docstring does not list {name}"
