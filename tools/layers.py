"""Check flask-asgi's floors: ``python -m tools.layers`` (the test suite runs it too).

Each module of ``src/flask_asgi`` stands on a floor: ``ground/`` (0), ``protocol/`` (1),
``features/`` (2), and the package's top (3: the façade, the CLI, the server glue, the
test clients). Every import of one flask_asgi module by another, including imports made
inside functions, must go to the same floor or a lower one, and the imports must form no
cycle. A module importing a name from its own package (``from . import NAME``, not a
submodule) depends on the package's ``__init__``: if that ``__init__`` imports the
module, even inside a function, it is a cycle too. Imports under ``if TYPE_CHECKING:``
are annotations only and are not counted.
No module may be longer than 500 lines. Exits 1 and lists the problems if any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "flask_asgi"
FLOORS = {"ground": 0, "protocol": 1, "features": 2}
FLOOR_NAMES = ["ground", "protocol", "features", "top"]
MAX_LINES = 500


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(module: str) -> int:
    parts = module.split(".")
    return FLOORS.get(parts[1], 3) if len(parts) > 1 else 3


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    tree: ast.AST, module: str, is_package: bool, modules: set[str]
) -> list[tuple[str, int]]:
    """(imported flask_asgi module, line) for every counted import in ``tree``."""
    found: list[tuple[str, int]] = []
    base = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "flask_asgi":
                    found.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = base[: len(base) - node.level + 1]
                name = ".".join(target + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "flask_asgi":
                # "from . import server" imports a submodule: count the submodule.
                for alias in node.names:
                    sub = f"{name}.{alias.name}"
                    found.append((sub if sub in modules else name, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def modules_of(package: Path) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def check(package: Path = PACKAGE) -> tuple[list[str], dict[str, set[str]]]:
    """The problems found in ``package``, and its import graph."""
    modules = modules_of(package)
    problems: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        where = path.relative_to(package.parent)
        text = path.read_text()
        lines = text.count("\n") + (not text.endswith("\n"))
        if lines > MAX_LINES:
            problems.append(f"{where}: {lines} lines (max {MAX_LINES})")
        tree = ast.parse(text, str(path))
        for target, line in _imports(tree, name, path.name == "__init__.py", set(modules)):
            if target not in modules or target == name:
                continue
            # A module's own package counts too: "from . import X" in a submodule, X not a
            # module, runs the package's __init__, which may import that submodule back.
            graph[name].add(target)
            if floor_of(target) > floor_of(name):
                problems.append(
                    f"{where}:{line}: {name}"
                    f" ({FLOOR_NAMES[floor_of(name)]}) imports {target}"
                    f" ({FLOOR_NAMES[floor_of(target)]}), a higher floor"
                )
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems, graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
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
                found.append(_cycle_in(set(component), graph))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _cycle_in(members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the first of ``members`` (a strongly connected component),
    as the imports go: ``[a, b, a]``."""
    start = min(members)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError("not a strongly connected component")


def main() -> int:
    problems, graph = check()
    for floor, floor_name in reversed(list(enumerate(FLOOR_NAMES))):
        members = [m for m in graph if floor_of(m) == floor]
        print(f"{floor_name}: {', '.join(m.removeprefix('flask_asgi.') or m for m in members)}")
    if problems:
        print("\n".join(["", "problems:"] + problems), file=sys.stderr)
        return 1
    edges = sum(len(targets) for targets in graph.values())
    print(
        f"\n{len(graph)} modules, {edges} imports: all go down a floor or stay, no cycle,"
        f" none over {MAX_LINES} lines"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
