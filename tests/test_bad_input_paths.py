"""The bad-input catalogue, paths: folders and files checked once, up front, and options
that would quietly change where the run looks (issue 21).

Each row is a real `pytest` run in a child process, as a user would start it (no
`--collect-only` unless the row is about it: the checks must stop a run that would
measure), on a project whose results folder already holds a run. A refused row must
end as ONE usage error (exit 4) naming the option, variable or file, with no traceback,
before any engine loads, and leave the results folder byte for byte as it was (SHA-256
of every file). Rows marked "accepted" check the input that must still work.
RELIABILITY.md ("Paths, checked up front") lists these classes.

Tests run as root here, and root writes past file modes. A folder that "cannot be
written" is made real for root too: an immutable folder (`chattr +i`), which stops
every user; where that is not allowed the row is skipped as root, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_llmperf.models.names import tiny_model_path
from pytest_llmperf.plugin.options import value_flags
from tests.test_bad_input import (
    GRID_SUITE,
    PREVIOUS_RUN,
    Outcome,
    assert_refused,
    hashes,
    project_with_previous_run,
)

USAGE_ERROR = pytest.ExitCode.USAGE_ERROR


def run_in(root: Path, *args: str, env: dict[str, str] | None = None) -> Outcome:
    """`pytest ARGS` in `root`, CPU only; `env` adds to (or, with "", removes from) ours."""
    environ = dict(os.environ)
    for key, value in (env or {}).items():
        if value:
            environ[key] = value
        else:
            environ.pop(key, None)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--gpus=cpu", *args]
    out = subprocess.run(
        argv, cwd=root, env=environ, capture_output=True, text=True, timeout=300, check=False
    )
    return Outcome(out.returncode, out.stdout, out.stderr)


def assert_one_usage_error(out: Outcome, *words: str) -> None:
    """Exit 4, the words on stderr, no traceback, and one error: not one per test."""
    assert_refused(out, USAGE_ERROR, words)
    assert out.stderr.count("ERROR:") == 1, out.stderr
    assert "passed" not in out.stdout and "failed" not in out.stdout, out.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return project_with_previous_run(root)


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """Makes a folder that no one may write in, root included; undone afterwards."""
    undo: list[list[str]] = []

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            undo.append(["chmod", "755", str(folder)])
            return folder
        try:
            out = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("running as root, where mode 555 does not stop writes, and no chattr")
        if out.returncode != 0:
            pytest.skip(
                "running as root, where mode 555 does not stop writes, and chattr +i is "
                f"not allowed here: {out.stderr.strip()}"
            )
        undo.append(["chattr", "-i", str(folder)])
        return folder

    yield make
    for command in reversed(undo):
        subprocess.run(command, check=True)


def model_folder(root: Path, config: bytes | None) -> str:
    """A model folder in `root`, with `config` as its config.json (None: none)."""
    folder = root / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_bytes(config)
    return str(folder)


# --- the results folder ---------------------------------------------------------------------


def test_read_only_results_folder_stops_the_run_once(
    project: Path, read_only: Callable[[Path], Path]
) -> None:
    results = read_only(project / "results")
    before = hashes(results)
    out = run_in(project)
    # Left to its default, the folder is the ini option's (its default) and said so.
    assert_one_usage_error(
        out, "ini option llmperf_results_dir: the run could not write its results", str(results)
    )
    assert hashes(results) == before
    out = run_in(project, "--llmperf-results-dir=results")
    assert_one_usage_error(out, "--llmperf-results-dir: the run could not write its results")
    assert hashes(results) == before


def test_read_only_results_folder_under_xdist(
    project: Path, read_only: Callable[[Path], Path]
) -> None:
    """The controller checks once, before any worker starts."""
    results = read_only(project / "results")
    before = hashes(results)
    out = run_in(project, "-n", "2")
    assert_one_usage_error(out, "llmperf_results_dir: the run could not write its results")
    assert hashes(results) == before


def test_read_only_results_folder_from_the_ini(
    project: Path, read_only: Callable[[Path], Path]
) -> None:
    read_only(project / "ro")
    (project / "pytest.ini").write_text("[pytest]\nllmperf_results_dir = ro/results\n")
    before = hashes(project / "results")
    out = run_in(project)
    assert_one_usage_error(out, "ini option llmperf_results_dir: the run could not write")
    assert not (project / "ro" / "results").exists()
    assert hashes(project / "results") == before


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--llmperf-results-dir", "a_file/results", "'a_file/results' cannot be a folder"),
        ("--llmperf-results-dir", "a_file/x/y", "'a_file/x/y' cannot be a folder"),
        ("--llmperf-thresholds-dir", "a_file/thresholds", "'a_file/thresholds' cannot be a"),
    ],
)
def test_folder_under_a_file(project: Path, option: str, value: str, words: str) -> None:
    before = hashes(project / "results")
    out = run_in(project, f"{option}={value}")
    assert_one_usage_error(out, f"{option}: {words}", "a_file is a file")
    assert hashes(project / "results") == before


def test_folder_under_a_file_from_the_ini(project: Path) -> None:
    (project / "pytest.ini").write_text("[pytest]\nllmperf_results_dir = a_file/results\n")
    out = run_in(project)
    assert_one_usage_error(out, "ini option llmperf_results_dir: 'a_file/results' cannot be")


def test_read_only_results_folder_still_lists_tests(
    project: Path, read_only: Callable[[Path], Path]
) -> None:
    """Accepted: --collect-only writes nothing, so a read-only checkout can list its tests."""
    read_only(project / "results")
    out = run_in(project, "--collect-only", "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "test_suite.py::test_x" in out.stdout


# --- thresholds -----------------------------------------------------------------------------


def test_file_where_the_hardware_folder_belongs(project: Path) -> None:
    (project / "thresholds").mkdir()
    (project / "thresholds" / "cpu").write_text("output_tok_per_s: {min: 1e9}\n")
    before = hashes(project / "results")
    out = run_in(project)
    assert_one_usage_error(
        out, "thresholds/cpu: a file where the thresholds folder of hardware 'cpu' belongs"
    )
    assert hashes(project / "results") == before


def test_folder_where_the_thresholds_file_belongs(project: Path) -> None:
    (project / "thresholds" / "cpu" / "hf.yaml").mkdir(parents=True)
    out = run_in(project)
    assert_one_usage_error(out, "thresholds/cpu/hf.yaml: a folder, where a thresholds file")


def test_thresholds_of_a_grid_engine_are_checked_at_collection(project: Path) -> None:
    """A configuration that names its own engine: that engine's file is checked too."""
    (project / "test_suite.py").write_text(GRID_SUITE)
    (project / "grid.yaml").write_text("schema: 1\nconfigs:\n  a: {engine: llamacpp}\n")
    (project / "thresholds" / "cpu" / "llamacpp.yaml").mkdir(parents=True)
    out = run_in(project, "--collect-only")
    assert_one_usage_error(out, "thresholds/cpu/llamacpp.yaml: a folder, where a thresholds")


