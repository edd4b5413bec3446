"""README.md as a user reads it: its recipes run exactly as written, and its reference tables are
what the code says (issue 24, point 6).

A recipe is the fenced blocks after `<!-- recipe NAME: file PATH -->` (written to a fresh folder)
and `<!-- recipe NAME: run -->` (run there with `bash -e`, with this Python's folder first on
PATH so that `python` and `pytest` are this environment's). Before: no dataset-driven test and no
recipe for starting a server on the built-in model were in the README, and nothing listed the
grid keys, the workload parameters or their defaults.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmperf.report.reference import BEGIN, END, reference_text
from pytest_llmperf.results.runs import find_runs

README = Path(__file__).resolve().parent.parent / "README.md"
RECIPE = re.compile(r"<!-- recipe (\S+): (file (\S+)|run) -->\n```\w*\n(.*?)```", re.S)


def recipe(name: str) -> tuple[dict[str, str], list[str]]:
    """The recipe's files (path -> text) and its scripts, in the README's order."""
    files: dict[str, str] = {}
    scripts: list[str] = []
    for found in RECIPE.finditer(README.read_text(encoding="utf-8")):
        if found.group(1) != name:
            continue
        if found.group(3):
            files[found.group(3)] = found.group(4)
        else:
            scripts.append(found.group(4))
    assert files or scripts, f"README.md has no recipe {name!r}"
    return files, scripts


def run_recipe(tmp_path: Path, *names: str, timeout_s: float = 600) -> str:
    """Write the recipes' files into `tmp_path` and run the last one's scripts there."""
    for name in names:
        files, scripts = recipe(name)
        for path, text in files.items():
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(text, encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    output = ""
    for script in scripts:
        # A session of its own: a server the script starts in the background is ended with it.
        process = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = process.communicate(timeout=timeout_s)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        output += out
        assert process.returncode == 0, f"{script}\n{out[-5000:]}"
    return output


def test_the_reference_tables_are_what_the_code_says() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN) + 1, text.index(END)
    assert text[start:end] == reference_text(), "README.md's reference is stale: paste in " + (
        "`llmperf reference`"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest_llmperf", "reference"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == reference_text()
    # The rows a newcomer looks for: the hf batch a test without a configuration gets.
    assert "| `max_num_seqs` | int | `8` | `batch` | requests per batch (static batching) |" in (
        out.stdout
    )


def test_the_dataset_recipe_measures_each_line(tmp_path: Path) -> None:
    out = run_recipe(tmp_path, "dataset")
    assert out.count("1 passed") == 2, out[-3000:]
    runs = find_runs(tmp_path / "results")
    assert len(runs) == 2
    for run in runs:
        (test,) = run.tests
        assert test.metric("requests") == 2 * 2  # two lines, two rounds
        assert test.metric("failures") == 0
    custom_ids = {r["custom_id"] for r in runs[0].requests()}
    assert custom_ids == {"q1", "q2"}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_the_vllm_server_recipe(tmp_path: Path) -> None:
    out = run_recipe(tmp_path, "dataset", "vllm-server")
    assert "1 passed" in out, out[-3000:]
    (run,) = find_runs(tmp_path / "results")
    (test,) = run.tests
    assert test.engine == "openai" and test.metric("failures") == 0


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
)
@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_the_llamacpp_server_recipe(tmp_path: Path) -> None:
    out = run_recipe(tmp_path, "dataset", "llamacpp-server")
    assert "1 passed" in out, out[-3000:]
    (run,) = find_runs(tmp_path / "results")
    (test,) = run.tests
    assert test.engine == "openai" and test.metric("failures") == 0
