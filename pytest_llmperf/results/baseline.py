"""Judging a test against baseline runs (`--llmperf-compare`, `llmperf compare`): its per-round
samples against theirs, so that the verdict knows the noise of both.

Each metric with a tolerance (`results.compare`'s, the user's first) and per-round samples on
both sides is judged by `measure.stats.judge_change`: regressed when the test is confident the
change is worse than the tolerance (one-sided, at error rate `alpha`, corrected by Holm over
the test's metrics), ok when the confidence bound of the change sits within it, inconclusive
otherwise. The baseline may be several runs (`--llmperf-compare latest:5`, or run ids joined by
commas): their means' spread then measures the drift between runs, which is what this
project's machines show most; with one baseline run the drift is the floor `drift` (the
standard deviation, between runs, of a run's mean log: `--llmperf-drift`, measured by
`bench/gate_power.py` and stated in BENCHMARKS.md). Metrics judged as values
(`MetricSpec.judged_exactly`), metrics without samples on either side (older runs, telemetry,
derived metrics) and absolute tolerances of 0 keep the point comparison of `results.compare`.
Values the tool knows are bad are never judged (`measure.reliability`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from pytest_llmperf.measure.metrics import spec_for
from pytest_llmperf.measure.stats import ChangeVerdict, Scale, correct, judge_change
from pytest_llmperf.results.changes import (
    Change,
    Verdict,
    compare_metrics,
    judged,
    record_unreliable,
)
from pytest_llmperf.results.record import BaselineRecord, JudgedChange, TestRecord
from pytest_llmperf.results.runs import Run
from pytest_llmperf.results.tolerances import Tolerance

#: The error rate of one test's judgements against its baseline (`--llmperf-alpha`).
DEFAULT_ALPHA = 0.01
#: The drift floor with one baseline run (`--llmperf-drift`): see the module docstring.
DEFAULT_DRIFT = 0.02

Samples = Mapping[str, Sequence[float | int | None]]


@dataclass(frozen=True)
class BaselineCheck:
    """One test against its baseline run(s) (`--llmperf-compare`)."""

    #: The baseline runs' ids, joined by commas.
    base_run_id: str
    #: False when no baseline run has such a test (nothing to regress against).
    found: bool
    changes: list[Change]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regressed"]

    @property
    def inconclusive(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "inconclusive"]

    def as_record(self) -> BaselineRecord:
        return BaselineRecord(
            run_id=self.base_run_id,
            found=self.found,
            passed=not self.regressions,
            judged=tuple(
                JudgedChange(
                    c.metric,
                    c.base,
                    c.new,
                    c.relative,
                    c.verdict,
                    c.tolerance,
                    c.note,
                    c.low,
                    c.high,
                    c.p,
                    c.drift,
                )
                for c in self.changes
                if judged(c)
            ),
        )


def finite(values: Sequence[float | int | None]) -> list[float]:
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def judge_test(
    baselines: Sequence[Run],
    key: str,
    flat: Mapping[str, object],
    samples: Samples,
    tolerances: Sequence[Tolerance],
    alpha: float = DEFAULT_ALPHA,
    drift: float = DEFAULT_DRIFT,
) -> BaselineCheck:
    """The test `key` (its headline `flat` metrics and per-round `samples`) against the same
    test in `baselines` (the newest first is the one whose values are shown)."""
    run_ids = ",".join(run.run_id for run in baselines)
    befores = [t for t in (run.test(key) for run in baselines) if t is not None]
    if not befores:
        return BaselineCheck(run_ids, False, [])
    shown = befores[0]
    changes = compare_metrics(key, shown.metrics_flat, flat, tolerances, record_unreliable(shown))
    judged_changes = judge_changes(changes, samples, befores, tolerances, alpha, drift)
    return BaselineCheck(run_ids, True, judged_changes)


def judge_changes(
    changes: Sequence[Change],
    samples: Samples,
    befores: Sequence[TestRecord],
    tolerances: Sequence[Tolerance],
    alpha: float,
    drift: float,
) -> list[Change]:
    """`changes` (point verdicts) with every metric that can be judged on samples judged so."""
    judged: list[tuple[int, ChangeVerdict]] = []
    for index, change in enumerate(changes):
        verdict = _judge_one(change, samples, befores, tolerances, alpha, drift)
        if verdict is not None:
            judged.append((index, verdict))
    out = list(changes)
    if judged:
        corrected = correct([v for _, v in judged], alpha)
        for (index, _), verdict in zip(judged, corrected, strict=True):
            out[index] = _with_verdict(out[index], verdict)
    return out


def _judge_one(
    change: Change,
    samples: Samples,
    befores: Sequence[TestRecord],
    tolerances: Sequence[Tolerance],
    alpha: float,
    drift: float,
) -> ChangeVerdict | None:
    """The sampled verdict of one metric, or None where the point comparison stands."""
    spec = spec_for(change.metric)
    tolerance = next((t for t in tolerances if t.matches(change.metric)), None)
    if (
        spec is None
        or spec.judged_exactly
        or tolerance is None
        or change.verdict
        in (
            "added",
            "removed",
            "undirected",
            "unreliable",
        )
    ):
        return None
    if not tolerance.relative and tolerance.amount == 0:
        return None
    current = finite(samples.get(change.metric, ()))
    baseline = [finite(t.samples.get(change.metric, ())) for t in befores]
    baseline = [run for run in baseline if run]
    if len(current) < 2 or not baseline or sum(map(len, baseline)) < 2:
        return None
    scale: Scale = "log" if tolerance.relative else "linear"
    floor = drift if scale == "log" else drift * abs(change.base or 0.0)
    return judge_change(
        [current], baseline, spec.better, tolerance.amount, alpha, drift=floor, scale=scale
    )


def _with_verdict(change: Change, verdict: ChangeVerdict) -> Change:
    """A change as the sampled verdict says: the centres compared, the interval of the change
    (relative on the log scale, in units on the linear one) and the corrected p-value."""
    relative = verdict.scale == "log"
    outcome: Verdict = verdict.outcome
    if outcome == "ok" and _confidently_better(verdict):
        outcome = "improved"
    return replace(
        change,
        verdict=outcome,
        low=verdict.low - 1 if relative else verdict.low,
        high=verdict.high - 1 if relative else verdict.high,
        p=verdict.p_adjusted,
        drift=verdict.drift,
        reducible=verdict.reducible_share,
    )


def _confidently_better(verdict: ChangeVerdict) -> bool:
    """The whole interval of the change is better than the tolerance's mirror image: an
    improvement beyond the tolerance, with confidence."""
    if verdict.scale == "log":
        better = 1 + verdict.tolerance if verdict.direction == "higher" else 1 - verdict.tolerance
    else:
        better = verdict.tolerance if verdict.direction == "higher" else -verdict.tolerance
    return verdict.low > better if verdict.direction == "higher" else verdict.high < better
