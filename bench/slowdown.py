"""A measuring instrument: the hf engine slowed by a known fraction, to measure the gate.

Loaded as a pytest plugin (`-p bench.slowdown`, with the project root on the path) in the
runs of `bench/gate_power.py`. With `LLMPERF_SLOWDOWN=f` (0 <= f < 1), every chunk the hf
engine yields reaches the harness later by `gap * f / (1 - f)`, where `gap` is the time the
engine took to produce it since the previous chunk (or since the stream began): every
interval the harness measures stretches by `1 / (1 - f)`, so throughput falls by the
fraction `f` and TTFT, TPOT and end-to-end latency rise by the same factor. The engine
itself is not edited: its `stream` is wrapped when the plugin is configured, in this
process only (the hf engine runs in the test process unless isolated). Nothing happens
with `LLMPERF_SLOWDOWN` unset or 0.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

ENV = "LLMPERF_SLOWDOWN"


def slowdown_fraction() -> float:
    """`LLMPERF_SLOWDOWN` as a fraction in [0, 1); a usage error otherwise."""
    text = os.environ.get(ENV, "0") or "0"
    try:
        fraction = float(text)
    except ValueError:
        raise pytest.UsageError(f"{ENV}={text!r}: expected a fraction in [0, 1)") from None
    if not 0 <= fraction < 1:
        raise pytest.UsageError(f"{ENV}={text!r}: expected a fraction in [0, 1)")
    return fraction


def slowed(stream: Callable[..., Iterator[Any]], fraction: float) -> Callable[..., Iterator[Any]]:
    """`stream` whose chunks each arrive `gap * fraction / (1 - fraction)` later."""
    stretch = fraction / (1 - fraction)

    @functools.wraps(stream)
    def wrapper(self: Any, requests: Sequence[Any]) -> Iterator[Any]:
        previous = time.perf_counter()
        for chunk in stream(self, requests):
            produced = time.perf_counter()
            # Sleep past the stretched time: time.sleep may wake early by a few microseconds.
            deadline = produced + (produced - previous) * stretch
            while (left := deadline - time.perf_counter()) > 0:
                time.sleep(left)
            previous = time.perf_counter()
            yield chunk

    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    fraction = slowdown_fraction()
    if fraction == 0:
        return
    from pytest_llmperf.engines.hf.engine import HFEngine

    HFEngine.stream = slowed(HFEngine.stream, fraction)  # type: ignore[method-assign]