def test_update_into_a_read_only_thresholds_folder(
    project: Path, read_only: Callable[[Path], Path]
) -> None:
    folder = read_only(project / "thresholds")
    before = hashes(project / "results")
    out = run_in(project, "--llmperf-update-thresholds")
    assert_one_usage_error(
        out, "--llmperf-update-thresholds: the bounds for engine 'hf' could not be written"
    )
    assert hashes(project / "results") == before
    assert not any(folder.iterdir())


def test_update_with_a_file_where_the_hardware_folder_belongs(project: Path) -> None:
    (project / "thresholds").mkdir()
    (project / "thresholds" / "cpu").write_text("notes\n")
    before = hashes(project / "results")
    out = run_in(project, "--llmperf-update-thresholds")
    assert_one_usage_error(out, "thresholds/cpu: a file where the thresholds folder")
    assert (project / "thresholds" / "cpu").read_text() == "notes\n"
    assert hashes(project / "results") == before


# --- the model --------------------------------------------------------------------------------

MODEL_ROWS: list[tuple[str, bytes | None, str]] = [
    # (case, config.json's bytes or None for none, words)
    ("no_config", None, "has no config.json"),
    ("config_not_json", b'{"model_type": "llama",', "config.json is not valid JSON"),
    ("config_a_list", b"[]", "config.json must hold a JSON object, got list"),
    ("config_not_utf8", b'{"a": "\xff"}', "cannot read config.json"),
    ("config_nested_deep", b"[" * 100_000, "config.json is nested too deeply"),
]


