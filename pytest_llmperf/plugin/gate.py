"""The gate: how a run judges its tests (error rate, drift floor, strictness) and how long a
test with `rounds="auto"` measures.

`rounds="auto"` (or `--llmperf-rounds auto`) measures `min_rounds`, then after each round
judges every bound and baseline metric of the test at that look's share of the error rate
(`measure.stats.round_alpha`: the shares of all looks sum to `alpha`, so looking after every
round keeps the false-alarm rate) and stops when all are decided, at `max_rounds`, when another
round would end past `max_seconds`, or when more rounds cannot decide (the undecided verdicts'
variance is mostly drift: `measure.stats.should_continue`). The record keeps how many rounds
the test took and why it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_llmperf.measure.stats import Continuation, Judged, round_alpha, should_continue
from pytest_llmperf.results.baseline import DEFAULT_DRIFT
from pytest_llmperf.thresholds.check import DEFAULT_ALPHA

MIN_ROUNDS = 3
MAX_ROUNDS = 10
MAX_SECONDS = 60.0

Rounds = int | Literal["auto"]


@dataclass(frozen=True)
class Gate:
    """A run's verdict policy (`--llmperf-alpha`, `--llmperf-drift`, `--llmperf-strict`,
    `--llmperf-min-rounds`, `--llmperf-max-rounds`, `--llmperf-max-seconds`)."""

    alpha: float = DEFAULT_ALPHA
    drift: float = DEFAULT_DRIFT
    strict: bool = False
    min_rounds: int = MIN_ROUNDS
    max_rounds: int = MAX_ROUNDS
    max_seconds: float = MAX_SECONDS

    def look_alpha(self, rounds: int) -> float:
        """The error rate of the look after `rounds` measured rounds of an auto test."""
        capped = min(max(rounds, self.min_rounds), self.max_rounds)
        return round_alpha(capped, self.min_rounds, self.max_rounds, self.alpha)

    def next_round(self, verdicts: Sequence[Judged], rounds: int, elapsed_s: float) -> Continuation:
        """Whether an auto test that measured `rounds` rounds in `elapsed_s` goes on."""
        return should_continue(verdicts, rounds, self.max_rounds, elapsed_s, self.max_seconds)


@dataclass(frozen=True)
class Stop:
    """How an auto test ended: after how many rounds, and why (`decided`, `max_rounds`,
    `max_seconds`, `cannot_decide`, or `fixed` for a test of a fixed number of rounds)."""

    rounds: int
    reason: str
    #: Verdicts still undecided at the end.
    undecided: int = 0
