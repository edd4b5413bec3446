"""What `bench/gate_power.py` reports: each arm's failure rate with its Clopper-Pearson
interval, time to a verdict and rounds taken, the drift between baseline runs, and the
markdown tables for BENCHMARKS.md.

Clopper-Pearson: the exact binomial interval. For x failures in n trials at confidence
1 - a, the lower end is the p at which P(X >= x) = a/2 and the upper end the p at which
P(X <= x) = a/2 (0 when x = 0, 1 when x = n). Both are found by bisection on the binomial
CDF, summed in log space: the plugin's statistics (`pytest_llmperf.measure.stats`) have no
public beta quantile, and the plugin keeps scipy out of its dependencies. A unit test
checks it against `scipy.stats.beta`. The interval assumes independent trials; trials of
one block share a baseline run, so the effective number of trials can be smaller.

Drift between runs: the baseline runs, each a fresh pytest process seconds to minutes after
the one before, give per test and metric the mean log value of each run. The differences
between successive runs have variance 2 (drift^2 + within-run variance / rounds) when runs
are independent around a level; their median absolute value / (0.6745 sqrt 2) estimates the
square root of the bracket as a standard deviation would for normal differences, and
subtracting the median within-run variance / rounds (each variance scaled so that its median
is the variance: `_median_unbiased_variance`) leaves drift^2, what `--llmperf-drift`
stands for (`pytest_llmperf.results.baseline`). Successive runs, not all runs, so that a slow
trend over the hour does not count as drift between runs minutes apart; medians, so that one
run another process disturbed (a 4.3 step in logs, seen) does not count as a drift of 0.5
for the hour.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

#: The median absolute value of a standard normal variable.
NORMAL_MAD = 0.6744897501960817
#: Metrics whose drift between baseline runs is reported (the headline ones).
DRIFT_METRICS = ("output_tok_per_s", "ttft_ms.p90", "tpot_ms.p90", "e2e_ms.p90")

TrialVerdict = Literal["failed", "inconclusive", "passed", "error"]


def _log_binomial_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logs = [_log_binomial_pmf(i, n, p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def _bisect(increasing: bool, target: float, f: Any) -> float:
    """The p in (0, 1) where the monotone `f(p)` crosses `target`, to 1e-12."""
    low, high = 0.0, 1.0
    while high - low > 1e-12:
        middle = (low + high) / 2
        if (f(middle) < target) == increasing:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def clopper_pearson(failures: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact two-sided interval of a binomial rate (module docstring)."""
    if trials < 1 or not 0 <= failures <= trials:
        raise ValueError(f"{failures} failures in {trials} trials: not a binomial count")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence}: expected a number in (0, 1)")
    tail = (1 - confidence) / 2
    low = (
        0.0
        if failures == 0
        else _bisect(True, tail, lambda p: 1 - binomial_cdf(failures - 1, trials, p))
    )
    high = (
        1.0
        if failures == trials
        else _bisect(False, tail, lambda p: binomial_cdf(failures, trials, p))
    )
    return low, high


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between order statistics; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """p10, median and p90 of `values`."""
    return {
        "p10": percentile(values, 10),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
    }


@dataclass(frozen=True)
class Target:
    """What the issue asks of an arm: a failure rate at most, or at least, `rate`."""

    kind: Literal["at_most", "at_least"]
    rate: float

    def met(self, rate: float) -> bool:
        return rate <= self.rate if self.kind == "at_most" else rate >= self.rate

    def __str__(self) -> str:
        return f"{'<=' if self.kind == 'at_most' else '>='} {self.rate:.0%}"


@dataclass(frozen=True)
class TestResult:
    """One test of one trial, as its record in tests.jsonl and pytest's report say."""

    __test__: ClassVar[bool] = False  # a class named Test*: not for pytest to collect

    test: str
    #: pytest's outcome: passed, failed, skipped.
    outcome: str
    #: What the arm's gate said: regressed (baseline) or missed (thresholds) count as bad.
    bad: bool
    inconclusive: bool
    #: Seconds from the measurement's start to its verdict (the call, less any engine load).
    seconds: float
    rounds: int
    stop: str
    #: Metrics the gate judged bad.
    bad_metrics: tuple[str, ...] = ()
    #: Bounds missed in a baseline arm (the thresholds are judged there too, as for users).
    also_missed: tuple[str, ...] = ()
    #: Why the test has no verdict (no record, ...): the trial counts as an error.
    error: str | None = None
    #: Why pytest failed the test when the gate did not fail it (the test's own assertion
    #: after `measure()`, say): the verdict stands, the failure is counted apart.
    other_failure: str | None = None
    #: The measurement's throughput, to check the instrument's slowdown.
    output_tok_per_s: float | None = None


