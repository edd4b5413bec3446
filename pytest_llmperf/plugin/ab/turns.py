"""The turns of an A/B test: each side's engine loaded (both at once, or swapped for each
turn), warmed up, then measured in the order of `measure.turns.turn_order`.

Both engines stay loaded unless `swap=True` or, with `swap=None`, the run's GPUs lack the free
memory for the second after the first loaded (NVML: less free on a leased GPU than the first
engine took there, plus a tenth). A side given as a `Config` loads through the session (the
engine the run keeps for that configuration when it is A; a second instance beside it when it
is B); a side given as an `Engine` instance is started here and closed when the test ends.
With the engines swapped, a turn that follows the other side's loads its side's engine anew
(the other closed first: even an A/A pair's twin is a fresh load) and warms it up; every turn
measures a block of rounds. A given engine starts once, so it cannot be swapped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_llmperf.engines.base import (
    Engine,
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    death_cause,
)
from pytest_llmperf.hardware.gpus import gpu_memory_free
from pytest_llmperf.measure.harness import run_round
from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.measure.rounds import Rounds
from pytest_llmperf.measure.server.scrape import Sample, scraper_for
from pytest_llmperf.measure.turns import Mode, Side, turn_metrics, turn_order
from pytest_llmperf.plugin.pipeline import build_requests, round_builder
from pytest_llmperf.suite.workload import Workload

if TYPE_CHECKING:
    from pytest_llmperf.plugin.session import LLMPerfSession

#: After each pair of turns: the pairs measured so far and seconds spent measuring them;
#: False stops the turns (rounds until decided).
KeepGoing = Callable[[int, float], bool]
#: Gets each measured round's side and records (writes them; may raise to stop).
AfterRound = Callable[[Side, list[RequestRecord]], None]


@dataclass
class SideState:
    """One side of an A/B test: what it runs and what its turns measured."""

    side: Side
    #: The grid configuration's name (None: an `Engine` instance).
    config_name: str | None
    #: The engine configuration of a side given as a `Config` (None: an `Engine` instance).
    engine_config: EngineConfig | None
    #: The workload as this side runs it (a `Config`'s workload settings applied).
    workload: Workload | None = None
    gpu_count: int = 0
    #: An engine the test gave (started and closed here).
    given: Engine | None = None
    engine: Engine | None = None
    info: EngineInfo | None = None
    #: Seconds each load of this side took (None: the session's engine, already loaded).
    loads: list[float | None] = field(default_factory=list)
    #: Whether this test closes `engine` when done (a second instance, or a given engine).
    owned: bool = False
    requests: list[GenerationRequest] = field(default_factory=list)
    #: Each round's own requests, for a workload fresh every round (`pipeline.round_builder`).
    fresh: Callable[[int], list[GenerationRequest]] | None = None
    #: Rounds this side has sent, warm-up included: the next fresh round's index.
    sent: int = 0
    records: list[RequestRecord] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    #: Each turn's flat metrics, over that turn's rounds.
    turns: list[dict[str, Any]] = field(default_factory=list)
    #: The reads of its server's metrics during its measured turns, in order (None: no
    #: server metrics read: not a server engine, or `--llmperf-metrics-interval 0`).
    server_samples: list[Sample] | None = None

    @property
    def name(self) -> str:
        """The engine's registry name."""
        if self.engine_config is not None:
            return self.engine_config.engine
        assert self.given is not None
        return type(self.given).name

    def rounds(self) -> Rounds:
        return Rounds(tuple(self.records), tuple(self.durations), (), None)


