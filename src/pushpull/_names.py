"""Names a user types (models, corruptions, perturbations, recipes, baselines, ...): one checker.

Every place that takes a name or a list of names from a user goes through here, so the
CLI and the Python API accept the same forms (a list, or one comma-separated string) and
an unknown name always gets the same one-line error with close matches.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence


def split_names(value: str | Iterable[str]) -> list[str]:
    """``"fog, snow"`` or ``["fog", "snow"]`` -> ``["fog", "snow"]`` (blanks dropped).

    A bare string is never split into letters: it is one name or a comma list.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def unknown_name_message(kind: str, name: str, known: Iterable[str], hint: str = "") -> str:
    """``unknown <kind> 'x'; did you mean 'y'?`` (or the list of choices when nothing is close)."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    if close:
        advice = f"; did you mean {' or '.join(map(repr, close))}?"
    elif len(known) <= 30:
        advice = f"; choose from {', '.join(known)}"
    else:
        advice = ""
    return f"unknown {kind} {str(name)!r}{advice}{hint}"


def check_name(name: str, known: Iterable[str], kind: str, hint: str = "") -> str:
    """``name`` if it is in ``known``, else ``ValueError`` with close matches."""
    known = list(known)
    if name not in known:
        raise ValueError(unknown_name_message(kind, name, known, hint))
    return name


def check_names(given: str | Iterable[str] | None, known: Sequence[str], kind: str, *,
                groups: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The names ``given`` (a list or a comma string; ``known`` when None), checked, in order, once each.

    ``groups`` maps a group name (e.g. ``"all"``, ``"noise"``) to the names it stands for.
    """
    if given is None:
        return list(known)
    groups = groups or {}
    names: list[str] = []
    for item in split_names(given):
        names.extend(groups.get(item, [item]))
    if not names:
        raise ValueError(f"no {kind} given; choose from {', '.join(known)}")
    choices = list(known) + [g for g in groups if g not in known]  # a mistyped group name gets close matches too
    for name in names:
        check_name(name, choices, kind)
    return list(dict.fromkeys(names))
