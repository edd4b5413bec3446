"""Timing a suite's own code: `llmperf.time(fn)`, one call of `fn` per round.

A round calls the per-round `setup` (untimed; what it returns, `(args, kwargs)`, is the
call's arguments), then times one call of the function with `time.perf_counter()`. Where
this process has started CUDA (torch loaded and initialised), the device is synchronised
before the clock starts and before it stops, so that queued kernels are not counted in
the wrong round or left out. An async function (or one that returns an awaitable) runs to
completion on an event loop of the measurement's own, inside the timed span. Warm-up
rounds run the same way and are discarded. Several functions timed in turns run round by
round, in ABBA order (round k runs them in order, round k + 1 in reverse), so that a drift
of the machine lands on each function alike instead of in their ratio.

Metrics of timed code (each round's value is one sample, see `measure.samples`):
    call_s         wall seconds of one call of the timed function. Per test: the mean of
                   the measured rounds (their total seconds over their count).
    <item>_per_s   for each item the call counted (`count={"questions": 40}`, or a
                   function of the call's result): the items of all measured rounds over
                   their total seconds; each round's sample is its count over its seconds.
                   The metric must be known, built in (`questions_per_s`,
                   `output_tok_per_s`) or declared by the suite (`MetricSpec`, through the
                   `pytest_llmperf_metrics` hook).

Metrics a suite measures itself and hands over with `llmperf.record(metrics, samples=)`
are its own, declared the same way; their per-round samples are judged like these.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_llmperf.measure.samples import Samples, collect

#: The engine name that records and thresholds files give timed code: its bounds live
#: in `<thresholds_dir>/<hardware>/own.yaml`.
OWN_ENGINE = "own"

#: What a round's setup may return: the call's positional and keyword arguments.
CallArgs = tuple[Sequence[Any], Mapping[str, Any]]
Counter = Mapping[str, float] | Callable[[Any], Mapping[str, float]]


@dataclass(frozen=True)
class TimedRound:
    """One measured call: its wall seconds and the items it counted."""

    seconds: float
    counts: Mapping[str, float] = field(default_factory=dict)


def rate_name(item: str) -> str:
    """The metric of a counted item: `questions` -> `questions_per_s`."""
    return f"{item}_per_s"


def timed_metrics(rounds: Sequence[TimedRound]) -> dict[str, float | None]:
    """The test's metrics over its measured rounds (see the module docstring)."""
    if not rounds:
        return {}
    total = math.fsum(r.seconds for r in rounds)
    metrics: dict[str, float | None] = {"call_s": total / len(rounds)}
    for item in dict.fromkeys(k for r in rounds for k in r.counts):
        counted = math.fsum(r.counts.get(item, 0.0) for r in rounds)
        metrics[rate_name(item)] = counted / total if total > 0 else None
    return metrics


def timed_samples(rounds: Sequence[TimedRound]) -> Samples:
    """Each metric's value in each measured round."""
    return collect([timed_metrics([r]) for r in rounds])


def count_of(counter: Counter | None, result: Any) -> dict[str, float]:
    """The items a call counted: a fixed mapping, or the counter applied to its result."""
    if counter is None:
        return {}
    counts = counter(result) if callable(counter) else counter
    if not isinstance(counts, Mapping):
        raise TypeError(f"count: expected a mapping of item -> number, got {counts!r}")
    checked: dict[str, float] = {}
    for item, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise TypeError(f"count: {item!r}: expected a number of items, got {value!r}")
        checked[str(item)] = float(value)
    return checked


def _cuda_sync() -> None:
    """Wait for queued CUDA work, where this process has started CUDA (never starts it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class Timer:
    """Calls and times functions for one measurement; owns the event loop of async ones."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def call(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        setup: Callable[[], CallArgs | None] | None,
    ) -> tuple[float, Any]:
        """One round: setup (untimed), then the timed call. Returns (seconds, result)."""
        if setup is not None:
            given = setup()
            if given is not None:
                args, kwargs = _call_args(given)
        _cuda_sync()
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = self._await(result)
        _cuda_sync()
        return time.perf_counter() - started, result

    def _await(self, awaitable: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None


def _call_args(given: object) -> CallArgs:
    ok = (
        isinstance(given, tuple)
        and len(given) == 2
        and isinstance(given[0], (tuple, list))
        and isinstance(given[1], Mapping)
    )
    if not ok:
        raise TypeError(f"setup: expected None or (args, kwargs), got {given!r}")
    return given  # type: ignore[return-value]


def turn_order(labels: Sequence[str], index: int) -> list[str]:
    """The order of round `index` (from 0) of functions timed in turns: ABBA."""
    return list(labels) if index % 2 == 0 else list(reversed(labels))