class Turns:
    """Runs an A/B test's turns on the session's engines; `close` frees what it started."""

    def __init__(
        self,
        session: LLMPerfSession,
        a: SideState,
        b: SideState,
        workload: Workload,
        *,
        warmup_rounds: int,
        swap: bool | None,
        block_rounds: int,
    ) -> None:
        self._session, self.workload = session, workload
        self.sides = {"a": a, "b": b}
        self.warmup_rounds, self._swap, self.block_rounds = warmup_rounds, swap, block_rounds
        self.mode: Mode = "blocks" if swap else "interleaved"
        self.pairs = 0
        self.seconds = 0.0
        self.dead: str | None = None

    def run(self, most_pairs: int, after_round: AfterRound, keep_going: KeepGoing) -> None:
        """Load, warm up and measure up to `most_pairs` pairs of turns."""
        a, b = self.sides["a"], self.sides["b"]
        if self.mode == "interleaved":
            self._load(a)
            given = a.given is not None or b.given is not None  # started once, never swapped
            if self._swap is None and not given and not self._second_fits():
                self.mode = "blocks"
                self._warm_up(a)  # A's first turn uses the engine just loaded
            else:
                self._load(b)
                for side in (a, b):
                    self._warm_up(side)
        for order in turn_order(most_pairs):
            for name in order:
                self._turn(self.sides[name], after_round)
                if self.dead:
                    return
            self.pairs += 1
            if not keep_going(self.pairs, self.seconds):
                return

    def close(self) -> None:
        """Close the engines this test started (the session keeps its own)."""
        for side in self.sides.values():
            self._unload(side)

    def _turn(self, side: SideState, after_round: AfterRound) -> None:
        rounds = 1
        if self.mode == "blocks":
            if side.engine is None:  # ABBA: a side's second turn in a row keeps its engine
                self._unload(self.sides["b" if side.side == "a" else "a"])
                self._session.close_engine()  # a fresh load, even of an A/A pair's twin
                self._load(side)
                self._warm_up(side)
            rounds = self.block_rounds
        assert side.engine is not None
        records: list[RequestRecord] = []
        durations: list[float] = []
        # Each side's own server, read during its own turns only: the other side's turns
        # between them leave a server of its own idle (its counters' deltas stay the side's).
        scraper = scraper_for(side.engine, self._session.settings.metrics_interval_s)
        if scraper is not None:
            scraper.start()
        try:
            for _ in range(rounds):
                if cause := death_cause(side.engine):
                    self.dead = f"engine of side {side.side.upper()} died: {cause}"
                    break
                index = len(side.durations)
                got, duration = run_round(side.engine, self._next_batch(side), index)
                after_round(side.side, got)
                side.records.extend(got)
                side.durations.append(duration)
                records.extend(got)
                durations.append(duration)
                self.seconds += duration
        finally:
            if scraper is not None:
                side.server_samples = [*(side.server_samples or ()), *scraper.stop().samples]
        if durations:
            side.turns.append(turn_metrics(records, durations))

    def _load(self, side: SideState) -> None:
        session = self._session
        if side.given is not None:
            started = time.perf_counter()
            side.info = side.given.start()
            side.engine, side.owned = side.given, True
            side.loads.append(time.perf_counter() - started)
        elif side.side == "a" or self.mode == "blocks":
            assert side.engine_config is not None
            side.engine, side.info, load_s = session.engine_for(side.engine_config, side.gpu_count)
            side.loads.append(load_s)
        else:  # B beside A: a second instance, on A's GPUs
            assert side.engine_config is not None
            config = side.engine_config
            if session.lease is not None:
                config = replace(config, gpus=session.lease.gpus)
            started = time.perf_counter()
            engine = session.new_engine(config)
            side.engine, side.owned = engine, True
            side.info = engine.start()
            side.loads.append(time.perf_counter() - started)
        workload = side.workload or self.workload
        side.requests = build_requests(side.engine, workload, session.settings.limit, None)
        side.fresh = round_builder(side.engine, workload, session.settings.limit, None)

    def _next_batch(self, side: SideState) -> list[GenerationRequest]:
        """The side's next round: its requests, or the next fresh ones (both sides get the
        same sequence, each round's once)."""
        batch = side.requests if side.fresh is None else side.fresh(side.sent)
        side.sent += 1
        return batch

    def _unload(self, side: SideState) -> None:
        engine, side.engine = side.engine, None
        if engine is not None and side.owned:
            engine.close()
        side.owned = False

    def _warm_up(self, side: SideState) -> None:
        assert side.engine is not None
        for _ in range(self.warmup_rounds):
            run_round(side.engine, self._next_batch(side), -1)

    def _second_fits(self) -> bool:
        """Whether every leased GPU has the free memory the first engine took there, plus a
        tenth; True without GPUs or NVML (a CPU run keeps both)."""
        held, took = self._session.lease, self._session.engine_memory
        if held is None or not took:
            return True
        free = gpu_memory_free(held.physical)
        if free is None:
            return True
        return all(free[i] >= took.get(i, 0) * 1.1 for i in held.physical)


def side_summary(side: SideState) -> dict[str, Any]:
    """What the record keeps of a side (`TestRecord.ab`)."""
    info = side.info
    return {
        "config": side.config_name,
        "engine": side.name,
        "engine_config": side.engine_config.describe() if side.engine_config else None,
        "given": type(side.given).__qualname__ if side.given is not None else None,
        "engine_info": None
        if info is None
        else {
            "model": info.model,
            "device": info.device,
            "dtype": info.dtype,
            # An isolated engine's interpreter and package versions (engines.isolated).
            "interpreter": info.details.get("interpreter"),
        },
        "loads_s": list(side.loads),
        "rounds": len(side.durations),
    }


def all_records(sides: Sequence[SideState]) -> list[RequestRecord]:
    return [r for side in sides for r in side.records]