@pytest.mark.parametrize(
    "config, words", [r[1:] for r in MODEL_ROWS], ids=[r[0] for r in MODEL_ROWS]
)
def test_model_folder(project: Path, config: bytes | None, words: str) -> None:
    model = model_folder(project, config)
    before = hashes(project / "results")
    out = run_in(project, f"--model={model}")
    assert_one_usage_error(out, f"--model: model path {model!r}", words)
    assert hashes(project / "results") == before


def test_model_folder_with_a_folder_for_its_config(project: Path) -> None:
    model = model_folder(project, None)
    (Path(model) / "config.json").mkdir()
    out = run_in(project, f"--model={model}", "--engine=vllm-server")
    assert_one_usage_error(out, "has a folder named config.json")


def test_model_folder_from_the_ini(project: Path) -> None:
    model_folder(project, None)
    (project / "pytest.ini").write_text("[pytest]\nllmperf_model = model\n")
    out = run_in(project)
    assert_one_usage_error(out, "ini option llmperf_model: model path 'model' has no config")


def test_gguf_that_is_not_gguf(project: Path) -> None:
    (project / "model.gguf").write_text("not a model\n")
    out = run_in(project, "--engine=llamacpp", "--model=model.gguf")
    assert_one_usage_error(out, "--model: 'model.gguf' is not a GGUF file")


# --- the cache folder -----------------------------------------------------------------------

CACHE_ROWS: list[tuple[str, str, str, str]] = [
    # (case, variable, value under the project, words)
    ("a_file", "LLMPERF_CACHE_DIR", "a_file", "LLMPERF_CACHE_DIR: 'a_file' is a file"),
    ("under_a_file", "LLMPERF_CACHE_DIR", "a_file/c", "'a_file/c' cannot be a folder"),
    ("xdg_a_file", "XDG_CACHE_HOME", "a_file", "XDG_CACHE_HOME (the cache folder is"),
]


@pytest.mark.parametrize(
    "variable, value, words", [r[1:] for r in CACHE_ROWS], ids=[r[0] for r in CACHE_ROWS]
)
def test_cache_folder(project: Path, variable: str, value: str, words: str) -> None:
    before = hashes(project / "results")
    env = {variable: value} | ({"LLMPERF_CACHE_DIR": ""} if variable != "LLMPERF_CACHE_DIR" else {})
    out = run_in(project, env=env)
    assert_one_usage_error(out, words)
    assert hashes(project / "results") == before


def test_read_only_cache_that_must_build_the_model(
    project: Path, read_only: Callable[[Path], Path]
) -> None:
    cache = read_only(project / "cache")
    before = hashes(project / "results")
    out = run_in(project, env={"LLMPERF_CACHE_DIR": str(cache)})
    assert_one_usage_error(
        out,
        "LLMPERF_CACHE_DIR:",
        "the built-in model 'tiny' is built and kept there",
        "python -m pytest_llmperf.models tiny",
    )
    assert hashes(project / "results") == before
    assert not any(cache.iterdir())


