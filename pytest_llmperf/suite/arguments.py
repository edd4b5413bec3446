"""Arguments of the Python API, checked where they are given.

`llmperf.measure()`, `llmperf.evaluate_choices()`, the workloads (`SyntheticWorkload`,
`DatasetWorkload`, `LengthDistribution`, `SharedPrefixWorkload`, `TraceWorkload`,
`ConversationWorkload`), the tasks (`ChoiceTask`, `GenerationTask`),
`Arrivals`, `SLO` and grids (`Config.make`, `Grid.of`, `Grid.product`, `grid_params`)
check their arguments when they are called or made. A wrong one stops the test before any
engine starts, with an `ArgumentError` (a usage error) that names where it was given, the
call, the argument and the value:

    suites/test_mine.py: line 12: SyntheticWorkload: input_tokens=-5: must be at least 1

Made while pytest collects (a grid at module level) it ends the run with exit status 4;
made while a test runs it fails that test, with the message and no traceback.

Dataset paths (`dataset_path`): an absolute path names its file. A relative one is looked
up from two folders: the working folder and the folder of the file that gave it (the test
module). Where only one of them holds it, that file is read; where both hold a file and
they are different files, the path is ambiguous and is refused, naming both; where
neither does, the error names both places looked. `--llmperf-dataset` is not looked up
this way: it is relative to the working folder.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_llmperf.errors import ArgumentError, where

#: Frames of this package are skipped when looking for the user's line.
_OURS = ("pytest_llmperf.", "dataclasses")


def given_at() -> tuple[str, int]:
    """The file and line of the user's code that called into this package: the first
    frame outside it (a dataclass's generated `__init__` counts as its class's module)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(_OURS):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno


def _shown(path: str) -> str:
    """A file name as a message shows it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return path


def _value(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def bad(owner: str, name: str, value: object, problem: str) -> ArgumentError:
    """The error for argument `name` of `owner` (a call or class), given as `value`."""
    file, line = given_at()
    return ArgumentError(f"{where(_shown(file), line)}: {owner}: {name}={_value(value)}: {problem}")


def whole(owner: str, name: str, value: object, minimum: int | None = None) -> int:
    """A whole number (not a bool, not text), at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        least = f", at least {minimum}" if minimum is not None else ""
        raise bad(owner, name, value, f"must be a whole number{least}")
    if minimum is not None and value < minimum:
        raise bad(owner, name, value, f"must be at least {minimum}")
    return value


def number(
    owner: str,
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> float:
    """A finite number (not a bool, not text), within the bounds given."""
    if positive:
        need = "a positive number"
    elif minimum is not None and maximum is not None:
        need = f"a number from {minimum:g} to {maximum:g}"
    elif minimum is not None:
        need = f"a number of at least {minimum:g}"
    else:
        need = "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(owner, name, value, f"must be {need}")
    if (
        not math.isfinite(value)
        or (positive and value <= 0)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise bad(owner, name, value, f"must be {need} (finite)")
    return float(value)


def optional_number(owner: str, name: str, value: object, **bounds: float | bool) -> float | None:
    """None, or `number(...)` with the same bounds."""
    return None if value is None else number(owner, name, value, **bounds)  # type: ignore[arg-type]


def text(owner: str, name: str, value: object) -> str:
    """Text that is not empty."""
    if not isinstance(value, str) or not value.strip():
        raise bad(owner, name, value, "must be non-empty text")
    return value


def one_of(owner: str, name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise bad(owner, name, value, "must be one of " + ", ".join(map(repr, choices)))
    return value


def a_callable(owner: str, name: str, value: object, what: str) -> None:
    """None, or something to call (`what` says with what)."""
    if value is not None and not callable(value):
        raise bad(owner, name, value, f"must be a function {what}, or None")


def dataset_path(owner: str, name: str, value: object) -> Path:
    """The file a dataset path names, looked up as the module docstring says."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise bad(owner, name, value, "must be a file path (str or pathlib.Path)")
    path = Path(value)
    if not str(value).strip():
        raise bad(owner, name, value, "must be a file path, not empty text")
    if path.is_absolute():
        if not path.exists():
            raise bad(owner, name, value, "no such file")
        return path
    file, _ = given_at()
    here = Path.cwd() / path
    beside = Path(file).resolve().parent / path
    candidates = [here] if here.resolve() == beside.resolve() else [here, beside]
    found = [c for c in candidates if c.exists()]
    if len(found) == 2 and not os.path.samefile(found[0], found[1]):
        raise bad(
            owner,
            name,
            value,
            f"a relative path that names two different files, {here} (from the working "
            f"folder) and {beside} (beside {_shown(file)}); give an absolute path, e.g. "
            f"Path(__file__).parent / {str(path)!r}",
        )
    if not found:
        looked = " and ".join(str(c) for c in candidates)
        raise bad(owner, name, value, f"no such file (looked for {looked})")
    return found[0]
