"""The package's shape: no import cycle between modules, no module too large to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pushpull

SRC = Path(pushpull.__file__).parent
MAX_LINES = 450


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports_at_load(path: Path, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that importing ``module`` imports at once (module level, not in functions)."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for statement in ast.parse(path.read_text()).body:
        nodes = ast.walk(statement) if isinstance(statement, (ast.If, ast.Try)) else [statement]
        for node in nodes:
            if isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
    parents = {".".join(name.split(".")[:i]) for name in found for i in range(2, name.count(".") + 1)}
    return {m for m in found | parents if m in known and m != module and not module.startswith(m + ".")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            if found := visit(imported, path + [module]):
                return found
        done.add(module)
        return None

    return next((c for c in (visit(m, []) for m in sorted(graph)) if c), None)


def _graph(root: Path) -> dict[str, set[str]]:
    modules = _modules(root)
    return {m: _imports_at_load(p, m, pkg, set(modules)) for m, (p, pkg) in modules.items()}


def test_no_import_cycle_in_the_package():
    assert _cycle(_graph(SRC)) is None


def test_the_checker_sees_a_cycle_through_a_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import x\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import y\n")  # in a function: not at load
    assert _cycle(_graph(pkg)) is None
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    assert _cycle(_graph(pkg)) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_no_module_is_too_large_to_read():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
