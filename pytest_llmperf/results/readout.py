"""What a test's record says, as text and as columns: the same words in every view.

The terminal summary, the HTML report, the dashboard and the exports (`results.exports`) all
show a test's headline metrics with their interval, each bound's and each baseline metric's
verdict, and the rounds it took, through these functions, so that they never disagree:

    output_tok_per_s   6,193 ±2.1%                 (tables.format_interval)
    bound              output_tok_per_s >= 3,000: met (p=0.99)
    baseline metric    output_tok_per_s -3.1% [-6.0%, +0.2%] within -10%: ok (p=0.71)
    rounds             5 (every verdict decided)

The interval is the 95% interval of the metric's per-round samples (`TestRecord.interval`,
`measure.stats.estimate`: a t interval on the logs for positive metrics); `p` is a
verdict's one-sided p-value after Holm's correction over the test's metrics (small: missed or
regressed); a verdict judged on the headline value alone says `value` instead.
"""

from __future__ import annotations

from typing import Any

from pytest_llmperf.results.record import BoundCheck, JudgedChange, TestRecord
from pytest_llmperf.tables import format_interval, format_number

#: Why a test's measured rounds ended (`StopRecord.reason`), in words.
STOP_REASONS = {
    "fixed": "fixed",
    "decided": "every verdict decided",
    "max_rounds": "round budget spent",
    "max_seconds": "time budget spent",
    "cannot_decide": "more rounds could not decide",
    "ended": "ended early",
}


def headline(test: TestRecord, metric: str) -> str:
    """The metric's headline value with its interval's relative half-width (`6,193 ±2.1%`),
    or the value alone where it was not measured round by round."""
    found = test.interval(metric)
    width = found.relative_half_width if found is not None else None
    return format_interval(test.metrics_flat.get(metric), width)


def interval_columns(test: TestRecord, metric: str) -> dict[str, float | None]:
    """`METRIC`, `METRIC.low`, `METRIC.high`: the headline value and its 95% interval (null
    where the metric has none), for tables of numbers (CSV, pandas)."""
    found = test.interval(metric)
    return {
        metric: test.metric(metric),
        f"{metric}.low": found.low if found is not None else None,
        f"{metric}.high": found.high if found is not None else None,
    }


