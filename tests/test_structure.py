"""The package's shape: no import cycles, the layering of ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bagoftricks"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every bagoftricks module -> the bagoftricks modules it imports (at any depth of its code)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_no_import_cycles():
    graph = imports()
    # `from bagoftricks.x import y` also runs bagoftricks/__init__ and bagoftricks/x/__init__; a
    # package's own __init__ importing its submodules is not a cycle, so only module edges count.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def test_layering():
    """tricks and models import neither Lightning code nor the layers above them."""
    graph = imports()
    for name, targets in graph.items():
        if name.startswith(("bagoftricks.tricks", "bagoftricks.models")):
            above = {t for t in targets if not t.startswith(("bagoftricks.tricks", "bagoftricks.models", "bagoftricks.errors"))}
            assert not above, f"{name} imports {above}"
            source = (PACKAGE.parent / (name.replace(".", "/") + ".py")).read_text() if not (PACKAGE.parent / name.replace(".", "/")).is_dir() else ""
            assert "lightning" not in source, f"{name} imports lightning"
