"""Rounds of a measurement: warm-up rounds run and discarded, then measured rounds.

Each round sends every request at once through `harness.run_round`. What a round's
records are for (written, checked) is the caller's (`after_round`); how rounds are
repeated too (`repeat`: pytest-benchmark's pedantic loop, or a plain one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_llmperf.engines.base import (
    BuildsGraphs,
    Engine,
    GenerationRequest,
    ReportsClientCost,
    death_cause,
)
from pytest_llmperf.measure.harness import run_round
from pytest_llmperf.measure.metrics import RequestRecord

#: Calls `one_round` warmup_rounds + rounds times: (one_round, rounds, warmup_rounds).
Repeat = Callable[[Callable[[], None], int, int], None]


@dataclass(frozen=True)
class RoundPlan:
    """How many rounds a measurement runs: warm-up ones (discarded), then measured ones."""

    rounds: int
    warmup_rounds: int


@dataclass(frozen=True)
class Rounds:
    """What the measured rounds gave."""

    records: tuple[RequestRecord, ...]
    #: Wall seconds of each measured round.
    durations: tuple[float, ...]
    #: The client's own statistics of each measured round, where the engine keeps them.
    client_stats: tuple[dict[str, float], ...]
    #: Seconds the engine spent building decode graphs during the rounds (warm-up
    #: included: compile and capture happen in whichever round needs them); None for an
    #: engine that builds none.
    graph_build_s: float | None

    @property
    def output_tokens(self) -> int:
        """Output tokens of the successful requests."""
        return sum(r.output_tokens for r in self.records if r.error is None)


def repeat_plainly(one_round: Callable[[], None], rounds: int, warmup_rounds: int) -> None:
    for _ in range(warmup_rounds + rounds):
        one_round()


def repeat_through(
    benchmark: Any, one_round: Callable[[], None], rounds: int, warmup_rounds: int
) -> None:
    """Call `one_round` warm-up + measured times through pytest-benchmark's `benchmark`
    fixture (its pedantic mode), or in our own loop when `benchmark` is None."""
    if benchmark is None:
        repeat_plainly(one_round, rounds, warmup_rounds)
    elif benchmark.disabled:
        # pytest-benchmark is off (xdist, --benchmark-disable): its pedantic calls the
        # function once, so our loop runs the same rounds inside it. The fixture is then
        # used, and pytest-benchmark does not warn "Benchmark fixture was not used at
        # all" after every test (a warning no filter of the user's project sets off).
        benchmark.pedantic(repeat_plainly, args=(one_round, rounds, warmup_rounds))
    else:
        benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)


def run_rounds(
    engine: Engine,
    requests: Sequence[GenerationRequest],
    plan: RoundPlan,
    *,
    repeat: Repeat = repeat_plainly,
    before_measuring: Callable[[], None] = lambda: None,
    before_round: Callable[[int], None] = lambda index: None,
    after_round: Callable[[list[RequestRecord]], None] = lambda records: None,
    on_round: Callable[[int, Sequence[RequestRecord], float], None] = lambda i, r, d: None,
    keep_going: Callable[[Rounds], bool] | None = None,
    fresh: Callable[[int], Sequence[GenerationRequest]] | None = None,
) -> Rounds:
    """Run `plan`'s rounds of `requests` on `engine`.

    `before_measuring` is called just before the first measured round (telemetry covers
    the measured rounds, not the warm-up), `before_round` before each measured round with
    its index (a split load's barrier, `suite.split`); `after_round` with each measured round's
    records when the round ends, before they are kept (it may raise to stop); `on_round`
    with the round's index (from 0), its records and its duration once they are kept (a
    live status line: it must not raise).
    A round is skipped once the engine's process is gone: the caller fails the test
    after recording what was measured.

    With `keep_going` the plan's `rounds` is the most to measure: after each measured round,
    `keep_going` gets what the rounds so far gave and says whether to measure another (rounds
    until decided); the rounds then run in our own loop, not `repeat`'s, which cannot stop
    early.

    With `fresh`, round i (from 0, warm-up rounds counted) sends `fresh(i)` instead of
    `requests`, built before the round's clock starts.
    """
    kept: list[RequestRecord] = []
    durations: list[float] = []
    client: list[dict[str, float]] = []
    count = 0
    built_before = engine.graph_build_s if isinstance(engine, BuildsGraphs) else None

    def one_round() -> None:
        nonlocal count
        if death_cause(engine):
            return  # the engine's process is gone: the test fails after recording
        warmup = count < plan.warmup_rounds
        index = count - plan.warmup_rounds
        count += 1

        # Built before the barrier: a split load's shares then start sending together.
        batch = requests if fresh is None else fresh(count - 1)
        if not warmup:
            before_round(index)
        if index == 0:
            before_measuring()
        # Records are handed over when the round ends, not while it runs: a write inside
        # the loop would delay the next chunk's timestamp (and, for an in-process engine,
        # the engine itself). A run killed mid-way keeps every finished round.
        records, duration = run_round(engine, batch, index)
        if warmup:
            return
        after_round(records)
        kept.extend(records)
        durations.append(duration)
        if isinstance(engine, ReportsClientCost) and engine.last_round_stats:
            client.append(dict(engine.last_round_stats))
        on_round(index, records, duration)

    def so_far() -> Rounds:
        built = None
        if isinstance(engine, BuildsGraphs) and built_before is not None:
            built = engine.graph_build_s - built_before  # compile + capture, in whichever round
        return Rounds(tuple(kept), tuple(durations), tuple(client), built)

    if keep_going is None:
        repeat(one_round, plan.rounds, plan.warmup_rounds)
        return so_far()
    for _ in range(plan.warmup_rounds):
        one_round()
    for _ in range(plan.rounds):
        one_round()
        if death_cause(engine) or not keep_going(so_far()):
            break
    return so_far()
