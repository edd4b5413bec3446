"""The statistics behind every interval and verdict (`pytest_llmperf.measure.stats`): checked
against scipy and textbook values, and by seeded simulations of the error rates they promise."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as scipy_stats

from pytest_llmperf.measure.stats import (
    estimate,
    normal_ppf,
    proportion,
    t_cdf,
    t_pdf,
    t_ppf,
    t_sf,
)

PROBABILITIES = [
    1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5,
    0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.999, 1 - 1e-4, 1 - 1e-5, 1 - 1e-6,
]  # fmt: skip


def upper_binomial(successes: int, trials: int, confidence: float = 0.999) -> float:
    """The one-sided Clopper-Pearson upper bound of a rate."""
    if successes == trials:
        return 1.0
    return float(scipy_stats.beta.ppf(confidence, successes + 1, trials - successes))


def lower_binomial(successes: int, trials: int, confidence: float = 0.999) -> float:
    if successes == 0:
        return 0.0
    return float(scipy_stats.beta.ppf(1 - confidence, successes, trials - successes + 1))


def lognormal_run(rng: random.Random, level: float, within: float, rounds: int) -> list[float]:
    return [math.exp(level + rng.gauss(0, within)) for _ in range(rounds)]


# --- the t distribution -------------------------------------------------------------------


@pytest.mark.parametrize("df", [*range(1, 201), 0.5, 2.5, 7.3, 250.5, 1e4, 1e5])
def test_t_quantile_and_cdf_match_scipy(df: float) -> None:
    for p in PROBABILITIES:
        expected = float(scipy_stats.t.ppf(p, df))
        ours = t_ppf(p, df)
        assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12), (df, p)
        # The CDF at scipy's quantile gives p back; the smaller tail to 1e-9 of itself.
        if p < 0.5:
            assert t_cdf(expected, df) == pytest.approx(p, rel=1e-9), (df, p)
        elif p > 0.5:
            assert t_sf(expected, df) == pytest.approx(1 - p, rel=1e-9), (df, p)


def test_t_density_and_far_tails_match_scipy() -> None:
    for df in (1, 2, 3, 10, 30, 200):
        for t in (-40.0, -3.0, -0.2, 0.0, 0.7, 5.0, 300.0):
            assert t_pdf(t, df) == pytest.approx(float(scipy_stats.t.pdf(t, df)), rel=1e-10)
            assert t_sf(t, df) == pytest.approx(float(scipy_stats.t.sf(t, df)), rel=1e-9)
    assert t_sf(math.inf, 3) == 0.0 and t_cdf(math.inf, 3) == 1.0
    # Infinite degrees of freedom: the normal.
    assert t_ppf(0.975, math.inf) == pytest.approx(1.959963984540054, rel=1e-12)
    assert normal_ppf(1e-6) == pytest.approx(float(scipy_stats.norm.ppf(1e-6)), rel=1e-12)


@pytest.mark.parametrize(("p", "df"), [(0.0, 3), (1.0, 3), (0.5, 0), (0.5, -1)])
def test_t_quantile_refuses_what_has_none(p: float, df: float) -> None:
    with pytest.raises(ValueError):
        t_ppf(p, df)


# --- intervals ----------------------------------------------------------------------------


def test_log_t_interval_is_scipys_t_interval_on_the_logs() -> None:
    samples = [6100.0, 6250.0, 6193.0, 5980.0, 6301.0]
    logs = [math.log(s) for s in samples]
    low, high = scipy_stats.t.interval(
        0.95, len(logs) - 1, loc=sum(logs) / len(logs), scale=scipy_stats.sem(logs)
    )
    e = estimate(samples)
    assert e.method == "log-t" and e.n == 5 and not e.exact
    assert e.centre == pytest.approx(float(scipy_stats.gmean(samples)), rel=1e-12)
    assert (e.low, e.high) == pytest.approx((math.exp(low), math.exp(high)), rel=1e-12)
    # Asymmetric around the geometric mean, as a log interval is; about ±2.6% here.
    assert e.high - e.centre > e.centre - e.low
    assert e.relative_half_width == pytest.approx(0.0261, abs=5e-4)


def test_linear_t_interval_for_metrics_that_can_be_zero() -> None:
    samples = [0.0, 0.25, 0.125, 0.0]
    low, high = scipy_stats.t.interval(
        0.9, 3, loc=sum(samples) / 4, scale=scipy_stats.sem(samples)
    )
    e = estimate(samples, scale="linear", confidence=0.9)
    assert e.method == "t" and e.centre == 0.09375
    assert (e.low, e.high) == pytest.approx((low, high), rel=1e-12)
    # A log-scale metric with a round at 0 (every request failed) falls back to the values.
    assert estimate(samples).method == "t"
    # A centre of 0 has no relative width.
    assert estimate([-1.0, 1.0], scale="linear").relative_half_width is None


def test_one_sample_or_no_spread_is_exact() -> None:
    for samples in ([412.0], [0.75, 0.75, 0.75]):
        e = estimate(samples)
        assert e.exact and e.low == e.high == e.centre == samples[0]
        assert e.relative_half_width == 0.0
    with pytest.raises(ValueError, match="no samples"):
        estimate([])
    with pytest.raises(ValueError, match="finite"):
        estimate([1.0, math.nan])


def test_wilson_interval_textbook_values() -> None:
    # 8 of 10 correct at 95%: [0.490, 0.943] (Wilson 1927; Agresti and Coull 1998).
    e = proportion(8, 10)
    assert e.method == "wilson" and e.centre == 0.8
    assert (round(e.low, 3), round(e.high, 3)) == (0.490, 0.943)
    # All wrong: [0, z^2 / (n + z^2)] = [0, 0.2775]; all right mirrors it.
    assert (proportion(0, 10).low, round(proportion(0, 10).high, 4)) == (0.0, 0.2775)
    assert (round(proportion(10, 10).low, 4), proportion(10, 10).high) == (0.7225, 1.0)
    with pytest.raises(ValueError):
        proportion(11, 10)
