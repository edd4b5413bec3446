"""A measuring instrument: the hf engine slowed by a known fraction, to measure the gate.

Loaded as a pytest plugin (`-p bench.slowdown`, with the project root on the path), or
applied per trial by `bench/gate_trials.py` (`slowed`). With `LLMPERF_SLOWDOWN=f`
(0 <= f < 1), the chunks the hf engine yields reach the harness on a stretched clock: a
chunk is released when the time since the stream began reaches `1 / (1 - f)` times the time
the engine (and the harness between chunks) took to produce everything up to it, the
instrument's own waits left out. Every interval the harness measures stretches by
`1 / (1 - f)`, so throughput falls by the fraction `f` and TTFT, TPOT and end-to-end latency
rise by the same factor. The engine itself is not edited: its `stream` is wrapped when the
plugin is configured, in this process only (the hf engine runs in the test process unless
isolated). Nothing happens with `LLMPERF_SLOWDOWN` unset or 0.

Why a clock rather than a wait after each chunk (the first version): on the tiny model chunks
come about 1 ms apart, and 8 at once from a batched step; every wait cost a wake-up, and the
engine's next step ran slower after one, so a nominal 10 / 20 / 30% slowed
`test_decode_throughput[batch8]` by 36 / 42 / 51% and the single-request test by
23 / 31 / 43% (the 2-core VM, idle; on the clock: 12 / 21 / 33% and 11 / 21 / 33%). On the
clock a late wake-up is paid back by the next chunk's shorter wait, and the chunks of one
step, produced together, are released together after one wait. Each wait sleeps until
`SPIN_S` before its end and spins the rest, so that a sleep's late wake-up seldom adds to it.
`bench/gate_power.py` measures the slowdown each arm got beside the nominal one.
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


#: The last part of each wait, spun rather than slept (seconds).
SPIN_S = 0.0005


def wait_until(deadline: float) -> None:
    """Return at `deadline` (`time.perf_counter()`): sleep, then spin the last `SPIN_S`."""
    if (left := deadline - time.perf_counter() - SPIN_S) > 0:
        time.sleep(left)
    while time.perf_counter() < deadline:
        pass


def slowed(stream: Callable[..., Iterator[Any]], fraction: float) -> Callable[..., Iterator[Any]]:
    """`stream` on a clock stretched by `1 / (1 - fraction)` (the module docstring)."""
    stretch = 1 / (1 - fraction)

    @functools.wraps(stream)
    def wrapper(self: Any, requests: Sequence[Any]) -> Iterator[Any]:
        started = previous = time.perf_counter()
        working = 0.0  # the engine's and the harness's time so far, the waits left out
        for chunk in stream(self, requests):
            produced = time.perf_counter()
            working += produced - previous
            wait_until(started + working * stretch)
            previous = time.perf_counter()
            yield chunk

    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    fraction = slowdown_fraction()
    if fraction == 0:
        return
    from pytest_llmperf.engines.hf.engine import HFEngine

    HFEngine.stream = slowed(HFEngine.stream, fraction)  # type: ignore[method-assign]
