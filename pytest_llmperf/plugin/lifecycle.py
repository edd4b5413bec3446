"""How a run ends when it is told to, and how a test is held to its time bound.

SIGTERM: pytest leaves it at the default, which ends the process at once, with no
summary and no cleanup. While the run is configured it is turned into the same
interrupt as Ctrl-C, so both end the run within seconds the same way: the test stops,
`pytest_sessionfinish` stops the engine and its servers and writes the summary of what
finished (marked `interrupted`).

The per-test bound (`--llmperf-test-timeout`, marker `llmperf_timeout(seconds)`): a
watchdog thread that, past the bound, ends the engine's processes (the isolated engine's
child, a managed server). The test, blocked on the engine, then sees the engine die and
fails with the reason; its unfinished requests are recorded as failures. A Python
exception alone would not do: a native call that hangs never returns to see it. So
while tests are bounded, engines that run in process are run isolated.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

from pytest_llmperf.errors import LLMPerfUsageError

MARKER = "llmperf_timeout"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


class TermAsInterrupt:
    """SIGTERM raises KeyboardInterrupt in the main thread while installed."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        # Only over the default action, and only where Python can install handlers.
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        self._previous = signal.signal(signal.SIGTERM, _interrupt)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def bound_of(item: pytest.Item, default_s: float | None) -> float | None:
    """The test's bound in seconds: its `llmperf_timeout` marker, else the option's."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return default_s
    value = marker.args[0] if marker.args else marker.kwargs.get("seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise LLMPerfUsageError(
            f"{item.nodeid}: marker {MARKER}({value!r}): the bound must be a positive "
            "number of seconds"
        )
    return float(value)


@contextmanager
def watchdog(seconds: float | None, on_expiry: Callable[[], None]) -> Iterator[None]:
    """Call `on_expiry` from a thread if the block is still running after `seconds`."""
    if seconds is None:
        yield
        return
    timer = threading.Timer(seconds, on_expiry)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
