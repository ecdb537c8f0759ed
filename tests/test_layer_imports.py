"""The layers package is layered: each module imports only those below it, so no cycle can form."""

from __future__ import annotations

import ast
from pathlib import Path

import pushpull.layers

PACKAGE = Path(pushpull.layers.__file__).parent
# bottom to top, as the package docstring lists them; blur stands alone
ORDER = ["config", "eager", "geometry", "resize", "reference", "_fast", "_native", "_basis", "pushpull"]


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


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            found = visit(imported, path + [module])
            if found:
                return found
        done.add(module)
        return None

    return next((c for c in (visit(m, []) for m in sorted(graph)) if c), None)


def test_no_import_cycle():
    assert _cycle(_graph()) is None


def test_the_checker_sees_a_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("from . import a\n")
    graph = {p.stem: _local_imports(p) for p in tmp_path.glob("*.py")}
    assert _cycle(graph) == ["a", "b", "a"]


def test_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert max(sizes.values()) <= 450, sizes


def test_public_names_unchanged():
    import pushpull

    names = ["PushPullConv2d", "pull_kernel", "pull_kernel_size", "push_pull_conv2d", "push_pull_conv2d_reference"]
    assert pushpull.layers.__all__ == names
    assert all(getattr(pushpull, n) is getattr(pushpull.layers, n) for n in names)
