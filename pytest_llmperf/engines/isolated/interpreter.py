"""Another Python interpreter for an isolated engine: checked before it runs, recorded after.

An in-process engine's `python` setting (`engines.spec.PYTHON`) names the interpreter its
child runs under, typically a virtual environment's `bin/python` that holds another release
of the engine's library: transformers before and after an upgrade are then two
configurations of one run. The child imports this checkout's `pytest_llmperf` whatever the
interpreter has installed: `child_env` puts the package's root first on `PYTHONPATH`.

`check_interpreter` refuses, as a usage error naming where the setting was written, an
interpreter that is not there, is not executable, or cannot import `pytest_llmperf` or the
engine's library (`EngineSpec.packages`). It asks the interpreter itself, in a short child
process, until it is found fit: then once per interpreter and engine in a run.

`environment()` runs in the engine's child: the interpreter and the versions of the
packages that decide an engine's speed (the list run.json records for the run's own
environment), kept in the test's record (`engine_info.details["interpreter"]`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.hardware.environment import package_versions

CHECK_TIMEOUT_S = 120.0
#: The probe's answer line starts with this, whatever the imports printed before it.
_MARK = "LLMPERF-INTERPRETER "

_PROBE = f"""
import importlib, json, sys, traceback
try:
    import pytest_llmperf
except BaseException:
    print({_MARK!r} + json.dumps({{"failed": "pytest_llmperf", "error": traceback.format_exc()}}))
    raise SystemExit(0)
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException:
        print({_MARK!r} + json.dumps({{"failed": name, "error": traceback.format_exc()}}))
        raise SystemExit(0)
print({_MARK!r} + json.dumps({{"failed": None, "package": pytest_llmperf.__file__}}))
"""

#: Interpreters found fit this run, with the engine packages they were asked for.
_checked: set[tuple[str, tuple[str, ...]]] = set()


def package_root() -> Path:
    """The folder that holds this checkout's `pytest_llmperf` package."""
    return Path(__file__).resolve().parents[3]


def child_env(python: str, visible: str | None = None) -> dict[str, str]:
    """The environment of a child run by `python`: this checkout's package first on its
    path (a virtual environment need not have it installed)."""
    env = dict(os.environ)
    paths = [str(package_root()), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return env


def check_interpreter(python: str, packages: Sequence[str], here: str) -> None:
    """Raise a usage error, naming `here`, for an interpreter the engine cannot run under."""
    key = (python, tuple(packages))
    if key in _checked:
        return
    problem = _problem(python, packages)
    if problem is not None:  # not kept: a fixed environment is asked again
        raise LLMPerfUsageError(f"{here}: setting 'python': {python}: {problem}")
    _checked.add(key)


def _problem(python: str, packages: Sequence[str]) -> str | None:
    path = Path(python)
    if not path.is_absolute():
        return "must be an absolute path (a virtual environment's bin/python)"
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a folder, not an interpreter (give its bin/python)"
    if not os.access(path, os.X_OK):
        return "is not executable"
    argv = [python, "-c", _PROBE, *packages]
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            env=child_env(python),
            check=False,
        )
    except OSError as exc:
        return f"cannot run it ({exc})"
    except subprocess.TimeoutExpired:
        return f"did not answer within {CHECK_TIMEOUT_S:.0f} s"
    answer = [line for line in out.stdout.splitlines() if line.startswith(_MARK)]
    if not answer:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"is not a Python that can run the engine (exit status {out.returncode}: {tail})"
    result: dict[str, Any] = json.loads(answer[-1][len(_MARK) :])
    if result["failed"] is None:
        return None
    error = [line for line in result["error"].strip().splitlines() if line.strip()][-1]
    if result["failed"] == "pytest_llmperf":
        return f"cannot import pytest_llmperf from {package_root()} ({error})"
    return (
        f"cannot import {result['failed']!r}, which the engine needs ({error}); "
        "install it in that environment"
    )


def environment() -> dict[str, Any]:
    """This interpreter and its packages' versions, the ones run.json records for the run
    (`hardware.environment`); run in the engine's child."""
    return {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "prefix": sys.prefix,
        "pytest_llmperf": str(Path(__file__).resolve().parents[2]),
        "packages": package_versions(),
    }