def test_read_only_cache_that_holds_the_model(
    project: Path, read_only: Callable[[Path], Path]
) -> None:
    """Accepted: a model already built is only read."""
    cache = project / "cache"
    shutil.copytree(tiny_model_path(), cache / "models" / tiny_model_path().name)
    read_only(cache / "models")
    read_only(cache)
    out = run_in(project, "--llmperf-dry-run", "-rs", env={"LLMPERF_CACHE_DIR": str(cache)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "dry run: test_suite.py::test_x: 1 requests" in out.stdout, out.stdout


# --- options that would move the rootdir (pytest issue 8846) --------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Folders outside the project: a model and a results folder that already exist."""
    model = tmp_path / "models" / "x"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data.jsonl").write_text('{"custom_id": "a", "prompt": "hi"}\n')
    return tmp_path


SPACE_ROWS: list[tuple[str, str]] = [
    # (option, value under `outside`)
    ("--model", "models/x"),
    ("--llmperf-results-dir", "elsewhere"),
    ("--llmperf-dataset", "data.jsonl"),
    ("--llmperf-compare", f"elsewhere/{PREVIOUS_RUN}"),
]


@pytest.mark.parametrize("option, value", SPACE_ROWS, ids=[o for o, _ in SPACE_ROWS])
def test_option_value_as_a_separate_argument_without_a_test_path(
    project: Path, outside: Path, option: str, value: str
) -> None:
    if option == "--llmperf-compare":
        shutil.copytree(project / "results" / PREVIOUS_RUN, outside / value)
    path = str(outside / value)
    before, elsewhere = hashes(project / "results"), hashes(outside / "elsewhere")
    out = run_in(project, option, path)
    assert_one_usage_error(
        out,
        f"{option} {path}: pytest took {path!r} for a test path",
        "pytest issue 8846",
        f"where the test paths alone give rootdir {project} with ini file {project}/pytest.ini",
        f"Write the option as one argument: {option}={path}",
    )
    assert hashes(project / "results") == before
    assert hashes(outside / "elsewhere") == elsewhere
    assert not (outside / "results").exists()


def test_option_value_as_a_separate_argument_in_pytest_addopts(
    project: Path, outside: Path
) -> None:
    path = str(outside / "models" / "x")
    out = run_in(project, env={"PYTEST_ADDOPTS": f"--model {path}"})
    assert_one_usage_error(out, f"Write the option as one argument: --model={path}")


@pytest.mark.parametrize("option, value", SPACE_ROWS[:2], ids=[o for o, _ in SPACE_ROWS[:2]])
def test_option_value_as_one_argument_keeps_the_project(
    project: Path, outside: Path, option: str, value: str
) -> None:
    """Accepted: `--model=PATH` is one argument; the project's rootdir and ini are used."""
    out = run_in(project, f"{option}={outside / value}", "--collect-only")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"rootdir: {project}" in out.stdout and "configfile: pytest.ini" in out.stdout


def test_results_dir_as_one_argument_writes_there(project: Path, outside: Path) -> None:
    """Accepted, and measured: the run lands in the folder given, nowhere else."""
    before = hashes(project / "results")
    out = run_in(project, f"--llmperf-results-dir={outside / 'elsewhere'}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run,) = (outside / "elsewhere").iterdir()  # the write check left no file behind
    summary = json.loads((run / "summary.json").read_text())
    assert [t["test_id"] for t in summary["tests"]] == ["test_suite.py::test_x"]
    assert hashes(project / "results") == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("test_suite.py", "--model", "{outside}/models/x"), id="test-path-first"),
        pytest.param(("--model", "model"), id="value-inside-the-project"),
        pytest.param(("--llmperf-results-dir", "results"), id="results-inside-the-project"),
    ],
)
def test_separate_argument_that_keeps_the_rootdir_is_accepted(
    project: Path, outside: Path, args: tuple[str, ...]
) -> None:
    """Accepted: only a value that moves the rootdir or ini file is an error."""
    model_folder(project, b"{}")
    out = run_in(project, *(a.format(outside=outside) for a in args), "--collect-only")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"rootdir: {project}" in out.stdout and "configfile: pytest.ini" in out.stdout


def test_the_options_checked_are_those_that_take_a_value() -> None:
    flags = value_flags()
    for flag in ("--model", "--llmperf-results-dir", "--llmperf-thresholds-dir", "--engine"):
        assert flag in flags
    for flag in ("--llmperf-dry-run", "--llmperf-update-thresholds", "--llmperf-isolate"):
        assert flag not in flags
