"""A ratio B/A with its interval, from samples of A and B paired by turn (`llmperf.compare`).

The method is in the docstring of `pytest_llmperf.measure.stats` ("Two sides paired by turn").
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_llmperf.measure.stats.estimate import Estimate, estimate


def pair_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Each pair's ratio b_i / a_i; a pair with a side that is not a positive number (a turn
    that measured nothing) is left out, as a round without a value is for one metric."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} samples of A against {len(b)} of B: pairs need both")
    return [float(y) / float(x) for x, y in zip(a, b, strict=True) if x > 0 and y > 0]


def paired_ratio(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Estimate:
    """B/A: the geometric mean of the pairs' ratios, with a paired t interval on their logs
    (n - 1 degrees of freedom for n pairs). One pair, or pairs whose ratios do not vary, give
    an exact estimate (no interval)."""
    ratios = pair_ratios(a, b)
    if not ratios:
        raise ValueError("no pair with a positive value on both sides")
    return estimate(ratios, "log", confidence)