@dataclass(frozen=True)
class Trial:
    """One run of the chosen tests in one arm."""

    index: int
    arm: str
    block: int
    tests: tuple[TestResult, ...]

    @property
    def verdict(self) -> TrialVerdict:
        if any(t.error for t in self.tests):
            return "error"
        if any(t.bad for t in self.tests):
            return "failed"
        return "inconclusive" if any(t.inconclusive for t in self.tests) else "passed"

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.tests)


@dataclass(frozen=True)
class ArmSpec:
    """An arm: which gate judges it, how much slower the engine is, how many trials."""

    name: str
    gate: Literal["baseline", "thresholds"]
    slowdown: float
    trials: int
    target: Target | None = None
    #: Trials that run in their own process (the baseline runs), not in the trial sessions.
    fresh_process: bool = False


@dataclass
class ArmReport:
    spec: ArmSpec
    trials: list[Trial] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        done = self.trials
        verdicts = [t.verdict for t in done]
        failures = verdicts.count("failed")
        rate = failures / len(done) if done else None
        interval = clopper_pearson(failures, len(done)) if done else None
        tests = sorted({r.test for t in done for r in t.tests})
        bad_metrics: dict[str, int] = {}
        for trial in done:
            for result in trial.tests:
                for metric in result.bad_metrics:
                    name = f"{short(result.test)}: {metric}"
                    bad_metrics[name] = bad_metrics.get(name, 0) + 1
        return {
            "name": self.spec.name,
            "gate": self.spec.gate,
            "slowdown": self.spec.slowdown,
            "fresh_process": self.spec.fresh_process,
            "planned": self.spec.trials,
            "trials": len(done),
            "failures": failures,
            "inconclusive": verdicts.count("inconclusive"),
            "errors": verdicts.count("error"),
            "failed_otherwise": sum(1 for t in done if any(r.other_failure for r in t.tests)),
            "other_failures": _count(
                f"{short(r.test)}: {r.other_failure}"
                for t in done
                for r in t.tests
                if r.other_failure
            ),
            "rate": rate,
            "ci95": list(interval) if interval is not None else None,
            "target": str(self.spec.target) if self.spec.target else None,
            "target_met": self.spec.target.met(rate)
            if self.spec.target is not None and rate is not None
            else None,
            "failures_by_test": {
                test: sum(1 for t in done for r in t.tests if r.test == test and r.bad)
                for test in tests
            },
            "bad_metrics": dict(sorted(bad_metrics.items(), key=lambda kv: -kv[1])),
            "also_missed_bounds": sum(1 for t in done if any(r.also_missed for r in t.tests)),
            "seconds_to_verdict": spread([t.seconds for t in done]),
            "rounds": {
                test: spread([float(r.rounds) for t in done for r in t.tests if r.test == test])
                for test in tests
            },
            "stops": _count(r.stop for t in done for r in t.tests),
            "measuring_s": sum(t.seconds for t in done),
            "output_tok_per_s": {
                test: [
                    r.output_tok_per_s
                    for t in done
                    for r in t.tests
                    if r.test == test and r.output_tok_per_s is not None
                ]
                for test in tests
            },
        }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def short(test: str) -> str:
    """A test id without its file: `test_decode_throughput[batch8]`."""
    return test.rsplit("::", 1)[-1]


