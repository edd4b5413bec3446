"""Several metrics judged in one test: Holm's step-down correction, so that a test with ten
metrics does not false-alarm ten times as often. Why Holm, and why `met` / `ok` need no
correction, is in the docstring of `pytest_llmperf.measure.stats`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from pytest_llmperf.measure.stats.estimate import check_alpha


class Judged(Protocol):
    """What the sequential rule and the correction read from a verdict of either kind."""

    @property
    def p_value(self) -> float: ...

    @property
    def decided(self) -> bool: ...

    @property
    def reducible_share(self) -> float: ...


class Correctable(Judged, Protocol):
    def corrected(self: _V, p_adjusted: float, alpha: float) -> _V: ...


_V = TypeVar("_V", bound=Correctable)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values, in the order given: the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting where the adjusted p-value is
    <= alpha is Holm's step-down procedure at family-wise error alpha."""
    for p in p_values:
        if not 0 <= p <= 1:
            raise ValueError(f"p-value {p} is not in [0, 1]")
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def correct(verdicts: Sequence[_V], alpha: float) -> list[_V]:
    """The verdicts of one test's metrics (all judged at `alpha`), corrected by Holm over
    their one-sided p-values: a metric is missed / regressed only when its adjusted p-value
    is <= alpha, so the chance that any metric of an unchanged test fails is <= alpha."""
    check_alpha(alpha)
    adjusted = holm_adjust([v.p_value for v in verdicts])
    return [v.corrected(p, alpha) for v, p in zip(verdicts, adjusted, strict=True)]
