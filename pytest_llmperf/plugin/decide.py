"""Rounds until decided: the look after each measured round of a `rounds="auto"` test.

After `Gate.min_rounds` measured rounds, and after every round from then on, the test's bounds
and baseline metrics are judged on the rounds so far at that look's share of the error rate
(`Gate.look_alpha`), and the test measures another round only while some verdict is still
undecided and more rounds can decide it within the round and time budget (`Gate.next_round`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_llmperf.measure.rounds import Rounds
from pytest_llmperf.measure.stats import Continuation
from pytest_llmperf.plugin.gate import Stop
from pytest_llmperf.plugin.pipeline import MoreMetrics, Verdicts, aggregate, judge, round_samples

if TYPE_CHECKING:
    from pytest_llmperf.plugin.session import LLMPerfSession


class RoundsUntilDecided:
    """`run_rounds`' `keep_going` for one auto test; `undecided` names what the last look
    left undecided (for the live status line)."""

    def __init__(self, session: LLMPerfSession, key: str, engine: str, more: MoreMetrics) -> None:
        self._session, self._key, self._engine, self._more = session, key, engine, more
        self._last: Continuation | None = None
        self.undecided: list[str] = []

    def __call__(self, so_far: Rounds) -> bool:
        gate = self._session.settings.gate
        rounds = len(so_far.durations)
        if rounds < gate.min_rounds:
            return True
        metrics = aggregate(so_far, {}, self._more, (), {})
        samples = round_samples(so_far, self._more)
        alpha = gate.look_alpha(rounds)
        verdicts = judge(self._session, self._key, self._engine, metrics, samples, alpha)
        self._last = gate.next_round(verdicts.looks(), rounds, sum(so_far.durations))
        self.undecided[:] = verdicts.undecided()
        return self._last.more

    def stop(self, rounds: int, verdicts: Verdicts) -> Stop:
        """How the test's rounds ended, for its record."""
        reason: str | None = self._last.reason if self._last is not None else None
        if reason is None:  # the loop ended first: the budget of rounds, or a dead engine
            reason = "max_rounds" if rounds >= self._session.settings.gate.max_rounds else "ended"
        return Stop(rounds, reason, len(verdicts.undecided()))
