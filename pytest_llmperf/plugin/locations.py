"""Folders and files the run reads and writes, checked once, when the run is configured.

A problem with one of them ends the run with one usage error before any engine loads,
instead of failing every test with a traceback, or letting the run pass while it looked
in the wrong place:

- the command line: an option's value given as a separate argument (`--model /m/x`)
  that pytest took for a test path when it chose the rootdir (`check_invocation`);
- the results folder: a folder, or a path where one can be made, that this user can
  write (`check_results_dir`);
- the thresholds folder: no file on the way to it (`check_folder_path`); a file where a
  hardware folder or a thresholds file belongs is refused where the files are looked up
  (`thresholds.files.select_threshold_files`); with --llmperf-update-thresholds, the
  file to update can be written (`LLMPerfSession.check_engine_files`);
- the model: for engines that load a local model, a folder whose config.json holds a
  JSON object, or a GGUF file where the engine takes one (`check_model`);
- the cache folder, when a built-in model must still be built in it (`check_cache`).

"Can be written" is checked with a real write (`write_problem`): root passes every
permission check, but a read-only file system or an immutable folder stops root too.
The results and thresholds folders are checked for writing only by runs that write:
`--collect-only` and `--llmperf-dry-run` measure nothing, so a read-only checkout can
still list its tests. The cache is checked unless the run only collects: a dry run
tokenizes with the built-in model, so it builds it.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_llmperf.engines import engine_spec
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.models.cache import cache_dir_source, default_cache_dir
from pytest_llmperf.models.names import BUILT_IN_MODELS, built_in_model_dir
from pytest_llmperf.plugin.options import value_flags

#: The first bytes of every GGUF file.
GGUF_MAGIC = b"GGUF"


def run_writes(config: pytest.Config, dry_run: bool) -> bool:
    """Whether this run may write results (and thresholds): not when it only collects."""
    return not config.getoption("collectonly") and not dry_run


# --- paths ---------------------------------------------------------------------------------


def _nearest_existing(path: Path, source: str, text: str) -> Path:
    """`path` if it exists, else its closest ancestor that does."""
    for candidate in (path, *path.parents):
        try:
            os.stat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            if os.path.lexists(candidate):
                raise LLMPerfUsageError(
                    f"{source}: {text!r}: {candidate} is a link to nothing"
                ) from None
            continue
        except OSError as exc:
            raise LLMPerfUsageError(
                f"{source}: {text!r}: cannot reach {candidate}: {exc.strerror}"
            ) from None
        return candidate
    return Path.cwd()


def check_folder_path(path: Path, source: str, text: str) -> Path:
    """A folder that `path` names or can become: no file in its place or on the way to it.

    Returns the closest folder that exists (`path` itself when it does)."""
    existing = _nearest_existing(path, source, text)
    if existing.is_dir():
        return existing
    if existing == path:
        raise LLMPerfUsageError(f"{source}: {text!r} is a file, not a folder")
    raise LLMPerfUsageError(f"{source}: {text!r} cannot be a folder: {existing} is a file")


def write_problem(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (which exists), or None when they can.

    `os.access` answers for permissions; a probe file, created and removed at once,
    answers for what it does not see (root writes past every permission, but not into a
    read-only file system or an immutable folder).
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    try:
        handle, probe = tempfile.mkstemp(prefix=".llmperf-write-check-", dir=folder)
    except OSError as exc:
        return f"cannot create a file in {folder}: {exc.strerror}"
    os.close(handle)
    os.unlink(probe)
    return None


def check_writable_folder(path: Path, source: str, purpose: str) -> None:
    """`path` is, or can be made, a folder this user writes files in."""
    existing = check_folder_path(path, source, str(path))
    problem = write_problem(existing)
    if problem is not None:
        raise LLMPerfUsageError(f"{source}: {purpose}: {problem}")


# --- the run's folders ----------------------------------------------------------------------


def check_results_dir(path: Path, source: str) -> None:
    """The results folder is writable, or can be made where this user writes: found now,
    not as a failed write in every test after its measurement."""
    check_writable_folder(path, source, "the run could not write its results")


def check_cache(model: str) -> None:
    """The cache folder can hold the built-in model the run names, when it must be built.

    A model already built is only read, so a read-only cache that holds it is fine.
    """
    if model not in BUILT_IN_MODELS:
        return
    cache, source = default_cache_dir(), cache_dir_source()
    purpose = f"the built-in model {model!r} is built and kept there"
    existing = check_folder_path(cache, source, str(cache))
    if built_in_model_dir(model).is_dir():
        return
    problem = write_problem(existing)
    if problem is not None:
        raise LLMPerfUsageError(
            f"{source}: {str(cache)!r}: {purpose}, but {problem} (point LLMPERF_CACHE_DIR "
            f"at a folder this user can write, or build the model there first: python -m "
            f"pytest_llmperf.models {model})"
        )


def check_model(engine: str, name: str, source: str) -> None:
    """A model path that cannot be the model is a usage error, caught before anything runs:
    for engines that load a local model, a folder whose config.json holds a JSON object
    (what every engine reads first), or a GGUF file where the engine takes one."""
    traits = engine_spec(engine).traits
    if not traits.local_model or name in BUILT_IN_MODELS:
        return
    path = Path(name).expanduser()
    hint = "give a local model directory, or 'tiny' for the built-in model"
    if not path.exists():
        raise LLMPerfUsageError(f"{source}: model path {name!r} does not exist ({hint})")
    # llama.cpp also takes a single GGUF file; every other engine loads a directory.
    if traits.gguf_model and path.suffix == ".gguf" and not path.is_dir():
        _check_gguf(path, source, name)
        return
    if not path.is_dir():
        raise LLMPerfUsageError(
            f"{source}: model path {name!r} is a file, not a directory ({hint})"
        )
    _check_model_config(path / "config.json", source, name)


def _check_gguf(path: Path, source: str, name: str) -> None:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise LLMPerfUsageError(f"{source}: cannot read {name!r}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise LLMPerfUsageError(
            f"{source}: {name!r} is not a GGUF file (it does not start with {GGUF_MAGIC!r})"
        )


def _check_model_config(config: Path, source: str, name: str) -> None:
    what = f"{source}: model path {name!r}"
    if not config.is_file():
        kind = "a folder named config.json" if config.is_dir() else "no config.json"
        raise LLMPerfUsageError(
            f"{what} has {kind} (a model folder holds the model's config.json, as "
            "save_pretrained writes it; or give 'tiny' for the built-in model)"
        )
    try:
        value = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LLMPerfUsageError(f"{what}: cannot read config.json: {exc}") from None
    except ValueError as exc:
        raise LLMPerfUsageError(f"{what}: config.json is not valid JSON: {exc}") from None
    except RecursionError:
        raise LLMPerfUsageError(f"{what}: config.json is nested too deeply") from None
    if not isinstance(value, dict):
        raise LLMPerfUsageError(
            f"{what}: config.json must hold a JSON object, got {type(value).__name__}"
        )


# --- the command line ----------------------------------------------------------------------


def check_invocation(config: pytest.Config) -> None:
    """An option's value that pytest took for a test path when it chose the rootdir is a
    usage error (pytest issue 8846).

    pytest finds the rootdir and ini file before plugins add their options, from the
    arguments that do not start with '-' and name existing paths. In `pytest --model
    /models/x`, '/models/x' is such an argument: the rootdir becomes a folder around it,
    the project's ini file is not read (its llmperf_* keys, testpaths, addopts), test ids
    change, and thresholds and results are looked up in the wrong folder, without a word.
    `--model=/models/x` is one argument and does not count. pytest is asked where the
    rootdir would be from the real test paths alone; only a difference is an error, so
    `pytest --model models/x` inside the project stays fine.
    """
    taken = _values_taken_for_paths(config)
    if not taken:
        return
    expected = _rootdir_from_test_paths(config)
    actual = (config.rootpath, config.inipath)
    if expected == actual:
        return
    if expected is None and config.getoption("file_or_dir"):
        # pytest's rule could not be asked: refuse only the case with no test path, where
        # the value is all pytest had to go on.
        return
    options = ", ".join(f"{flag} {value}" for flag, value in taken)
    one_argument = " ".join(f"{flag}={value}" for flag, value in taken)
    found = _describe(*actual)
    meant = f", where the test paths alone give {_describe(*expected)}" if expected else ""
    raise LLMPerfUsageError(
        f"{options}: pytest took {taken[0][1]!r} for a test path when it looked for the "
        f"project's ini file (pytest issue 8846) and chose {found}{meant}: the project's "
        "settings, thresholds and results folder would be ignored. Write the option as one "
        f"argument: {one_argument}"
    )


def _describe(rootdir: Path, inipath: Path | None) -> str:
    ini = f"ini file {inipath}" if inipath is not None else "no ini file"
    return f"rootdir {rootdir} with {ini}"


def _values_taken_for_paths(config: pytest.Config) -> list[tuple[str, str]]:
    """(option, value) of each of our options given as two arguments whose value pytest
    read as a path when it chose the rootdir: it names something that exists."""
    try:  # PYTEST_ADDOPTS comes before the arguments, and before the rootdir is chosen
        addopts = shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    except ValueError:  # pytest has refused it already
        addopts = []
    args = [*addopts, *map(str, config.invocation_params.args)]
    flags = set(value_flags())
    taken: list[tuple[str, str]] = []
    for flag, value in itertools.pairwise(args):
        if flag == "--":
            break
        if flag in flags and value and not value.startswith("-"):
            path = config.invocation_params.dir / value.split("::")[0]
            if _exists(path):
                taken.append((flag, value))
    return taken


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _rootdir_from_test_paths(config: pytest.Config) -> tuple[Path, Path | None] | None:
    """(rootdir, ini file) that pytest finds from the test paths alone, None if it cannot
    be asked: `determine_setup` is pytest's own rule, private, and its arguments have
    changed between versions, so only the ones it takes are passed."""
    try:
        from _pytest.config.findpaths import determine_setup
    except ImportError:
        return None
    test_paths: Sequence[object] = config.getoption("file_or_dir") or ()
    known = {
        "inifile": config.getoption("inifilename"),
        "override_ini": config.getoption("override_ini"),
        "args": [str(p) for p in test_paths],
        "rootdir_cmd_arg": config.getoption("rootdir") or None,
        "invocation_dir": config.invocation_params.dir,
    }
    try:
        parameters = inspect.signature(determine_setup).parameters
        result = determine_setup(**{k: v for k, v in known.items() if k in parameters})
    except Exception:  # a private function that changed: the caller falls back
        return None
    rootdir, inipath = result[0], result[1]
    return Path(rootdir), Path(inipath) if inipath is not None else None
