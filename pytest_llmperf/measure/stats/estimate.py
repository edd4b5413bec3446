"""How sure one metric is: a centre and a confidence interval from its per-round samples.

The methods and why each is used are in the docstring of `pytest_llmperf.measure.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_llmperf.measure.stats.distributions import normal_ppf, t_ppf

#: "log": a positive ratio-scale metric (throughput, latency), judged on the logs of its
#: samples; "linear": a metric that can be 0 or negative (failure_rate, counts, differences).
Scale = Literal["log", "linear"]
#: How an interval was made: "log-t" a t interval on the logs (centre: geometric mean),
#: "t" a t interval on the values (centre: mean), "wilson" a Wilson score interval of a
#: proportion, "exact" no interval (one sample, or samples that do not vary).
Method = Literal["log-t", "t", "wilson", "exact"]


@dataclass(frozen=True)
class Summary:
    """n, mean and sum of squared deviations of some values (the logs, on the log scale)."""

    n: int
    mean: float
    sum_squares: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        n = len(values)
        if n == 0:
            raise ValueError("no samples")
        mean = math.fsum(values) / n
        return cls(n, mean, math.fsum((v - mean) ** 2 for v in values))

    @property
    def variance(self) -> float:
        """The sample variance (n - 1 in the denominator); 0 for a single value."""
        return self.sum_squares / (self.n - 1) if self.n > 1 else 0.0


@dataclass(frozen=True)
class Estimate:
    """A metric's centre and its two-sided `confidence` interval [low, high].

    `exact` estimates (a single sample, or samples that are all equal) have low == high ==
    centre: they say nothing about noise, and verdicts judge them by value alone.
    """

    n: int
    centre: float
    low: float
    high: float
    method: Method
    confidence: float

    @property
    def exact(self) -> bool:
        return self.method == "exact"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def relative_half_width(self) -> float | None:
        """Half the interval's width over the centre: 0.021 prints as `±2.1%`. None when the
        centre is 0 (a relative width means nothing there)."""
        return self.half_width / abs(self.centre) if self.centre != 0 else None


def transform(values: Sequence[float], scale: Scale) -> list[float] | None:
    """The values on `scale` (their logs, or themselves); None when the log scale cannot
    take them (a value <= 0), so that the caller falls back to the linear scale."""
    checked = [float(v) for v in values]
    if not all(math.isfinite(v) for v in checked):
        raise ValueError(f"samples must be finite numbers, got {list(values)!r}")
    if scale == "linear":
        return checked
    if any(v <= 0 for v in checked):
        return None
    return [math.log(v) for v in checked]


def estimate(samples: Sequence[float], scale: Scale = "log", confidence: float = 0.95) -> Estimate:
    """The centre and `confidence` interval of a metric from its per-round samples.

    On the log scale: the geometric mean and a t interval on the logs, mapped back (so the
    interval is asymmetric, wider above); samples <= 0 fall back to the linear scale. On the
    linear scale: the mean and a t interval. One sample, or samples all equal: exact.
    """
    _check_confidence(confidence)
    values = transform(samples, scale)
    logged = values is not None and scale == "log"
    if values is None:
        values = transform(samples, "linear")
        assert values is not None
    summary = Summary.of(values)
    if summary.n < 2 or summary.sum_squares == 0:
        value = math.fsum(float(s) for s in samples) / len(samples)
        return Estimate(summary.n, value, value, value, "exact", confidence)
    quantile = t_ppf(0.5 + confidence / 2, summary.n - 1)
    half = quantile * math.sqrt(summary.variance / summary.n)
    low, centre, high = summary.mean - half, summary.mean, summary.mean + half
    if logged:
        return Estimate(summary.n, exp(centre), exp(low), exp(high), "log-t", confidence)
    return Estimate(summary.n, centre, low, high, "t", confidence)


def proportion(successes: int, trials: int, confidence: float = 0.95) -> Estimate:
    """The share of `trials` items that succeeded (accuracy over questions), with a Wilson
    score interval; the centre is the observed share."""
    _check_confidence(confidence)
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes of {trials} trials is not a proportion")
    z = normal_ppf(0.5 + confidence / 2)
    share = successes / trials
    z2n = z * z / trials
    middle = (share + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(share * (1 - share) / trials + z2n / (4 * trials)) / (1 + z2n)
    # At 0 or `trials` successes the interval touches the edge: exactly, not up to rounding.
    low = 0.0 if successes == 0 else middle - half
    high = 1.0 if successes == trials else middle + half
    return Estimate(trials, share, low, high, "wilson", confidence)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} is not strictly between 0 and 1")


def exp(value: float) -> float:
    """math.exp, but inf where it would overflow: a log interval with one or two degrees of
    freedom at a tiny error rate can reach past e^709."""
    return math.exp(value) if value < 709 else math.inf


def check_alpha(alpha: float) -> None:
    """An error rate for one side of a verdict: below 1/2, so the two sides never overlap."""
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha {alpha} is not strictly between 0 and 0.5")
