"""The layers package is layered: each module imports only those below it (cycles and sizes: test_architecture)."""

from __future__ import annotations

import ast
from pathlib import Path

import pushpull.layers

PACKAGE = Path(pushpull.layers.__file__).parent
# bottom to top, as the package docstring lists them; blur stands alone
ORDER = ["config", "eager", "_workspace", "geometry", "resize", "reference", "_fast", "_native", "_stacked", "_basis",
         "pushpull"]


def _local_imports(path: Path) -> set[str]:
    """The sibling modules ``path`` imports (``from . import x``, ``from .x import y``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _local_imports(p) for p in PACKAGE.glob("*.py")}


def test_every_module_imports_only_modules_below_it():
    graph = _graph()
    assert set(graph) == {*ORDER, "blur", "__init__"}, "a new module: give it its place in ORDER"
    for module in ORDER:
        below = set(ORDER[:ORDER.index(module)])
        assert graph[module] <= below, f"{module} imports {sorted(graph[module] - below)}, which are not below it"
    assert graph["blur"] == set()


def test_public_names_unchanged():
    import pushpull

    names = ["PushPullConv2d", "pull_kernel", "pull_kernel_size", "push_pull_conv2d", "push_pull_conv2d_reference"]
    assert pushpull.layers.__all__ == names
    assert all(getattr(pushpull, n) is getattr(pushpull.layers, n) for n in names)
