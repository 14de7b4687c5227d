"""How the parts of AirWatt import each other: no cycles, and few imports hidden inside functions.

Run as a script (`python tests/test_imports.py`) to print the import cycles and the function-level imports of
project code in agent/, with their places.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The CPython parts, as installed: agent/ is airwatt.agent and so on. firmware/ and emulator/board/ run on
# MicroPython with their own import path; they import nothing from these packages.
PARTS = ("agent", "protocol", "emulator")
# Imports of project code inside functions are kept only where they keep `airwatt --help` fast (the heavy
# modules a verb needs load when it runs): the bound.
MAX_FUNCTION_IMPORTS = 15
# None left on the board's side either: the board's uplink checks an answer's settings itself (settings.py
# builds on answer.py's checks). Any cycle fails.
BOARD_CYCLES = []


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the CPython parts (a package's name maps to its __init__)."""
    found = {}
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            names = list(rel.parts)
            if names[-1] == "__init__":
                names.pop()
            found[".".join(["airwatt", *names])] = path
    return found


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for each import of project code in a module.

    `from package import name` counts as importing the submodule `package.name` when there is one, else the
    package itself (its __init__). Parent packages that Python loads on the way are not counted: only what
    the code names."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in known:
                        found.append((alias.name, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                source = _absolute(module, path, child)
                targets = set()
                for alias in child.names:
                    sub = source + "." + alias.name
                    targets.add(sub if sub in known else source)
                for target in sorted(t for t in targets if t in known):
                    found.append((target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its code, module level or inside functions)."""
    known = modules()
    return {m: {t for t, _, _ in imports(m, p, known) if t != m} for m, p in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


def function_imports() -> list[str]:
    """'file:line -> module' for each import of project code inside a function in agent/."""
    known = modules()
    return [
        "%s:%d -> %s" % (path.relative_to(ROOT), line, target)
        for m, path in known.items()
        if m.startswith("airwatt.agent")
        for target, line, inside in imports(m, path, known)
        if inside
    ]


def test_no_import_cycles():
    assert [c for c in cycles(graph()) if c not in BOARD_CYCLES] == []


def test_function_level_imports_of_project_code_are_few():
    found = function_imports()
    assert len(found) <= MAX_FUNCTION_IMPORTS, "\n".join(found)


def test_the_counter_sees_cycles_and_function_imports(tmp_path):
    # The checks above pass on an empty answer, so the counter itself must be seen to find what it looks for.
    pkg = tmp_path / "agent" / "adapters"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def make():\n    from airwatt.agent.adapters import one\n")
    (pkg / "one.py").write_text("from airwatt.agent.adapters import make\n")
    (pkg / "two.py").write_text("from . import one\n")
    known = {"airwatt.agent.adapters": pkg / "__init__.py", "airwatt.agent.adapters.one": pkg / "one.py",
             "airwatt.agent.adapters.two": pkg / "two.py"}
    edges = {m: {t for t, _, _ in imports(m, p, known)} for m, p in known.items()}
    assert edges == {"airwatt.agent.adapters": {"airwatt.agent.adapters.one"},
                     "airwatt.agent.adapters.one": {"airwatt.agent.adapters"},
                     "airwatt.agent.adapters.two": {"airwatt.agent.adapters.one"}}
    assert cycles(edges) == [["airwatt.agent.adapters", "airwatt.agent.adapters.one"]]
    inside = [(t, line) for t, line, fn in imports("airwatt.agent.adapters", pkg / "__init__.py", known) if fn]
    assert inside == [("airwatt.agent.adapters.one", 2)]


if __name__ == "__main__":
    for component in cycles(graph()):
        print("cycle:", " <-> ".join(component))
    listed = function_imports()
    print("\n".join(listed))
    print("%d import cycles, %d function-level imports of project code in agent/" % (len(cycles(graph())), len(listed)))
