"""The layout holds: no Prefect in the core, no import cycles, and every package of the tree installed.

Import edges are read from the source (every ``import``, at module level or inside a function, except under
``if TYPE_CHECKING:``), so a cycle hidden behind a deferred import counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"ragline": REPO / "ragline", "ragline.flows": REPO / "flows", "ragline.tasks": REPO / "tasks"}
"""Package name → folder, as pyproject installs them."""


def modules() -> dict[str, Path]:
    """Every module of the installed tree, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if package == "ragline" and parts and parts[0] in ("flows", "tasks"):
                continue
            found[".".join((package, *parts))] = path
    return found


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """Modules this module imports (outside ``if TYPE_CHECKING:``): ``from package import submodule`` counts as the
    submodule, ``from module import name`` as the module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = set(_imports(tree, name, path.name == "__init__.py", set(known)))
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_core_imports_no_prefect() -> None:
    core = sorted(m for m in modules() if not m.startswith(("ragline.flows", "ragline.tasks")) and "__main__" not in m)
    code = "import sys\n" + "".join(f"import {m}\n" for m in core) + "sys.exit('prefect' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:] or "a core module imports prefect"


def test_pyproject_installs_every_package_of_the_tree() -> None:
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {m for m, p in modules().items() if p.name == "__init__.py"}
    assert sorted(settings["packages"]) == sorted(packages)
    assert settings["package-dir"] == {"ragline.flows": "flows", "ragline.tasks": "tasks"}
