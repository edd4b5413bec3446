"""Judging a metric against a bound (a threshold's `min` or `max`): missed, met or
inconclusive. The method and its error rates are in `pytest_llmperf.measure.stats`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_llmperf.measure.metrics import Direction
from pytest_llmperf.measure.stats.distributions import t_cdf, t_ppf, t_sf
from pytest_llmperf.measure.stats.estimate import (
    Estimate,
    Scale,
    Summary,
    check_alpha,
    estimate,
    transform,
)

BoundOutcome = Literal["missed", "met", "inconclusive"]


@dataclass(frozen=True)
class BoundVerdict:
    """A metric judged against a bound.

    `estimate` is the metric's centre with one-sided (1 - alpha) confidence bounds on each
    side (`low`, `high`: a two-sided 1 - 2 alpha interval). `p_value` is the one-sided
    p-value of "the true value meets the bound" (small: missed); `p_adjusted` is the same
    after Holm's correction over the test's metrics (`stats.correct`), equal to `p_value`
    until then. `exact` verdicts compared the mean of the samples with the bound.
    """

    outcome: BoundOutcome
    bound: float
    direction: Direction
    alpha: float
    estimate: Estimate
    p_value: float
    p_adjusted: float
    df: float
    exact: bool

    @property
    def decided(self) -> bool:
        return self.outcome != "inconclusive"

    @property
    def bad(self) -> bool:
        return self.outcome == "missed"

    @property
    def confidence_bound(self) -> float:
        """The (1 - alpha) confidence bound that must clear the bound for `met`: the lower
        one when higher is better, the upper one when lower is better."""
        return self.estimate.low if self.direction == "higher" else self.estimate.high

    @property
    def reducible_share(self) -> float:
        """The share of the verdict's variance that more rounds shrink: all of it (a bound
        has no baseline and no drift term)."""
        return 0.0 if self.exact else 1.0

    def corrected(self, p_adjusted: float, alpha: float) -> BoundVerdict:
        """This verdict after a multiple-testing correction: missed only when the adjusted
        p-value is within `alpha`; a raw miss that the correction takes back is
        inconclusive. `met` needs no correction (see `stats.correct`)."""
        if p_adjusted <= alpha:
            outcome: BoundOutcome = "missed"
        elif self.outcome == "missed":
            outcome = "inconclusive"
        else:
            outcome = self.outcome
        return dataclasses.replace(self, outcome=outcome, p_adjusted=p_adjusted)


def judge_bound(
    samples: Sequence[float],
    bound: float,
    direction: Direction,
    alpha: float,
    scale: Scale = "log",
) -> BoundVerdict:
    """Judge the per-round `samples` of a metric against `bound` at error rate `alpha`.

    `direction` "higher" (higher is better, the bound is a minimum): missed when a one-sided
    t-test is confident the true value is below the bound (H0: mean >= bound, p <= alpha),
    met when the lower (1 - alpha) confidence bound is at or above it, inconclusive
    otherwise; "lower" mirrors it. On the log scale the test runs on the logs of the
    samples; samples <= 0, a bound <= 0 and the linear scale use the values themselves.
    A bound of 0, one sample or samples that do not vary are judged exactly: the mean of
    the samples against the bound.
    """
    check_alpha(alpha)
    if not math.isfinite(bound):
        raise ValueError(f"bound {bound} is not a finite number")
    values = transform(samples, scale) if bound > 0 else None
    limit = math.log(bound) if values is not None and scale == "log" else bound
    if values is None:
        values = transform(samples, "linear")
        assert values is not None
        scale = "linear"
    shown = estimate(samples, scale, confidence=1 - 2 * alpha)
    summary = Summary.of(values)
    higher = direction == "higher"
    if bound == 0 or summary.n < 2 or summary.sum_squares == 0:
        mean = math.fsum(float(s) for s in samples) / len(samples)
        missed = mean < bound if higher else mean > bound
        p = 0.0 if missed else 1.0
        return BoundVerdict(
            "missed" if missed else "met", bound, direction, alpha, shown, p, p, math.inf, True
        )
    df = summary.n - 1
    se = math.sqrt(summary.variance / summary.n)
    statistic = (summary.mean - limit) / se
    p = t_cdf(statistic, df) if higher else t_sf(statistic, df)
    margin = t_ppf(1 - alpha, df) * se
    low, high = summary.mean - margin, summary.mean + margin
    outcome: BoundOutcome
    if p <= alpha:
        outcome = "missed"
    elif (low >= limit) if higher else (high <= limit):
        outcome = "met"
    else:
        outcome = "inconclusive"
    return BoundVerdict(outcome, bound, direction, alpha, shown, p, p, df, False)