def p_text(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def bound_limits(check: BoundCheck) -> str:
    """`>= 3,000`, `<= 120`, or `>= 1 and <= 9`."""
    sides = []
    if check.min is not None:
        sides.append(f">= {format_number(check.min)}")
    if check.max is not None:
        sides.append(f"<= {format_number(check.max)}")
    return " and ".join(sides) or "-"


def bound_verdict(check: BoundCheck) -> str:
    """`met (p=0.99)`, `missed (p=0.0012)`, `inconclusive (p=0.04)`, or for a bound judged
    as a value `met (value)`, `missed (not measured)`."""
    if check.how == "samples" and check.p is not None:
        return f"{check.verdict} (p={p_text(check.p)})"
    return f"{check.verdict} ({check.how or 'value'})"


def bound_text(check: BoundCheck) -> str:
    """One bound and its verdict: `output_tok_per_s >= 3,000: met (p=0.99)`."""
    return f"{check.metric} {bound_limits(check)}: {bound_verdict(check)}"


def change_interval(change: JudgedChange) -> str:
    """The change and its confidence bounds: relative (`-3.1% [-6.0%, +0.2%]`) for a
    relative tolerance, in the metric's units otherwise; `-` where not compared."""
    relative = change.tolerance is not None and change.tolerance.endswith("%")
    text = "-" if change.relative is None else f"{change.relative:+.1%}"
    if change.low is not None and change.high is not None:
        if relative:
            text += f" [{change.low:+.1%}, {change.high:+.1%}]"
        else:
            text += f" [{change.low:+.3g}, {change.high:+.3g}]"
    return text


def change_verdict(change: JudgedChange) -> str:
    """`ok (p=0.71)`, `regressed (p=0.001)`, `inconclusive (p=0.2)`; `unreliable` with why."""
    if change.verdict == "unreliable":
        return f"not judged ({change.note})" if change.note else "not judged"
    if change.p is None:
        return f"{change.verdict} (value)"
    return f"{change.verdict} (p={p_text(change.p)})"


def change_text(change: JudgedChange) -> str:
    """One baseline metric and its verdict:
    `output_tok_per_s -3.1% [-6.0%, +0.2%] within -10%: ok (p=0.71)`."""
    tolerance = f" within {change.tolerance}" if change.tolerance else ""
    return f"{change.metric} {change_interval(change)}{tolerance}: {change_verdict(change)}"


def rounds_text(test: TestRecord) -> str:
    """The measured rounds and why they ended: `3 (fixed)`, `5 (every verdict decided)`,
    `10 (round budget spent, 1 undecided)`."""
    stop = test.stop
    if stop is None:
        return f"{test.rounds} (fixed)"
    why = STOP_REASONS.get(stop.reason, stop.reason)
    undecided = f", {stop.undecided} undecided" if stop.undecided else ""
    return f"{stop.rounds} ({why}{undecided})"


def rounds_taken(test: TestRecord) -> int:
    return test.stop.rounds if test.stop is not None else test.rounds


def thresholds_verdict(test: TestRecord) -> str:
    """The test's bounds in one word: none, met, missed or inconclusive (the worst)."""
    verdicts = {c.verdict for c in test.thresholds.checked}
    for worst in ("missed", "inconclusive", "met"):
        if worst in verdicts:
            return worst
    return "none"


def baseline_verdict(test: TestRecord) -> str:
    """The test against its baseline in one word: none (not compared), not found,
    regressed, inconclusive or ok (the worst)."""
    if test.baseline is None:
        return "none"
    if not test.baseline.found:
        return "not found"
    verdicts = {c.verdict for c in test.baseline.judged}
    for worst in ("regressed", "inconclusive"):
        if worst in verdicts:
            return worst
    return "ok"


def verdict_columns(test: TestRecord) -> dict[str, Any]:
    """The test's rounds and verdicts as columns: `rounds`, `stop`, `thresholds`,
    `bounds` (each bound's text, `; `-joined), `baseline`, `baseline_metrics` (likewise)."""
    judged = test.baseline.judged if test.baseline is not None else ()
    return {
        "rounds": rounds_taken(test),
        "stop": test.stop.reason if test.stop is not None else "fixed",
        "thresholds": thresholds_verdict(test),
        "bounds": "; ".join(bound_text(c) for c in test.thresholds.checked),
        "baseline": baseline_verdict(test),
        "baseline_metrics": "; ".join(change_text(c) for c in judged),
    }


#: What an A/B test's view shows of each side and as B/A (`measure.turns`), where measured.
AB_METRICS = (
    "output_tok_per_s",
    "requests_per_s",
    "ttft_ms.p50",
    "ttft_ms.p90",
    "tpot_ms.p50",
    "e2e_ms.p90",
)


def ratio_text(test: TestRecord, name: str) -> str:
    """A ratio B/A with the 95% interval of its pairs (`1.52x [1.31, 1.77]`), or the value
    alone where the pairs did not vary or were too few."""
    value = test.metric(name)
    if value is None:
        return "-"
    found = test.interval(name)
    if found is None:
        return f"{value:.3g}x"
    return f"{value:.3g}x [{found.low:.3g}, {found.high:.3g}]"


def ab_rows(test: TestRecord) -> list[tuple[str, str, str, str]]:
    """An A/B test's metrics: (metric, A, B, B/A with its interval), A and B each with their
    rounds' interval; none for a test that is no A/B test."""
    if test.ab is None:
        return []
    return [
        (metric, headline(test, f"a.{metric}"), headline(test, f"b.{metric}"), ratio)
        for metric in AB_METRICS
        if (ratio := ratio_text(test, f"ratio.{metric}")) != "-"
    ]


def ab_text(test: TestRecord) -> str:
    """How an A/B test ran and its speedup: `interleaved, 4 pairs (ABBABAAB): speedup 1.52x
    [1.31, 1.77]`; '' for a test that is no A/B test."""
    ab = test.ab
    if ab is None:
        return ""
    return (
        f"{ab.get('mode')}, {ab.get('pairs')} pairs ({ab.get('order')}): "
        f"speedup {ratio_text(test, 'speedup')}"
    )
