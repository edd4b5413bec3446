"""Judging a test's measurements against its bounds: met, missed or inconclusive.

A bound is judged on the metric's per-round samples (`measure.samples`), not on the one
headline number: missed only when the test is confident the setup is beyond the bound
(a one-sided t-test on the logs of the samples at error rate `alpha`, with the bound's
recorded noise as the drift between runs: `measure.stats.judge_bound`), met when the
confidence bound sits inside it, inconclusive otherwise. Holm's correction over the bounds of
one test keeps the chance that any of its bounds is missed by an unchanged setup at `alpha`
(`measure.stats.correct`; the method and its error rates are in `measure.stats`).

Judged as values, like a plain comparison, are: metrics whose spread is not noise
(`MetricSpec.judged_exactly`: counts, flags, failure rates, accuracy of a deterministic model),
metrics with fewer than two samples (a test of one round; telemetry, derived and extra
metrics, which have no per-round values), and bounds of 0 (`failure_rate: {max: 0}`). A metric
not measured misses its bound. An interval never softens these.

A missed bound fails the test; an inconclusive one is shown and recorded, and fails the test
only under `--llmperf-strict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_llmperf.measure.metrics import spec_for
from pytest_llmperf.measure.stats import BoundVerdict, Estimate, correct, judge_bound
from pytest_llmperf.tables import render_table
from pytest_llmperf.thresholds.files import Bound, Measured, ThresholdSet, limit_text

#: The family-wise error rate of one test's bounds (`--llmperf-alpha`).
DEFAULT_ALPHA = 0.01

Outcome = Literal["met", "missed", "inconclusive"]
#: How a bound was judged: on the samples, as a value, or not at all (nothing measured).
How = Literal["samples", "value", "not measured"]
Samples = Mapping[str, Sequence[float | int | None]]


@dataclass(frozen=True)
class Verdict:
    """One bound against one test's measurement."""

    bound: Bound
    #: The test's headline value of the metric (None: not measured).
    measured: float | None
    outcome: Outcome
    #: Headroom of the headline value: relative to the limit (absolute when it is 0), < 0
    #: beyond it.
    margin: float | None
    how: How
    #: The samples' centre and interval at the verdict's confidence (None: judged as a value).
    estimate: Estimate | None = None
    #: The one-sided p-value of "the setup keeps the bound", after Holm (None: a value).
    p_value: float | None = None
    #: The share of the verdict's variance more rounds would shrink (rounds until decided).
    reducible: float = 0.0

    @property
    def ok(self) -> bool:
        """Not missed (met, or inconclusive)."""
        return self.outcome != "missed"


@dataclass(frozen=True)
class CheckResult:
    test_id: str
    verdicts: list[Verdict]
    alpha: float = DEFAULT_ALPHA

    @property
    def passed(self) -> bool:
        """No bound missed (inconclusive ones pass unless the run is strict)."""
        return all(v.ok for v in self.verdicts)

    @property
    def failed_verdicts(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    @property
    def inconclusive(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.outcome == "inconclusive"]

    def table(self) -> str:
        """Metric, measured (with its interval), bound, margin, p and verdict, then where the
        bounds that were missed or undecided were written."""
        rows = [
            (
                v.bound.metric,
                _measured_text(v),
                v.bound.describe(),
                _margin_text(v),
                "-" if v.p_value is None else f"{v.p_value:.2g}",
                {"met": "ok", "missed": "MISS", "inconclusive": "inconclusive"}[v.outcome],
            )
            for v in self.verdicts
        ]
        header = ("metric", "measured", "bound", "margin", "p", "verdict")
        shown = [v for v in self.verdicts if v.outcome != "met"]
        sources = [f"thresholds from {v.bound.file}:{v.bound.line}" for v in shown]
        return "\n".join([render_table(header, rows), *sources])


def check(
    thresholds: ThresholdSet,
    test_id: str,
    measured: Measured,
    samples: Samples | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> CheckResult:
    """Each bound that applies to `test_id` against its measurements (see the docstring)."""
    bounds = thresholds.bounds_for(test_id)
    judged: list[tuple[int, BoundVerdict]] = []
    verdicts: list[Verdict] = []
    for index, bound in enumerate(bounds):
        value = _number(measured.get(bound.metric))
        finite = _finite(samples.get(bound.metric, ()) if samples else ())
        spec = spec_for(bound.metric)
        if value is None:
            verdicts.append(Verdict(bound, None, "missed", None, "not measured"))
        elif spec is None or spec.judged_exactly or len(finite) < 2:
            verdicts.append(_by_value(bound, value))
        else:
            verdicts.append(_by_value(bound, value))  # replaced once the test is corrected
            judged += [(index, side) for side in _sides(bound, finite, alpha)]
    if judged:
        corrected = correct([side for _, side in judged], alpha)
        for index in {i for i, _ in judged}:
            sides = [c for (i, _), c in zip(judged, corrected, strict=True) if i == index]
            verdicts[index] = _by_samples(verdicts[index], sides)
    return CheckResult(test_id, verdicts, alpha)


def _sides(bound: Bound, samples: Sequence[float], alpha: float) -> list[BoundVerdict]:
    """A bound's limits judged one by one: a `min` as a lower limit, a `max` as an upper."""
    drift = bound.noise or 0.0
    sides = []
    if bound.min is not None:
        sides.append(judge_bound(samples, bound.min, "higher", alpha, drift=drift))
    if bound.max is not None:
        sides.append(judge_bound(samples, bound.max, "lower", alpha, drift=drift))
    return sides


def _by_samples(by_value: Verdict, sides: Sequence[BoundVerdict]) -> Verdict:
    outcome: Outcome
    if any(s.outcome == "missed" for s in sides):
        outcome = "missed"
    elif all(s.outcome == "met" for s in sides):
        outcome = "met"
    else:
        outcome = "inconclusive"
    worst = min(sides, key=lambda s: s.p_adjusted)
    return Verdict(
        by_value.bound,
        by_value.measured,
        outcome,
        by_value.margin,
        "samples",
        worst.estimate,
        worst.p_adjusted,
        max(s.reducible_share for s in sides if not s.decided)
        if outcome == "inconclusive"
        else 0.0,
    )


def _by_value(bound: Bound, value: float) -> Verdict:
    # NaN compares false with everything, so it misses every bound.
    ok = (bound.min is None or value >= bound.min) and (bound.max is None or value <= bound.max)
    margin = None if math.isnan(value) else min(margins(bound, value))[0]
    return Verdict(bound, value, "met" if ok else "missed", margin, "value")


def margins(bound: Bound, value: float) -> list[tuple[float, bool]]:
    """Headroom per side as (margin, relative): relative to the limit, absolute if it is 0."""
    gaps: list[tuple[float, float]] = []
    if bound.min is not None:
        gaps.append((value - bound.min, bound.min))
    if bound.max is not None:
        gaps.append((bound.max - value, bound.max))
    return [(gap / abs(limit), True) if limit else (gap, False) for gap, limit in gaps]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _finite(values: Sequence[float | int | None]) -> list[float]:
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def _measured_text(verdict: Verdict) -> str:
    if verdict.measured is None:
        return "not measured"
    text = limit_text(verdict.measured)
    width = verdict.estimate.relative_half_width if verdict.estimate is not None else None
    return f"{text} ±{width * 100:.1f}%" if width is not None else text


def _margin_text(verdict: Verdict) -> str:
    if verdict.measured is None or verdict.margin is None:
        return "-"
    margin, relative = min(margins(verdict.bound, verdict.measured))
    return f"{margin * 100:+.1f}%" if relative else f"{margin:+.4g}"
