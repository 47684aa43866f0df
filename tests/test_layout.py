"""The package's shape (issue 25): no import circle anywhere in src/localstdp, read from the source
with ``ast`` (every import that can run: module level and inside functions; not the names an
``if TYPE_CHECKING:`` block gives type checkers), no source module over ~420 lines, and nothing in
the library importing the command line (cli/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "localstdp"
MAX_LINES = 420


def _name(path: Path) -> str:
    parts = ["localstdp", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node that can run (skips ``if TYPE_CHECKING:`` bodies)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from .x import y`` names x.y when y is a module)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            for t in targets:
                while t and t not in mods:  # localstdp.x.y -> the longest prefix that is a module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports():
    g = import_graph()
    assert "localstdp.evaluation.analysis" in g["localstdp.evaluation.grid"]  # imported inside run_grid
    assert "localstdp.evaluation.stats" in g["localstdp.evaluation.analysis"]  # from . import stats
    assert "localstdp.errors" in g["localstdp.rules.params"]  # from ..errors import
    assert "localstdp.config" not in g["localstdp"]  # only under TYPE_CHECKING (the package loads it lazily)


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_library_never_imports_the_command_line():
    bad = {m: sorted(t for t in ts if t == "localstdp.cli" or t.startswith("localstdp.cli."))
           for m, ts in import_graph().items() if not (m == "localstdp.cli" or m.startswith("localstdp.cli."))}
    assert {m: ts for m, ts in bad.items() if ts and m != "localstdp.__main__"} == {}


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_the_limit(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (split it by concern)"
