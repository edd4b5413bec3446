"""The `llmperf` fixture's methods for the suite's own code: `time`, `time_turns`,
`compare_functions` and `record` (the pipeline behind them is `plugin.own.timed`, and
`plugin.own.ab` for an A/B test; the metrics, `measure.timed` and `measure.turns`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pytest

from pytest_llmperf.measure.timed import CallArgs, Counter
from pytest_llmperf.plugin.arguments import check_time
from pytest_llmperf.plugin.own.ab import FunctionComparison, compare_functions
from pytest_llmperf.plugin.own.timed import (
    Place,
    Timed,
    Timing,
    check_recorded,
    record_metrics,
    time_functions,
)
from pytest_llmperf.plugin.pipeline import gpu_record
from pytest_llmperf.results.record import TestRecord

if TYPE_CHECKING:
    from pytest_llmperf.plugin.session import LLMPerfSession


class TimingMethods:
    """What `llmperf` offers for your own code; `LLMPerfFixture` supplies the rest."""

    _session: LLMPerfSession
    _request: pytest.FixtureRequest

    def _claim(self, call: str, label: str | None) -> str:
        raise NotImplementedError

    def _physical(self) -> tuple[int, ...]:
        raise NotImplementedError

    _benchmark_used: bool

    def _record(self, record: TestRecord, benchmark_too: bool = True) -> None:
        raise NotImplementedError

    def _write(self, record: TestRecord) -> None:
        """Append the record; pytest-benchmark gets its metrics when it timed the rounds (a
        test whose code it did not time must not ask for its fixture: it would warn)."""
        self._record(record, benchmark_too=self._benchmark_used)

    def _repeat(self, one_round: Callable[[], None], rounds: int, warmup_rounds: int) -> None:
        raise NotImplementedError

    def time(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        rounds: int | Literal["auto"] = 5,
        warmup_rounds: int = 1,
        setup: Callable[[], CallArgs | None] | None = None,
        count: Counter | None = None,
        label: str | None = None,
        telemetry: bool = True,
    ) -> Timing:
        """Time your own code: `fn(*args, **kwargs)` once per round (pytest-benchmark's
        `pedantic`), warm-up rounds discarded, as `measure.timed` defines; `setup` runs
        before each round, untimed, and may return the call's `(args, kwargs)`; `count`
        (items -> number, or a function of the result) gives `<item>_per_s`. Recorded,
        judged and failed like `measure` (thresholds of engine `own`); an exception in
        `fn` fails the test with it. Returns the metrics and the last call's result."""
        check_time("time()", {"fn": fn}, kwargs=kwargs, rounds=rounds,
                   warmup_rounds=warmup_rounds, setup=setup, count=count, label=label)  # fmt: skip
        place = self._own_place()
        key = self._claim("time()", label)
        timed = {key: Timed(fn, args, kwargs, setup, count)}
        return time_functions(place, timed, rounds, warmup_rounds, telemetry)[key]

    def time_turns(
        self,
        functions: Mapping[str, Callable[..., Any]],
        *,
        rounds: int | Literal["auto"] = 5,
        warmup_rounds: int = 1,
        setup: Callable[[], CallArgs | None] | None = None,
        count: Counter | None = None,
    ) -> dict[str, Timing]:
        """Time several functions (label -> function) in turns, round by round in ABBA
        order, so that drift does not land in their ratio; each is recorded as
        `test@label`, like `time(fn, label=...)`."""
        check_time("time_turns()", functions, kwargs=None, rounds=rounds,
                   warmup_rounds=warmup_rounds, setup=setup, count=count, label=None)  # fmt: skip
        place = self._own_place()
        keys = {label: self._claim("time_turns()", label) for label in functions}
        timed = {keys[label]: Timed(fn, (), None, setup, count) for label, fn in functions.items()}
        timings = time_functions(place, timed, rounds, warmup_rounds, telemetry=False)
        return {label: timings[key] for label, key in keys.items()}

    def compare_functions(
        self,
        a: Callable[..., Any],
        b: Callable[..., Any],
        /,
        *,
        rounds: int | Literal["auto"] = 5,
        warmup_rounds: int = 1,
        setup: Callable[[], CallArgs | None] | None = None,
        count: Counter | None = None,
        label: str | None = None,
    ) -> FunctionComparison:
        """Your own code as an A/B test, like `llmperf.compare`'s: `a` and `b` called in
        turns round by round (ABBA), each round's two calls a pair; one record with each
        side's metrics (`a.call_s`, `b.<item>_per_s`), B/A of each with its paired
        interval (`ratio.call_s`) and `speedup` (B/A of calls per second: A's seconds over
        B's), judged by the thresholds of engine `own` (`speedup: {min: 2}`). `setup` and
        `count` apply to both; `rounds` counts pairs. Returns each side's timing (with its
        last call's result) and the ratios."""
        check_time("compare_functions()", {"a": a, "b": b}, kwargs=None, rounds=rounds,
                   warmup_rounds=warmup_rounds, setup=setup, count=count, label=label)  # fmt: skip
        place = self._own_place()
        key = self._claim("compare_functions()", label)
        sides = (Timed(a, (), None, setup, count), Timed(b, (), None, setup, count))
        return compare_functions(place, key, sides, rounds, warmup_rounds)

    def record(
        self,
        metrics: Mapping[str, float | None] | None = None,
        *,
        samples: Mapping[str, Sequence[float | None]] | None = None,
        label: str | None = None,
    ) -> Timing:
        """Record metrics you measured yourself: headline values, and one sample per round
        (a metric given only as samples gets their mean). Names must be built in or
        declared (`pytest_llmperf_metrics`); judged and failed like `measure`."""
        flat, per_round = check_recorded(metrics or {}, samples)
        place = self._own_place()
        return record_metrics(place, self._claim("record()", label), flat, per_round)

    def _own_place(self) -> Place:
        """Where timed code runs: the test's GPUs (`llmperf_gpus`), else the engine's."""
        session = self._session
        if session.settings.dry_run:
            pytest.skip("dry run: your code was not timed")
        session.ensure_metadata()
        held = session.test_lease
        physical = held.physical if held is not None else self._physical()
        device = f"cuda:{held.gpus[0]}" if held is not None and held.gpus else "cpu"
        return Place(
            session, self._request.node.nodeid, physical, gpu_record(session, held),
            device, self._write, self._repeat,
        )  # fmt: skip
