"""The house's arrows point one way: `core/` has no import circle (lazy imports inside functions count too), no
recipe imports the other, and `core/` imports neither a recipe nor the UI. What two modules both need lives in a
third, so each concern keeps one home (the README's layout section is their index)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "image_vlm", "video_vlm", "ui")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Project modules that `path` imports anywhere in its body, each resolved to the longest known module name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph(package: str = "") -> dict[str, set[str]]:
    files = [path for top in PACKAGES for path in (REPO / top).rglob("*.py")]
    known = {module_name(path) for path in files}
    graph = {module_name(path): imported_modules(path, known) for path in files}
    for module, targets in graph.items():
        targets.discard(module)
        targets -= {name for name in targets if module.startswith(name + ".") or name == module.rpartition(".")[0]}
    return graph


def cycles(graph: dict[str, set[str]], within: str) -> list[list[str]]:
    """Every strongly connected group of more than one module under `within` (Tarjan's algorithm)."""
    nodes = [name for name in graph if name == within or name.startswith(within + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in nodes:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


def test_core_has_no_import_circle():
    assert cycles(import_graph(), "core") == []


def test_the_circle_check_finds_a_lazy_circle(tmp_path):
    graph = {"core.a": {"core.b"}, "core.b": {"core.c"}, "core.c": {"core.a"}, "core.d": {"core.a"}}
    assert cycles(graph, "core") == [["core.a", "core.b", "core.c"]]


def test_no_recipe_imports_the_other_and_core_imports_neither():
    graph = import_graph()
    wrong = {
        module: sorted(target for target in targets if target.split(".")[0] in forbidden)
        for module, targets in graph.items()
        for forbidden in [
            {"image_vlm": {"video_vlm", "ui"}, "video_vlm": {"image_vlm", "ui"}, "core": {"image_vlm", "video_vlm", "ui"}}.get(
                module.split(".")[0], set()
            )
        ]
    }
    assert {module: targets for module, targets in wrong.items() if targets} == {}