def drift(runs: Sequence[Mapping[str, Mapping[str, Sequence[float]]]]) -> dict[str, Any]:
    """Per test and metric, the drift between successive runs (module docstring): `runs` is,
    per baseline run in order, test -> metric -> its per-round samples."""
    out: dict[str, Any] = {}
    tests = sorted({test for run in runs for test in run})
    for test in tests:
        for metric in DRIFT_METRICS:
            series = [_logs(run.get(test, {}).get(metric, ())) for run in runs]
            series = [logs for logs in series if len(logs) >= 2]
            if len(series) < 3:
                continue
            means = [statistics.fmean(logs) for logs in series]
            steps = [abs(b - a) for a, b in itertools.pairwise(means)]
            between = (statistics.median(steps) / (NORMAL_MAD * math.sqrt(2))) ** 2
            variances = [_median_unbiased_variance(logs) for logs in series]
            within = statistics.median(
                [v / len(logs) for v, logs in zip(variances, series, strict=True)]
            )
            out.setdefault(short(test), {})[metric] = {
                "runs": len(series),
                "between_run_sd": math.sqrt(between),
                "within_run_sd": math.sqrt(statistics.median(variances)),
                "drift_sd": math.sqrt(max(between - within, 0.0)),
            }
    return out


def _median_unbiased_variance(values: Sequence[float]) -> float:
    """The sample variance scaled so that its median is the true variance for normal values:
    with k = n - 1 degrees of freedom it is variance * k / median(chi2_k), the median by
    Wilson-Hilferty (within 1.5% of the exact 2 ln 2 at k = 2). Few rounds make the plain
    variance's median low (0.69 of the truth at 3 rounds)."""
    k = len(values) - 1
    return statistics.variance(values) / (1 - 2 / (9 * k)) ** 3


def _logs(values: Sequence[float]) -> list[float]:
    return [math.log(v) for v in values if isinstance(v, (int, float)) and v > 0]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _range(s: Mapping[str, float | None], digits: int = 1) -> str:
    if s["p50"] is None:
        return "-"
    return f"{s['p50']:.{digits}f} ({s['p10']:.{digits}f}-{s['p90']:.{digits}f})"


def markdown(report: Mapping[str, Any]) -> str:
    """The arms table, what failed tests otherwise, and the drift table, for BENCHMARKS.md."""
    lines = [
        "| arm | trials | failed | rate | 95% CI (Clopper-Pearson) | target | inconclusive "
        "| errors | failed otherwise | s to verdict, p50 (p10-p90) "
        "| rounds per test, p50 (p10-p90) | measured slowdown |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    others: dict[str, int] = {}
    for arm in report["arms"]:
        if not arm["trials"]:
            lines.append(f"| {arm['name']} | 0 of {arm['planned']} |" + " |" * 10)
            continue
        low, high = arm["ci95"]
        target = arm["target"] or "-"
        if arm["target_met"] is not None:
            target += " (met)" if arm["target_met"] else " (**not met**)"
        rounds = "; ".join(f"{short(t)} {_range(s, 0)}" for t, s in arm["rounds"].items())
        planned = "" if arm["trials"] == arm["planned"] else f" of {arm['planned']}"
        slowdown = "; ".join(
            f"{short(t)} {v:.0%}" for t, v in arm.get("measured_slowdown", {}).items()
        )
        lines.append(
            f"| {arm['name']} | {arm['trials']}{planned} | {arm['failures']} "
            f"| {_pct(arm['rate'])} | {low:.1%} - {high:.1%} | {target} | {arm['inconclusive']} "
            f"| {arm['errors']} | {arm['failed_otherwise']} "
            f"| {_range(arm['seconds_to_verdict'], 2)} | {rounds} | {slowdown or '-'} |"
        )
        for why, count in arm["other_failures"].items():
            others[why] = others.get(why, 0) + count
    if others:
        lines += ["", "Tests pytest failed while the gate did not (the verdicts above stand):", ""]
        lines += [f"- {why} ({count} tests)" for why, count in sorted(others.items())]
    if report.get("drift"):
        lines += [
            "",
            "| test | metric | baseline runs | drift sd (log) | between successive runs sd "
            "| within-run sd |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for test, metrics in report["drift"].items():
            for metric, d in metrics.items():
                lines.append(
                    f"| {test} | {metric} | {d['runs']} | {d['drift_sd']:.3f} "
                    f"| {d['between_run_sd']:.3f} | {d['within_run_sd']:.3f} |"
                )
    return "\n".join(lines)
