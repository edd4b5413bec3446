"""The statistics behind every interval and verdict (`pytest_llmperf.measure.stats`): checked
against scipy and textbook values, and by seeded simulations of the error rates they promise."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as scipy_stats

from pytest_llmperf.measure.stats import (
    BoundVerdict,
    ChangeVerdict,
    Continuation,
    change_points,
    correct,
    estimate,
    fewest_runs,
    holm_adjust,
    judge_bound,
    judge_change,
    look_alpha,
    normal_ppf,
    proportion,
    round_alpha,
    should_continue,
    spent_alpha,
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
    low, high = scipy_stats.t.interval(0.9, 3, loc=sum(samples) / 4, scale=scipy_stats.sem(samples))
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


# --- verdicts against a bound -------------------------------------------------------------


def test_bound_verdict_is_a_one_sided_t_test_on_the_logs() -> None:
    samples = [96.0, 99.0, 94.5, 97.2]
    logs = [math.log(s) for s in samples]
    v = judge_bound(samples, 100.0, "higher", alpha=0.05)
    expected = scipy_stats.ttest_1samp(logs, math.log(100.0), alternative="less")
    assert v.outcome == "missed" and not v.exact and v.df == 3
    assert v.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)
    # The one-sided 95% bounds are the two-sided 90% interval.
    low, high = scipy_stats.t.interval(0.9, 3, loc=sum(logs) / 4, scale=scipy_stats.sem(logs))
    assert (v.estimate.low, v.estimate.high) == pytest.approx((math.exp(low), math.exp(high)))
    assert v.estimate.high < 100.0  # missed: even the upper bound is below the minimum
    assert v.confidence_bound == v.estimate.low


def test_bound_verdicts_met_inconclusive_and_mirrored_for_lower_is_better() -> None:
    samples = [104.0, 106.5, 105.2, 103.9, 105.8]
    met = judge_bound(samples, 100.0, "higher", alpha=0.01)
    assert met.outcome == "met" and met.confidence_bound >= 100.0 and met.p_value > 0.99
    close = judge_bound(samples, 105.0, "higher", alpha=0.01)
    assert close.outcome == "inconclusive" and close.estimate.low < 105.0 < close.estimate.high
    # Latency with a maximum: the same samples, the other way round.
    assert judge_bound(samples, 110.0, "lower", alpha=0.01).outcome == "met"
    lower_missed = judge_bound(samples, 100.0, "lower", alpha=0.01)
    assert lower_missed.outcome == "missed" and lower_missed.confidence_bound > 100.0
    assert judge_bound(samples, 105.0, "lower", alpha=0.01).outcome == "inconclusive"


def test_bounds_of_zero_and_samples_without_spread_are_judged_exactly() -> None:
    # failure_rate: {max: 0}: one failing round of five fails the bound, no interval softens it.
    failing = judge_bound([0.0, 0.0, 0.1, 0.0, 0.0], 0.0, "lower", alpha=0.01)
    assert failing.outcome == "missed" and failing.exact and failing.p_value == 0.0
    clean = judge_bound([0.0, 0.0, 0.0], 0.0, "lower", alpha=0.01)
    assert clean.outcome == "met" and clean.exact
    # A deterministic model's accuracy: the same in every round, judged by value.
    assert judge_bound([0.62, 0.62, 0.62], 0.6, "higher", alpha=0.01).outcome == "met"
    below = judge_bound([0.58, 0.58, 0.58], 0.6, "higher", alpha=0.01)
    assert below.outcome == "missed" and below.exact
    # One round: nothing known about noise, the value alone decides.
    assert judge_bound([99.0], 100.0, "higher", alpha=0.01).outcome == "missed"
    with pytest.raises(ValueError, match="alpha"):
        judge_bound([1.0, 2.0], 1.0, "higher", alpha=0.5)


# --- verdicts against a baseline ----------------------------------------------------------


def test_change_with_one_run_each_and_no_drift_is_welchs_test_on_the_logs() -> None:
    current = [5900.0, 6010.0, 5850.0, 5990.0]
    baseline = [6193.0, 6120.0, 6260.0, 6205.0, 6150.0]
    v = judge_change([current], [baseline], "higher", tolerance=0.0, alpha=0.05)
    welch = scipy_stats.ttest_ind(
        [math.log(x) for x in current], [math.log(x) for x in baseline], equal_var=False
    )
    assert v.df == pytest.approx(float(welch.df), rel=1e-12)
    assert 2 * min(v.p_value, 1 - v.p_value) == pytest.approx(float(welch.pvalue), rel=1e-9)
    assert v.change == pytest.approx(scipy_stats.gmean(current) / scipy_stats.gmean(baseline))
    assert v.outcome == "regressed" and v.scale == "log" and not v.drift_estimated


def test_change_variance_adds_the_drift_floor_for_the_current_and_each_baseline_run() -> None:
    current = [[100.0, 102.0, 98.0]]
    baselines = [[101.0, 99.0, 103.0, 100.0]]
    v = judge_change(current, baselines, "higher", tolerance=0.1, alpha=0.05, drift=0.03)
    s_c2 = scipy_stats.tvar([math.log(x) for x in current[0]])
    s_b2 = scipy_stats.tvar([math.log(x) for x in baselines[0]])
    se = math.sqrt(0.03**2 * (1 + 1 / 1) + s_c2 / 3 + s_b2 / 4)
    margin = float(scipy_stats.t.ppf(0.95, v.df)) * se
    log_ratio = math.log(v.change)
    assert (math.log(v.low), math.log(v.high)) == pytest.approx(
        (log_ratio - margin, log_ratio + margin), rel=1e-9
    )
    # Welch-Satterthwaite without a term for the floor (given, not estimated).
    expected_df = (s_c2 / 3 + s_b2 / 4 + 2 * 0.03**2) ** 2 / (
        (s_c2 / 3) ** 2 / 2 + (s_b2 / 4) ** 2 / 3
    )
    assert v.df == pytest.approx(expected_df, rel=1e-9)
    assert v.drift == 0.03 and v.limit == pytest.approx(0.9)
    # Within the 10% tolerance with confidence: ok. The rounds are a small share of Var(D).
    assert v.outcome == "ok" and v.reducible_share < 0.5


def test_change_estimates_drift_from_several_baseline_runs() -> None:
    rng = random.Random(7)
    # Baseline nights that move by ~5% while each night's rounds agree within ~1%.
    baselines = [lognormal_run(rng, rng.gauss(0, 0.05), 0.01, 5) for _ in range(6)]
    current = [lognormal_run(rng, 0.0, 0.01, 5)]
    v = judge_change(current, baselines, "higher", tolerance=0.1, alpha=0.05, drift=0.01)
    run_means = [sum(math.log(x) for x in run) / 5 for run in baselines]
    within = sum(scipy_stats.tvar([math.log(x) for x in run]) for run in baselines) / 6
    assert v.drift_estimated
    assert v.drift == pytest.approx(math.sqrt(scipy_stats.tvar(run_means) - within / 5))
    assert v.drift > 0.02
    # The floor stays a floor: a larger one replaces the estimate.
    floored = judge_change(current, baselines, "higher", tolerance=0.1, alpha=0.05, drift=0.2)
    assert not floored.drift_estimated and floored.drift == 0.2
    assert floored.high - floored.low > v.high - v.low


def test_change_on_the_linear_scale_and_exact_cases() -> None:
    # failure_rate with tolerance 0 (any new failure): exact.
    new_failure = judge_change(
        [[0.0, 0.1]], [[0.0, 0.0]], "lower", tolerance=0.0, alpha=0.01, scale="linear"
    )
    assert new_failure.outcome == "regressed" and new_failure.exact
    same = judge_change(
        [[0.0, 0.0]], [[0.0, 0.0]], "lower", tolerance=0.0, alpha=0.01, scale="linear"
    )
    assert same.outcome == "ok" and same.exact
    # accuracy: an absolute tolerance of 0.02 on the difference.
    acc = judge_change(
        [[0.70, 0.71, 0.69]], [[0.80, 0.81, 0.79]], "higher", 0.02, alpha=0.01, scale="linear"
    )
    assert acc.outcome == "regressed" and acc.change == pytest.approx(-0.1)
    # No spread anywhere and no drift: the ratio itself decides.
    fixed = judge_change([[90.0, 90.0]], [[100.0, 100.0]], "higher", tolerance=0.05, alpha=0.01)
    assert fixed.exact and fixed.outcome == "regressed" and fixed.change == pytest.approx(0.9)
    # A throughput round at 0 moves the judgement to the values, tolerance scaled.
    zero = judge_change([[0.0, 50.0, 52.0]], [[100.0, 101.0, 99.0]], "higher", 0.1, alpha=0.05)
    assert zero.scale == "linear" and zero.tolerance == pytest.approx(10.0)
    with pytest.raises(ValueError, match="non-empty"):
        judge_change([[]], [[1.0]], "higher", 0.1, alpha=0.05)


# --- several metrics in one test ----------------------------------------------------------


def test_holm_adjusted_p_values_textbook_example() -> None:
    # Holm (1979) as in most textbooks: four hypotheses at alpha 0.05 reject the two smallest.
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm_adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [a <= 0.05 for a in holm_adjust(p)] == [True, False, False, True]
    assert holm_adjust([0.2, 0.9]) == [0.4, 0.9] and holm_adjust([]) == []


def test_correct_turns_misses_that_holm_takes_back_into_inconclusive() -> None:
    weak = judge_bound([0.99, 0.975, 1.005, 0.98, 1.0, 0.985], 1.0, "higher", alpha=0.05)
    strong = judge_bound([0.81, 0.8, 0.83, 0.79, 0.8, 0.82], 1.0, "higher", alpha=0.05)
    fine = judge_bound([1.21, 1.2, 1.23, 1.19, 1.2, 1.22], 1.0, "higher", alpha=0.05)
    # Missed alone (p 0.035), but second smallest of three: Holm asks 2 p <= 0.05.
    assert weak.outcome == "missed" and 0.05 / 2 < weak.p_value <= 0.05
    corrected: list[BoundVerdict] = correct([weak, strong, fine], alpha=0.05)
    assert [v.outcome for v in corrected] == ["inconclusive", "missed", "met"]
    assert corrected[1].p_adjusted == pytest.approx(3 * strong.p_value)
    change: list[ChangeVerdict] = correct(
        [judge_change([[90.0, 91.0]], [[100.0, 100.5]], "higher", 0.05, alpha=0.05)], 0.05
    )
    assert change[0].outcome == "regressed"


# --- error rates, by simulation -----------------------------------------------------------


def regressed_count(
    trials: int,
    *,
    baseline_runs: int,
    drift_true: float,
    drift_floor: float,
    slowdown: float = 0.0,
    tolerance: float = 0.0,
    alpha: float = 0.05,
    within: float = 0.03,
    rounds: int = 5,
    seed: int = 0,
) -> int:
    """How often an unchanged (or slowed) run is judged regressed against fresh baselines."""
    rng = random.Random(seed)
    count = 0
    for _ in range(trials):
        baselines = [
            lognormal_run(rng, rng.gauss(0, drift_true), within, rounds)
            for _ in range(baseline_runs)
        ]
        level = math.log1p(-slowdown) + rng.gauss(0, drift_true)
        current = [lognormal_run(rng, level, within, rounds)]
        verdict = judge_change(current, baselines, "higher", tolerance, alpha, drift_floor)
        count += verdict.outcome == "regressed"
    return count


def test_an_unchanged_run_is_judged_regressed_in_about_alpha_of_trials() -> None:
    trials, alpha = 2000, 0.05
    # Tolerance 0 puts the truth on the edge of "regressed": the worst case, rate == alpha.
    for runs, drift_true, floor in ((1, 0.0, 0.0), (1, 0.02, 0.02)):
        k = regressed_count(trials, baseline_runs=runs, drift_true=drift_true, drift_floor=floor)
        assert lower_binomial(k, trials) <= alpha <= upper_binomial(k, trials), (runs, k)
    # Several baseline runs, drift estimated from them (no floor): at most alpha.
    k = regressed_count(trials, baseline_runs=3, drift_true=0.02, drift_floor=0.0, seed=1)
    assert lower_binomial(k, trials) <= alpha, k
    # Why the drift term: ignore a 2% drift and unchanged runs "regress" far more often.
    k = regressed_count(trials, baseline_runs=1, drift_true=0.02, drift_floor=0.0, seed=2)
    assert lower_binomial(k, trials) > 2 * alpha, k


def test_a_20_percent_slowdown_is_mostly_judged_regressed() -> None:
    # 3% round noise, 2% drift between runs, the default 10% tolerance.
    trials = 500
    for runs, floor in ((1, 0.02), (5, 0.0)):
        k = regressed_count(
            trials, baseline_runs=runs, drift_true=0.02, drift_floor=floor,
            slowdown=0.2, tolerance=0.1, seed=3,
        )  # fmt: skip
        assert lower_binomial(k, trials) >= 0.9, (runs, k)
    # Unchanged with the same tolerance: no false alarm at all.
    assert (
        regressed_count(trials, baseline_runs=1, drift_true=0.02, drift_floor=0.02, tolerance=0.1)
        == 0
    )


def test_holm_keeps_a_tests_false_alarms_at_alpha_and_met_needs_no_correction() -> None:
    rng = random.Random(5)
    trials, alpha, metrics = 1000, 0.05, 5
    raw_alarms = corrected_alarms = passes_with_a_bad_metric = 0
    for _ in range(trials):
        # Every metric exactly at its bound: each is missed with probability alpha.
        verdicts = [
            judge_bound(lognormal_run(rng, 0.0, 0.03, 5), 1.0, "higher", alpha)
            for _ in range(metrics)
        ]
        raw_alarms += any(v.outcome == "missed" for v in verdicts)
        corrected_alarms += any(v.outcome == "missed" for v in correct(verdicts, alpha))
        # One metric at its bound, the others clearly fine: the test passes (all met) only
        # when that metric is wrongly met, at most alpha of the time, uncorrected.
        others = [
            judge_bound(lognormal_run(rng, 0.2, 0.03, 5), 1.0, "higher", alpha)
            for _ in range(metrics - 1)
        ]
        tested = correct([verdicts[0], *others], alpha)
        passes_with_a_bad_metric += all(v.outcome == "met" for v in tested)
    # Uncorrected: 1 - 0.95^5 = 23% of unchanged tests fail.
    assert lower_binomial(raw_alarms, trials) > 0.15
    assert lower_binomial(corrected_alarms, trials) <= alpha
    assert lower_binomial(passes_with_a_bad_metric, trials) <= alpha


# --- rounds until decided -----------------------------------------------------------------


def test_alpha_spending_per_look() -> None:
    alpha = 0.05
    pocock = [round_alpha(r, 3, 10, alpha) for r in range(3, 11)]
    assert math.fsum(pocock) == pytest.approx(alpha, rel=1e-12)
    # The first look, at 3 of 10 rounds, gets ln(1 + (e - 1) 0.3) = 42% of alpha.
    assert pocock[0] / alpha == pytest.approx(math.log(1 + (math.e - 1) * 0.3), rel=1e-12)
    assert round(pocock[0] / alpha, 2) == 0.42
    assert pocock == sorted(pocock, reverse=True)
    obf = [round_alpha(r, 3, 10, alpha, "obrien-fleming") for r in range(3, 11)]
    assert math.fsum(obf) == pytest.approx(alpha, rel=1e-12)
    assert obf[0] < 1e-3 and obf[-1] > pocock[-1]
    assert look_alpha(1, 1, alpha) == alpha
    assert look_alpha(2, 4, alpha) == pytest.approx(
        spent_alpha(0.5, alpha) - spent_alpha(0.25, alpha)
    )
    with pytest.raises(ValueError):
        round_alpha(2, 3, 10, alpha)


def run_until_decided(
    rng: random.Random,
    level: float,
    alpha: float,
    naive: bool,
    min_rounds: int = 3,
    max_rounds: int = 10,
) -> tuple[str, int]:
    """One test under `rounds="auto"`: a metric whose true value is `level` (log) against a
    minimum of 1, judged after every round from `min_rounds` on."""
    samples = lognormal_run(rng, level, 0.03, max_rounds)
    for rounds in range(min_rounds, max_rounds + 1):
        look = alpha if naive else round_alpha(rounds, min_rounds, max_rounds, alpha)
        verdict = judge_bound(samples[:rounds], 1.0, "higher", look)
        step = should_continue([verdict], rounds, max_rounds, elapsed=rounds, max_seconds=1e6)
        if not step.more:
            return verdict.outcome, rounds
    raise AssertionError("should_continue never stopped")


def test_sequential_looks_keep_the_false_alarm_rate_where_naive_looks_do_not() -> None:
    trials, alpha = 2000, 0.05
    rng = random.Random(13)
    # A metric exactly at its bound: each look's test is at the edge of "missed".
    spent = sum(
        run_until_decided(rng, 0.0, alpha, naive=False)[0] == "missed" for _ in range(trials)
    )
    naive = sum(
        run_until_decided(rng, 0.0, alpha, naive=True)[0] == "missed" for _ in range(trials)
    )
    assert lower_binomial(spent, trials) <= alpha, spent
    # Testing at alpha after each of rounds 3..10 misses about 14% of the time.
    assert lower_binomial(naive, trials) > 2 * alpha, naive


def test_clear_cases_stop_at_the_minimum_and_close_ones_use_more_rounds() -> None:
    rng = random.Random(17)
    clear = [run_until_decided(rng, -0.2, 0.05, naive=False) for _ in range(50)]
    # 20% below or above the bound with 3% noise: decided, nearly always at the minimum.
    assert all(outcome == "missed" for outcome, _ in clear)
    assert sum(rounds == 3 for _, rounds in clear) >= 45
    fine = [run_until_decided(rng, 0.2, 0.05, naive=False) for _ in range(50)]
    assert all(outcome == "met" for outcome, _ in fine)
    assert sum(rounds == 3 for _, rounds in fine) >= 45
    close = [run_until_decided(rng, -0.03, 0.05, naive=False) for _ in range(50)]
    assert sum(rounds for _, rounds in close) / 50 > 6


def test_should_continue_says_why_it_stops() -> None:
    undecided = judge_bound([99.0, 101.0, 100.5], 100.0, "higher", 0.05)
    decided = judge_bound([120.0, 121.0, 119.5], 100.0, "higher", 0.05)
    assert not undecided.decided and decided.decided
    assert should_continue([decided], 3, 10, 3.0, 60.0) == Continuation(False, "decided", 0)
    assert should_continue([decided, undecided], 3, 10, 3.0, 60.0) == Continuation(True, None, 1)
    assert should_continue([undecided], 10, 10, 10.0, 60.0).reason == "max_rounds"
    # 5 rounds took 55 s: a sixth would end past 60 s.
    assert should_continue([undecided], 5, 10, 55.0, 60.0).reason == "max_seconds"
    assert should_continue([undecided], 5, 10, 45.0, 60.0).more
    # Against a baseline, with a drift floor that dwarfs the rounds' noise: more rounds
    # cannot decide.
    drifting = judge_change(
        [[97.0, 97.1, 96.9]], [[100.0, 100.1, 99.9]], "higher", 0.05, 0.05, drift=0.05
    )
    assert not drifting.decided and drifting.reducible_share < 0.01
    assert should_continue([drifting], 3, 10, 3.0, 60.0).reason == "cannot_decide"
    noisy = judge_change([[97.0, 92.0, 101.0]], [[100.0, 95.0, 104.0]], "higher", 0.05, 0.05)
    assert not noisy.decided and should_continue([noisy], 3, 10, 3.0, 60.0).more


# --- change points over a history ---------------------------------------------------------


def noisy_series(rng: random.Random, steps: dict[int, float], length: int = 20) -> list[float]:
    """Run values around 1000 tok/s with 3% noise; from each index in `steps` on, the level
    is multiplied by its factor."""
    level, values = 1000.0, []
    for i in range(length):
        level *= steps.get(i, 1.0)
        values.append(level * math.exp(rng.gauss(0, 0.03)))
    return values


def test_a_15_percent_step_is_found_where_it_happened() -> None:
    for index in range(3, 18):
        for seed in range(3):
            series = noisy_series(random.Random(100 * index + seed), {index: 0.85})
            steps = change_points(series)
            assert [s.index for s in steps] == [index], (index, seed, steps)
            assert steps[0].change == pytest.approx(-0.15, abs=0.05)
            assert steps[0].p_value <= 0.005 and steps[0].after < steps[0].before


def test_a_flat_series_has_no_steps() -> None:
    trials = 300
    found = sum(
        bool(change_points(noisy_series(random.Random(seed), {}))) for seed in range(trials)
    )
    assert lower_binomial(found, trials) <= 0.005, found
    assert change_points([1000.0] * 20) == []


def test_two_steps_samples_per_run_and_the_linear_scale() -> None:
    rng = random.Random(3)
    # A regression fixed ten runs later: a bump, which no single split can isolate.
    series = noisy_series(rng, {10: 0.8, 20: 1.25}, length=30)
    steps = change_points(series)
    assert [s.index for s in steps] == [10, 20]
    assert [s.change for s in steps] == pytest.approx([-0.2, 0.25], abs=0.04)
    # A staircase: two falls (its cuts refined between their neighbours: the whole series
    # splits best between the two steps in some seeds).
    for seed in range(10):
        stairs = change_points(noisy_series(random.Random(seed), {10: 0.85, 20: 0.85}, 30))
        assert [s.index for s in stairs] == [10, 20], seed
    # The same history as per-round samples: each run is the geometric mean of its rounds.
    as_samples = [[v * 0.99, v, v * 1.01] for v in series]
    assert [s.index for s in change_points(as_samples)] == [10, 20]
    # The same seed gives the same p-values.
    assert change_points(series) == steps
    # A failure rate that jumps from ~0 to ~0.2: absolute steps on the linear scale.
    rates = [max(0.0, rng.gauss(0, 0.01)) + (0.2 if i >= 12 else 0.0) for i in range(20)]
    linear = change_points(rates, scale="linear")
    assert [s.index for s in linear] == [12] and linear[0].change == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="positive"):
        change_points(rates)


def test_a_step_in_the_last_two_runs_is_beyond_a_permutation_test() -> None:
    # Only 2 of C(20, 2) = 190 orders put two runs at an end: p >= 0.0105 > alpha, however
    # large the step (the docstring sends new nights to judge_change instead).
    series = noisy_series(random.Random(1), {18: 0.5})
    assert change_points(series) == []
    assert [s.index for s in change_points(series, alpha=0.02, min_size=2)] == [18]


def test_fewest_runs_is_where_a_step_can_first_be_found() -> None:
    """12 at the defaults: a halving in the middle of 11 runs is never flagged, of 12 it is."""
    assert fewest_runs() == 12
    assert fewest_runs(alpha=0.05) < 12 < fewest_runs(alpha=0.0005)
    for n in (11, 12):
        series = noisy_series(random.Random(n), {n // 2: 0.5}, length=n)
        steps = change_points(series)
        assert [s.index for s in steps] == ([n // 2] if n >= fewest_runs() else []), n
    with pytest.raises(ValueError, match="alpha"):
        fewest_runs(alpha=1.5)


def test_a_bounds_drift_widens_its_judgement_and_adds_no_uncertainty_of_its_own() -> None:
    """judge_bound(drift=d): the variance of the mean is s^2/n + d^2 on the logs, with
    Welch-Satterthwaite's df for one estimated part; checked against scipy's t."""
    from scipy import stats as scipy_stats

    from pytest_llmperf.measure.stats import judge_bound

    samples = [1000.0, 1030.0, 990.0, 1010.0]
    logs = [math.log(s) for s in samples]
    n, mean = len(logs), sum(logs) / len(logs)
    s2 = sum((x - mean) ** 2 for x in logs) / (n - 1)
    drift = 0.02
    variance = s2 / n + drift**2
    df = (n - 1) * variance**2 / (s2 / n) ** 2
    statistic = (mean - math.log(1000.0)) / math.sqrt(variance)
    verdict = judge_bound(samples, 1000.0, "higher", 0.05, drift=drift)
    assert verdict.df == pytest.approx(df)
    assert verdict.p_value == pytest.approx(scipy_stats.t.cdf(statistic, df), rel=1e-9)
    assert verdict.reducible_share == pytest.approx((s2 / n) / variance)
    # Without drift the same samples clear the bound; with it the setup may not.
    assert judge_bound(samples, 960.0, "higher", 0.05).outcome == "met"
    assert judge_bound(samples, 960.0, "higher", 0.05, drift=0.05).outcome == "inconclusive"
