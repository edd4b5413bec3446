"""Judging a metric against a baseline: regressed, ok or inconclusive, from the samples of
the current run(s) and of one or more baseline runs, with a between-run drift term. The model
and its degrees of freedom are in the docstring of `pytest_llmperf.measure.stats`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_llmperf.measure.metrics import Direction
from pytest_llmperf.measure.stats.distributions import t_cdf, t_ppf, t_sf
from pytest_llmperf.measure.stats.estimate import Scale, Summary, check_alpha, exp, transform

ChangeOutcome = Literal["regressed", "ok", "inconclusive"]


@dataclass(frozen=True)
class ChangeVerdict:
    """A metric judged against its baseline.

    On the log scale `change` is the ratio current / baseline (of geometric means) and
    `limit` the worst ratio the tolerance allows (0.9 for higher-is-better at 10%); on the
    linear scale both are differences, current - baseline. `low` and `high` are one-sided
    (1 - alpha) confidence bounds of the change. `p_value` is the one-sided p-value of "the
    change is within the tolerance" (small: regressed); `p_adjusted` the same after Holm's
    correction over the test's metrics. `drift` is the between-run standard deviation used
    (on the judged scale), `drift_estimated` whether it came from the baseline runs rather
    than the floor. `reducible_share` is the share of the variance that more rounds of the
    current run would shrink (the rest is drift and the baseline's own noise).
    """

    outcome: ChangeOutcome
    direction: Direction
    tolerance: float
    alpha: float
    scale: Scale
    current: float
    baseline: float
    change: float
    low: float
    high: float
    limit: float
    p_value: float
    p_adjusted: float
    df: float
    drift: float
    drift_estimated: bool
    reducible_share: float
    exact: bool

    @property
    def decided(self) -> bool:
        return self.outcome != "inconclusive"

    @property
    def bad(self) -> bool:
        return self.outcome == "regressed"

    def corrected(self, p_adjusted: float, alpha: float) -> ChangeVerdict:
        """This verdict after a multiple-testing correction (see `BoundVerdict.corrected`)."""
        if p_adjusted <= alpha:
            outcome: ChangeOutcome = "regressed"
        elif self.outcome == "regressed":
            outcome = "inconclusive"
        else:
            outcome = self.outcome
        return dataclasses.replace(self, outcome=outcome, p_adjusted=p_adjusted)


@dataclass(frozen=True)
class _Side:
    """One side of the comparison: its runs, each summarised on the judged scale."""

    runs: tuple[Summary, ...]

    @property
    def k(self) -> int:
        return len(self.runs)

    @property
    def centre(self) -> float:
        return math.fsum(r.mean for r in self.runs) / self.k

    @property
    def mean_inverse_n(self) -> float:
        return math.fsum(1 / r.n for r in self.runs) / self.k

    @property
    def within_df(self) -> int:
        return sum(r.n - 1 for r in self.runs)

    @property
    def within_variance(self) -> float:
        df = self.within_df
        return math.fsum(r.sum_squares for r in self.runs) / df if df else 0.0

    @property
    def run_mean_variance(self) -> float:
        return Summary.of([r.mean for r in self.runs]).variance


def judge_change(
    current_runs: Sequence[Sequence[float]],
    baseline_runs: Sequence[Sequence[float]],
    direction: Direction,
    tolerance: float,
    alpha: float,
    drift: float = 0.0,
    scale: Scale = "log",
) -> ChangeVerdict:
    """Judge the current run(s) against the baseline run(s) at error rate `alpha`.

    Each argument is a list of runs, each run a list of per-round samples. On the log
    scale `tolerance` is relative (0.1: the ratio may fall to 0.9 when higher is better,
    rise to 1.1 when lower is) and `drift` the between-run standard deviation of the log
    (0.02: runs move by about 2%); on the linear scale both are in the metric's units. A
    sample <= 0 moves a log-scale judgement to the linear scale, with the tolerance and
    drift scaled by the baseline's mean. regressed: a one-sided test is confident the change
    is worse than the tolerance (p <= alpha); ok: the (1 - alpha) confidence bound of the
    change is within it; inconclusive otherwise. A linear tolerance of 0 (`failure_rate:0`,
    any new failure) and samples without any spread are judged exactly.
    """
    check_alpha(alpha)
    if not (tolerance >= 0 and drift >= 0 and math.isfinite(tolerance + drift)):
        raise ValueError(f"tolerance {tolerance} and drift {drift} must be finite and >= 0")
    if not current_runs or not baseline_runs or not all([*current_runs, *baseline_runs]):
        raise ValueError("judge_change needs at least one non-empty run on each side")
    transformed = [transform(run, scale) for run in [*current_runs, *baseline_runs]]
    logged = scale == "log" and all(t is not None for t in transformed)
    if not logged:
        transformed = [transform(run, "linear") for run in [*current_runs, *baseline_runs]]
    summaries = [Summary.of(t) for t in transformed if t is not None]
    current = _Side(tuple(summaries[: len(current_runs)]))
    baseline = _Side(tuple(summaries[len(current_runs) :]))
    higher = direction == "higher"
    if logged:
        if higher and tolerance >= 1:
            raise ValueError(f"a relative tolerance of {tolerance} allows any fall")
        limit = math.log1p(-tolerance) if higher else math.log1p(tolerance)
    else:
        # A log-scale tolerance and drift carried over to the values, relative to the baseline.
        unit = abs(baseline.centre) if scale == "log" else 1.0
        tolerance, drift = tolerance * unit, drift * unit
        limit = -tolerance if higher else tolerance
    variance, df, drift_used, estimated, reducible = _variance(current, baseline, drift)
    difference = current.centre - baseline.centre

    def shown(value: float) -> float:
        return exp(value) if logged else value

    exact = variance == 0 or (not logged and tolerance == 0)
    outcome: ChangeOutcome
    if exact:
        worse = difference < limit if higher else difference > limit
        outcome = "regressed" if worse else "ok"
        p, df, low, high, reducible = (0.0 if worse else 1.0), math.inf, difference, difference, 0.0
    else:
        se = math.sqrt(variance)
        statistic = (difference - limit) / se
        p = t_cdf(statistic, df) if higher else t_sf(statistic, df)
        margin = t_ppf(1 - alpha, df) * se
        low, high = difference - margin, difference + margin
        if p <= alpha:
            outcome = "regressed"
        elif (low >= limit) if higher else (high <= limit):
            outcome = "ok"
        else:
            outcome = "inconclusive"
    return ChangeVerdict(
        outcome=outcome,
        direction=direction,
        tolerance=tolerance,
        alpha=alpha,
        scale="log" if logged else "linear",
        current=shown(current.centre),
        baseline=shown(baseline.centre),
        change=shown(difference),
        low=shown(low),
        high=shown(high),
        limit=shown(limit),
        p_value=p,
        p_adjusted=p,
        df=df,
        drift=drift_used,
        drift_estimated=estimated,
        reducible_share=reducible / variance if variance > 0 else 0.0,
        exact=exact,
    )


def _variance(
    current: _Side, baseline: _Side, drift_floor: float
) -> tuple[float, float, float, bool, float]:
    """Var(current centre - baseline centre), its Welch-Satterthwaite degrees of freedom, the
    drift used, whether it was estimated, and the part more current rounds would shrink."""
    # Each estimated variance: name -> [coefficient in the total, value, degrees of freedom].
    terms: dict[str, list[float]] = {}

    def add(name: str, coefficient: float, value: float, df: float) -> None:
        terms.setdefault(name, [0.0, value, df])[0] += coefficient

    # Within-run variances, each side's own; a side whose runs are single rounds borrows
    # the other side's (assuming the rounds of both vary alike).
    within: dict[str, tuple[str, float, int]] = {
        "current": ("current", current.within_variance, current.within_df),
        "baseline": ("baseline", baseline.within_variance, baseline.within_df),
    }
    if current.within_df == 0 and baseline.within_df > 0:
        within["current"] = within["baseline"]
    if baseline.within_df == 0 and current.within_df > 0:
        within["baseline"] = within["current"]
    within_known = within["current"][2] > 0
    spread = 1 / current.k + 1 / baseline.k  # drift enters the current and baseline centres
    floor2 = drift_floor**2
    known = 0.0
    estimated = False
    drift2 = floor2
    if baseline.k >= 2:
        # E[variance of the baseline's run means] = drift^2 + sigma_w^2 mean(1/m): it stands
        # for the drift and within-run parts of both centres, the given drift as a floor
        # under it. Conservative by a baseline run's round noise in the current run's share;
        # the package docstring says why not the unbiased form.
        name_b, s2_b, df_b = within["baseline"]
        within_part = s2_b * baseline.mean_inverse_n if within_known else 0.0
        run_means = baseline.run_mean_variance
        estimated = run_means > floor2 + within_part
        if estimated:
            add("run means", spread, run_means, baseline.k - 1)
            drift2 = run_means - within_part
        else:
            known = spread * floor2
            if within_known:
                add(name_b, spread * baseline.mean_inverse_n, s2_b, df_b)
    else:
        # One baseline run: drift^2 (1/k_current + 1) + s_b^2 / m, the floor given (known).
        known = spread * floor2
        if within_known:
            name_b, s2_b, df_b = within["baseline"]
            add(name_b, baseline.mean_inverse_n, s2_b, df_b)
    reducible = 0.0
    if within_known:
        # The current side's within part: Var(mean of its run means) = s2 sum(1/n) / k^2.
        name_c, s2_c, df_c = within["current"]
        reducible = current.mean_inverse_n / current.k * s2_c
        add(name_c, current.mean_inverse_n / current.k, s2_c, df_c)
    variance = known + math.fsum(c * v for c, v, _ in terms.values())
    denominator = math.fsum((c * v) ** 2 / n for c, v, n in terms.values() if n > 0)
    df = variance**2 / denominator if denominator > 0 else math.inf
    return variance, df, math.sqrt(drift2), estimated, reducible
