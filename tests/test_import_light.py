"""`import pytest_llmperf` and plugin start-up must not import torch, transformers or vllm,
and importing any module of the package registers nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest_llmperf


def test_import_and_plugin_load_import_no_heavy_packages() -> None:
    code = (
        "import sys, pytest_llmperf, pytest_llmperf.plugin.hooks;"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'pandas', 'pyarrow', 'matplotlib', 'streamlit') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


PACKAGE = Path(pytest_llmperf.__file__).parent


def registrations_at_import(source: str) -> list[str]:
    """Calls to anything named `*register*` that run when a module is imported: at module
    level or in a class body, in loops and conditions, and in decorators; not in function
    bodies, which run only when called."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if "register" in name.lower():
                found.append(f"line {node.lineno}: {ast.unparse(func)}(...)")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            children: list[ast.AST] = [*node.decorator_list, *node.args.defaults]
        elif isinstance(node, ast.Lambda):
            children = []
        else:
            children = list(ast.iter_child_nodes(node))
        for child in children:
            visit(child)

    visit(ast.parse(source))
    return found


def test_the_registration_check_sees_what_runs_at_import() -> None:
    at_import = """
for name, unit in (("a", "s"), ("b", "ms")):
    register_metric(MetricSpec(name, unit, "lower"))
if True:
    metrics.register(MetricSpec("c", "s", "lower"))
class Hooks:
    atexit.register(print)
@registry.register("x")
def f(): pass
"""
    assert registrations_at_import(at_import) == [
        "line 3: register_metric(...)",
        "line 5: metrics.register(...)",
        "line 7: atexit.register(...)",
        "line 8: registry.register(...)",
    ]
    when_called = "def setup():\n    register_metric(x)\nf = lambda: atexit.register(g)\n"
    assert registrations_at_import(when_called) == []


def test_no_module_registers_anything_at_import() -> None:
    """Importing a module must not change what other modules see (metric specs, engines,
    attention kernels): such tables are declared, or read from entry points when asked."""
    found = {
        str(path.relative_to(PACKAGE)): calls
        for path in sorted(PACKAGE.rglob("*.py"))
        if (calls := registrations_at_import(path.read_text(encoding="utf-8")))
    }
    assert found == {}
