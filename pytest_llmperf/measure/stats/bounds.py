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
    #: The share of the variance that more rounds shrink (the rest is the bound's drift).
    reducible: float = 1.0

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
        """The share of the verdict's variance that more rounds shrink: the within-run part
        (all of it without a drift term; none for an exact verdict)."""
        return 0.0 if self.exact else self.reducible

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
    drift: float = 0.0,
) -> BoundVerdict:
    """Judge the per-round `samples` of a metric against `bound` at error rate `alpha`.

    `direction` "higher" (higher is better, the bound is a minimum): missed when a one-sided
    t-test is confident the true value is below the bound (H0: mean >= bound, p <= alpha),
    met when the lower (1 - alpha) confidence bound is at or above it, inconclusive
    otherwise; "lower" mirrors it. On the log scale the test runs on the logs of the
    samples; samples <= 0, a bound <= 0 and the linear scale use the values themselves.
    A bound of 0, one sample or samples that do not vary are judged exactly: the mean of
    the samples against the bound.

    `drift` (the standard deviation of a run's mean between runs: of the log on the log
    scale, in the metric's units on the linear scale) asks whether the *setup* misses the
    bound rather than this run: a run's mean differs from the setup's by about `drift`, so
    it adds drift^2 to the variance of the mean (known, so it adds no uncertainty of its
    own: df = V^2 / ((s^2/n)^2 / (n - 1)), Welch-Satterthwaite with one estimated part).
    A bound written from calibration runs records that drift beside it.
    """
    check_alpha(alpha)
    requested = scale
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
    if not (drift >= 0 and math.isfinite(drift)):
        raise ValueError(f"drift {drift} must be finite and >= 0")
    within = summary.variance / summary.n
    # A relative drift carried over to the values when a log judgement fell back to them.
    known = (drift * abs(bound) if requested == "log" and scale == "linear" else drift) ** 2
    variance = within + known
    df = (summary.n - 1) * variance**2 / within**2 if within > 0 else math.inf
    se = math.sqrt(variance)
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
    return BoundVerdict(outcome, bound, direction, alpha, shown, p, p, df, False, within / variance)
