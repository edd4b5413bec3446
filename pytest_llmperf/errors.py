"""Errors raised at the boundary, each saying what was wrong and where it came from."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import pytest


class LLMPerfUsageError(pytest.UsageError):  # type: ignore[misc]  # final in typing only
    """Bad input from the user: an option, a file or a line in a file.

    A subclass of `pytest.UsageError`, so that pytest prints it without a traceback
    and exits with the usage-error status.
    """


class ArgumentError(LLMPerfUsageError, ValueError):  # type: ignore[misc]
    """A bad argument to the Python API (`measure()`, a workload, a task, a grid), raised
    where it is given, before any engine starts; the message names the call, the argument
    and the value. A `ValueError` too, as these arguments' errors were before."""


def where(path: object, line: int | None = None) -> str:
    """Format a location as `path: line N` (line numbers are 1-based)."""
    return f"{path}: line {line}" if line is not None else f"{path}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean ...?)' suffix naming the closest choices, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.75)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
