"""The public ways in keep working whatever the layout: the pytest11 entry point, the
`llmperf` console script, `python -m pytest_llmperf`, `python -m pytest_llmperf.tinymodel`
(tests/test_tinymodel.py) and every name of `pytest_llmperf.__all__`."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import pytest_llmperf


def test_every_public_name_imports() -> None:
    module = importlib.import_module("pytest_llmperf")
    missing = [name for name in pytest_llmperf.__all__ if not hasattr(module, name)]
    assert not missing
    assert pytest_llmperf.__version__ == importlib.metadata.version("pytest-llmperf")


def test_the_pytest11_entry_point_is_the_plugin_with_its_fixture() -> None:
    (point,) = [e for e in entry_points(group="pytest11") if e.name == "llmperf"]
    assert point.value == "pytest_llmperf.plugin"
    plugin = point.load()
    assert callable(plugin.pytest_addoption) and callable(plugin.llmperf)


def test_pytest_finds_the_plugin_through_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(llmperf):\n    assert llmperf.session is not None\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "pytest_llmperf", "--help"],
        [str(Path(sys.executable).with_name("llmperf")), "--help"],
    ],
    ids=["python-m", "console-script"],
)
def test_the_cli_runs_as_python_m_and_as_a_console_script(argv: list[str]) -> None:
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "compare" in run.stdout and "list" in run.stdout
