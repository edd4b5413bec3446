"""The package's layers: imports point one way, and no module imports itself back.

Each subpackage (and each top-level module) sits on one layer; a module may import modules of
its own layer and of lower ones, never of a higher one. Every import counts, including those
inside functions and under `TYPE_CHECKING`: an import inside a function is how a cycle hides.
README.md's "Architecture" section describes the same layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_llmperf"

#: Lowest first. The names are subpackages or top-level modules of pytest_llmperf.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"version", "errors", "yamlnodes", "tables"}),
    frozenset({"models", "hardware", "procs"}),
    frozenset({"engines"}),
    frozenset({"measure"}),
    frozenset({"suite"}),
    frozenset({"thresholds", "results"}),
    frozenset({"report", "plugin"}),
    frozenset({"cli", "tinymodel", "__main__", "__init__"}),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str:
    """The layer entry a module belongs to: `pytest_llmperf.engines.hf.graph` -> `engines`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(module: str) -> int:
    name = room(module)
    for index, names in enumerate(LAYERS):
        if name in names:
            return index
    raise AssertionError(f"{module}: {name!r} is on no layer: add it to LAYERS (and the README)")


def imported(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """Every pytest_llmperf module `path` imports, with the line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # `from pkg import module` imports the module; `from module import name`, the module.
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for name in names:
            if name == "pytest_llmperf" or name.startswith("pytest_llmperf."):
                yield name, node.lineno


def graph() -> dict[str, set[tuple[str, int]]]:
    edges: dict[str, set[tuple[str, int]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        edges[module] = {
            (target, line) for target, line in imported(path, module) if target != module
        }
    return edges


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)}) "
        f"on line {line}"
        for module, targets in graph().items()
        for target, line in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not wrong, "\n".join(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_module_imports_itself_back() -> None:
    edges = {m: {t for t, _ in targets} for m, targets in graph().items()}
    # A package's __init__ importing its own modules is how a package exposes them; the
    # modules importing their package back would be a cycle and is caught as one.
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a2"}, "a2": set(), "b": {"b"}}, ["b", "b"]),
    ],
)
def test_the_cycle_finder_finds_cycles(
    edges: dict[str, set[str]], expected: list[str] | None
) -> None:
    assert find_cycle(edges) == expected


def test_the_layer_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    source = PACKAGE / "errors.py"
    fake = tmp_path / "errors.py"
    fake.write_text(
        source.read_text() + "\n\ndef f() -> None:\n    from pytest_llmperf.cli import main\n"
    )
    found = dict(imported(fake, "pytest_llmperf.errors"))
    assert "pytest_llmperf.cli" in found
    assert layer_of("pytest_llmperf.cli") > layer_of("pytest_llmperf.errors")


def test_no_top_level_module_list_is_long_and_no_module_is_long() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    for path in PACKAGE.rglob("*"):
        if path.is_dir() and path.name != "__pycache__":
            assert len(list(path.glob("*.py"))) <= 14, path
    long = [
        f"{p.relative_to(PACKAGE)}: {n} lines"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    ]
    assert not long, long
