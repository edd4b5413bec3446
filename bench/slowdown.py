"""A measuring instrument: the hf engine slowed by a known fraction, to measure the gate.

Loaded as a pytest plugin (`-p bench.slowdown`, with the project root on the path), or
applied per trial by `bench/gate_trials.py` (`slowed`). With `LLMPERF_SLOWDOWN=f`
(0 <= f < 1), every time the harness takes of a stream is stretched by `1 / (1 - f)` about
the stream's start, so throughput falls by the fraction `f` and TTFT, TPOT and end-to-end
latency rise by the same factor. The engine itself is not edited: its `stream` is wrapped,
in this process only (the hf engine runs in the test process unless isolated). Nothing
happens with `LLMPERF_SLOWDOWN` unset or 0.

How. The stream runs as it would unslowed. Each chunk it yields at time `t` carries
`received_at = s + (t - s) / (1 - f)`, `s` the stream's start: the engine contract's stamp for
when a chunk reached the client (`engines.base.StreamChunk`), which the harness takes instead
of its own receipt time (`measure.harness`). When the stream ends at `e`, the wrapper waits
until `s + (e - s) / (1 - f)`, so the round's duration, and with it throughput and the time
budget of rounds until decided, stretches too. A chunk that already carries `received_at` (an
engine that stamps its own) has that stamp stretched instead.

Why not real waits during the stream (the first versions): the engine's timing then changes
with the waits, and not by the factor asked. Waiting after each chunk the harness receives
slowed the old eager engine by 36 / 42 / 51% for a nominal 10 / 20 / 30% on batch8 (each wait
cost a wake-up and a slower next step), and falls short on the threaded engine, whose tokens
queue up ahead of the harness (80% nominal measured 18% on batch8); waiting inside `generate`
after each forward pass let torch's worker threads go idle and the next step ran 18% slower
(30% nominal measured 41% on the single-request test); handing queued tokens over on a
stretched clock left `generate` 7% slower while the harness's thread woke for each. With the
stamps nothing waits until the stream has ended, so the engine runs as unslowed and the
harness sees its own measurement of it, stretched. The wait at the end (10-40 ms a round
here) spins: with a sleep there the slowed arms measured 2-7 points more, within this VM's
noise but all one way, as if the next round started slower after it. Measured on the 2-core
VM in one session taking turns (6 trials each, 5 rounds; trials of one arm moved by 10-15%
within the session): nominal 10 / 20 / 30% gave 15 / 25 / 30% on batch8 and 11 / 21 / 34% on
the single-request test, a control of 0.01% gave 0%. Not modelled: a slower engine would leave
the CPU idle longer; here the harness's own time per chunk (microseconds, against about a
millisecond a token) is stretched too. `bench/gate_power.py` measures the slowdown each arm got
beside the nominal one.
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
    """`stream` whose times, as the harness takes them, stretch by `1 / (1 - fraction)`
    about its start (the module docstring)."""
    stretch = 1 / (1 - fraction)

    @functools.wraps(stream)
    def wrapper(self: Any, requests: Sequence[Any]) -> Iterator[Any]:
        started = time.perf_counter()

        def stretched(moment: float) -> float:
            return started + (moment - started) * stretch

        try:
            for chunk in stream(self, requests):
                at = chunk.received_at if chunk.received_at is not None else time.perf_counter()
                # The chunk is this stream's own, just made: stamped in place (0.1 us; a
                # `dataclasses.replace` costs 3 us, a few ms a round of 512 chunks).
                object.__setattr__(chunk, "received_at", stretched(at))
                yield chunk
        finally:
            # The round ends when a slower engine's stream would have: the harness times
            # the round (throughput, the time budget) on its own clock. Spun, not slept
            # (the module docstring says why).
            end = stretched(time.perf_counter())
            while time.perf_counter() < end:
                pass

    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    fraction = slowdown_fraction()
    if fraction == 0:
        return
    from pytest_llmperf.engines.hf.engine import HFEngine

    HFEngine.stream = slowed(HFEngine.stream, fraction)  # type: ignore[method-assign]
