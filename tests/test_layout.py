"""The layout's rules (README, "Layout"), read from the code's own imports.

Every import counts: at module level, inside functions (lazy ones) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the layers of runner/, top first: a module may import its own layer and the ones below it
LAYERS = (
    ("runner.cli", "runner.__main__"),
    ("runner", "runner.experiment"),
    ("runner.integrations",),
    ("runner.server",),
    ("runner.pipeline",),
    ("runner.backends",),
    ("runner.proxy",),
    ("runner.store",),
    ("runner.results",),
    ("runner.errors", "runner.settings", "runner.options", "runner.scoring", "runner.inline", "runner.schema",
     "runner.names", "runner.ratelimit", "runner.retrying", "runner.prefetch", "runner._json"),
)


def modules() -> dict[str, Path]:
    found = {}
    for package in ("runner", "evals"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> Iterator[str]:
    """The runner/evals modules ``module`` imports, anywhere in it."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module and not module.startswith(target + "."):
                yield target


GRAPH = {m: set(imports(m)) for m in MODULES}


def layer(module: str) -> int:
    best = None
    for i, members in enumerate(LAYERS):
        for m in members:
            if (module == m or module.startswith(m + ".")) and (best is None or len(m) > best[1]):
                best = (i, len(m))
    assert best is not None, f"{module} is in no layer of LAYERS: add it (and to the README's Layout)"
    return best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return found


def test_there_is_no_import_cycle() -> None:
    assert cycles(GRAPH) == []


def test_the_cycle_check_finds_a_cycle_through_three_modules() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c"]]


def test_imports_run_one_way_down_the_layers() -> None:
    upward = [
        f"{a} imports {b}"
        for a in sorted(GRAPH)
        if a.startswith("runner")
        for b in sorted(GRAPH[a])
        if b.startswith("runner") and layer(b) < layer(a)
    ]
    assert upward == []


def test_the_pipeline_knows_the_backends_only_by_their_protocol() -> None:
    allowed = {"runner.backends", "runner.backends.base", "runner.backends.target"}
    seen = {
        f"{a} imports {b}"
        for a in GRAPH
        if a.startswith("runner.pipeline")
        for b in GRAPH[a]
        if b.startswith("runner.backends") and b not in allowed
    }
    assert seen == set()


def test_results_and_the_pipeline_know_nothing_of_the_cli_or_the_server() -> None:
    # (and results, pure functions and values, know nothing of the doors or the store either)
    seen = {
        f"{a} imports {b}"
        for a in GRAPH
        if a.startswith(("runner.results", "runner.pipeline", "runner.backends", "runner.store"))
        for b in GRAPH[a]
        if b.startswith(("runner.cli", "runner.server", "runner.experiment"))
        or (a.startswith("runner.results") and b.startswith(("runner.backends", "runner.store", "runner.proxy")))
    }
    assert seen == set()


def test_only_the_settings_read_the_door_from_the_environment() -> None:
    # PAREA_BASE_URL decides the door: Settings reads it, resolve_target() decides; nothing else looks
    readers = sorted(
        m for m, path in MODULES.items()
        if any(
            isinstance(n, ast.Constant) and n.value == "PAREA_BASE_URL" for n in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert readers == ["runner.settings"]


def test_every_package_says_what_it_holds() -> None:
    empty = [m for m, path in MODULES.items() if path.name == "__init__.py" and not ast.get_docstring(
        ast.parse(path.read_text()))]
    assert empty == []
