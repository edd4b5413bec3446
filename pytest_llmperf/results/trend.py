"""History: a series of runs per test and metric, where each stepped, and whether the newest
run regressed against the runs before it (`llmperf trend`, the report's History section).

Runs are put in time order (`started_at`). A series is one test's values of one metric over
the runs, kept apart by engine, model and hardware: a test run on hf and on vLLM, or on a CPU
and on an H100, makes two series, never one (a step between engines is not a regression).
Each run contributes its per-round samples of the metric where its record has them
(`TestRecord.samples`) and every run of the series does, else its one value of
`metrics_flat` (a headline value and the centre of the rounds that gave it are not the same
number, so the two are never mixed in one series).

Two questions, two methods (`pytest_llmperf.measure.stats` explains both):

Steps (`change_points`)
    Where in the series the metric's level changed, by binary segmentation with a
    permutation test per split, at level `STEP_ALPHA` per series. It names the run where a
    step happened and its size, but cannot see a step in the last one or two runs, nor any
    step in fewer than `fewest_runs()` (12) runs: only a few of the orders of so few runs
    put a step at the same place. With many series, about `STEP_ALPHA` of the unchanged
    ones still show a step: narrow the question with `--test` and `--metric`.
Newest run (`judge_change`)
    The newest run against the `window` runs of the same series before it, pooled as
    baseline runs (their spread estimates the drift between runs), with the tolerances of
    `llmperf compare` (`pytest_llmperf.results.compare`): regressed when confidently worse
    than the tolerance allows, ok when confidently within it, inconclusive otherwise.
    Where a step was found, only the runs since the last one are the baseline. Holm's
    correction runs over every test and metric judged, so that an unchanged newest run is
    called regressed anywhere with probability at most `alpha`. This is the check that the
    nightly job fails on.
Newest run against the series' start (`judge_change`, the drift floor)
    A regression that creeps in by a few percent a night never makes a step, and the check
    above reads the spread of nights that crept too as drift between runs: after eight
    nights of 5% each (30% in all), the newest is still within what seven creeping nights
    "drift". So the newest run is also judged against the first `REFERENCE_RUNS` runs of the
    series (since its last step), pooled into one baseline, with the same tolerances, and
    with the drift between runs taken as the floor `drift` (`--llmperf-drift`'s default,
    2%) rather than estimated from the runs' spread, which a creep would inflate. It runs
    where at least one run lies between those and the newest, and joins the same Holm
    correction: regressed when the change since the start is confidently worse than the
    tolerance allows beyond the drift. An unchanged series fails it only through a fall of
    more than the tolerance; where runs truly drift by more than the floor (a shared 2-core
    machine moves throughput by 10%), give a larger one (`llmperf trend --drift`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import Direction, metric_hint, spec_for
from pytest_llmperf.measure.stats import (
    ChangeVerdict,
    Scale,
    Step,
    change_points,
    correct,
    fewest_runs,
    judge_change,
)
from pytest_llmperf.results import baseline
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run, find_runs, is_run_dir, open_run, time_order
from pytest_llmperf.results.tolerances import Tolerance, parse_tolerances

#: Followed by default, where a test records them.
HEADLINE_METRICS = ("output_tok_per_s", "ttft_ms.p90", "tpot_ms.p90", "e2e_ms.p90", "accuracy")
#: Earlier runs the newest is judged against.
DEFAULT_WINDOW = 7
#: Error rate of the newest run's judgement, over every test and metric judged.
DEFAULT_ALPHA = 0.01
#: Level of each series' change-point search (`change_points`' own default).
STEP_ALPHA = 0.005
#: The newest run and at least two before it: one earlier run leaves the drift between runs
#: unknown.
FEWEST_EARLIER = 2
#: The first runs of a series (since its last step) the newest is also judged against, pooled.
REFERENCE_RUNS = 3
#: The drift between runs assumed against them: `--llmperf-drift`'s default.
DEFAULT_DRIFT = baseline.DEFAULT_DRIFT


@dataclass(frozen=True)
class SeriesKey:
    """What keeps series apart: a test, on one engine, model and hardware."""

    test: str
    engine: str
    model: str
    hardware: str

    @property
    def label(self) -> str:
        return f"{self.engine}, {self.model}, {self.hardware}"


@dataclass(frozen=True)
class Point:
    """One run's measurement of a series' metric."""

    run: Run
    #: The run's place among all the runs given, in time order (0: the oldest).
    position: int
    value: float
    #: Its per-round samples, () when its record has none.
    samples: tuple[float, ...]


@dataclass(frozen=True)
class Series:
    key: SeriesKey
    metric: str
    direction: Direction
    #: The scale steps and verdicts are judged on (`pytest_llmperf.measure.stats.Scale`).
    scale: Scale
    #: The tolerance of the newest run's judgement, None when the metric has none.
    tolerance: Tolerance | None
    points: tuple[Point, ...]

    def runs_of(self, points: Sequence[Point]) -> list[list[float]]:
        """Each point as a run of samples: its rounds when all of `points` have them, else
        its one value."""
        if all(p.samples for p in points):
            return [list(p.samples) for p in points]
        return [[p.value] for p in points]

    @property
    def uses_samples(self) -> bool:
        return all(p.samples for p in self.points)


@dataclass(frozen=True)
class TrendStep:
    """A step `change_points` found in a series, at the run `point`."""

    series: Series
    step: Step

    @property
    def point(self) -> Point:
        return self.series.points[self.step.index]

    @property
    def relative(self) -> float | None:
        """after / before - 1 of the segments' centres; None when before is 0."""
        before, after = self.step.before, self.step.after
        return after / before - 1 if before != 0 else None

    @property
    def worse(self) -> bool:
        """A regression by the metric's direction."""
        rise = self.step.after > self.step.before
        return rise if self.series.direction == "lower" else not rise


@dataclass(frozen=True)
class NewestJudgement:
    """The newest run of a series against the runs before it (`window`), or against the
    first runs of the series, pooled (`since_start`; see the module docstring)."""

    series: Series
    window: tuple[Point, ...]
    #: None when the metric has no tolerance: shown, not judged.
    verdict: ChangeVerdict | None

    @property
    def newest(self) -> Point:
        return self.series.points[-1]

    @property
    def regressed(self) -> bool:
        return self.verdict is not None and self.verdict.bad


@dataclass(frozen=True)
class Trend:
    #: The runs given, oldest first.
    runs: tuple[Run, ...]
    series: tuple[Series, ...]
    steps: tuple[TrendStep, ...]
    newest: tuple[NewestJudgement, ...]
    #: What could not be judged, and why; series kept apart.
    notes: tuple[str, ...]
    window: int
    alpha: float
    step_runs: int
    #: The newest run against the first runs of each series (the drift floor `drift`).
    since_start: tuple[NewestJudgement, ...] = ()
    drift: float = DEFAULT_DRIFT

    @property
    def regression_steps(self) -> list[TrendStep]:
        return [s for s in self.steps if s.worse]

    @property
    def regressed(self) -> list[NewestJudgement]:
        """Every series whose newest run regressed, by either check (once each)."""
        recent = [j for j in self.newest if j.regressed]
        seen = {id(j.series) for j in recent}
        return recent + [j for j in self.crept if id(j.series) not in seen]

    @property
    def crept(self) -> list[NewestJudgement]:
        """The newest runs that regressed against the start of their series."""
        return [j for j in self.since_start if j.regressed]


def collect_runs(refs: Sequence[str | Path], results_dir: Path) -> list[Run]:
    """The runs `refs` name (run folders, run ids, `latest~N`, or results folders standing
    for all their runs; none: every run under `results_dir`), once each, oldest first."""
    runs: list[Run] = []
    for ref in refs or (results_dir,):
        path = Path(ref)
        if path.is_dir() and not is_run_dir(path):
            found = find_runs(path)
            if not found:
                raise LLMPerfUsageError(
                    f"{path}: not a run folder (no summary.json, run.json or tests.jsonl), "
                    "and no run folder in it"
                )
            runs.extend(found)
        else:
            runs.append(open_run(ref, results_dir))
    unique = {run.path.resolve(): run for run in runs}
    return sorted(unique.values(), key=time_order)


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """Metric names as the user gave them, each known to the metric table."""
    for metric in metrics:
        if spec_for(metric) is None:
            raise LLMPerfUsageError(f"--metric: unknown metric {metric!r}{metric_hint(metric)}")
    return list(dict.fromkeys(metrics))


def analyse(
    runs: Sequence[Run],
    metrics: Sequence[str] = (),
    test_glob: str | None = None,
    window: int = DEFAULT_WINDOW,
    tolerances: Sequence[str] = (),
    alpha: float = DEFAULT_ALPHA,
    step_alpha: float = STEP_ALPHA,
    drift: float = DEFAULT_DRIFT,
) -> Trend:
    """Steps and the newest run's judgements over `runs` (any order), for `metrics` (default:
    `HEADLINE_METRICS` where recorded) of the tests whose key matches `test_glob`; `drift`
    is the floor of the drift between runs against the start of each series."""
    runs = sorted(runs, key=time_order)
    step_runs = fewest_runs(step_alpha)
    fewest = FEWEST_EARLIER + 1
    if len(runs) < fewest:
        raise LLMPerfUsageError(
            f"{len(runs)} run(s) given; a trend needs at least {fewest} (the newest judged "
            f"against {FEWEST_EARLIER} or more before it), and {step_runs} to find steps"
        )
    if window < FEWEST_EARLIER:
        raise LLMPerfUsageError(
            f"--window: {window} earlier run(s) cannot tell drift from a regression; "
            f"give {FEWEST_EARLIER} or more"
        )
    if not 0 < alpha < 0.5:
        raise LLMPerfUsageError(f"--alpha: {alpha} is not strictly between 0 and 0.5")
    if not 0 <= drift < 1:
        raise LLMPerfUsageError(f"--drift: {drift} is not at least 0 and below 1")
    chosen = check_metrics(metrics)
    parsed = parse_tolerances(tolerances)
    records = _records(runs, test_glob)
    if not records:
        where = f" matching --test {test_glob!r}" if test_glob else ""
        raise LLMPerfUsageError(f"no test{where} in the {len(runs)} runs given")
    notes = _split_notes(records)
    series = _series(records, chosen or HEADLINE_METRICS, parsed)
    for metric in chosen:
        if not any(s.metric == metric for s in series):
            notes.append(f"no test records {metric}")
    steps, short = _steps(series, step_runs, step_alpha)
    if short:
        notes.append(
            f"steps need {step_runs} runs of a series (change points at level {step_alpha}); "
            f"fewer here: " + "; ".join(f"{key.test} ({key.label}): {n}" for key, n in short)
        )
    newest, start, few, absent = _newest(series, steps, runs[-1], window, alpha, drift)
    if absent:
        notes.append(
            "not in the newest run, so not judged: "
            + "; ".join(f"{key.test} ({key.label})" for key in absent)
        )
    if few:
        notes.append(
            f"the newest run is judged against {FEWEST_EARLIER} or more earlier runs; fewer "
            "for: " + "; ".join(f"{key.test} ({key.label}): {n}" for key, n in few)
        )
    return Trend(
        tuple(runs),
        tuple(series),
        tuple(steps),
        tuple(newest),
        tuple(notes),
        window,
        alpha,
        step_runs,
        tuple(start),
        drift,
    )


def _records(
    runs: Sequence[Run], test_glob: str | None
) -> dict[SeriesKey, list[tuple[int, Run, TestRecord]]]:
    """Each series' test records, oldest first (the last, when a run measured a key twice)."""
    pattern = _glob(test_glob) if test_glob else None
    found: dict[SeriesKey, list[tuple[int, Run, TestRecord]]] = {}
    for position, run in enumerate(runs):
        hardware = str(run.summary.get("hardware") or "?")
        latest = {test.key: test for test in run.tests}
        for key, test in latest.items():
            if pattern is not None and not pattern.fullmatch(key):
                continue
            model = test.engine_config.model or test.engine_info.model
            series_key = SeriesKey(key, test.engine, model, hardware)
            found.setdefault(series_key, []).append((position, run, test))
    return found


def _split_notes(records: dict[SeriesKey, list[tuple[int, Run, TestRecord]]]) -> list[str]:
    by_test: dict[str, list[SeriesKey]] = {}
    for key in records:
        by_test.setdefault(key.test, []).append(key)
    return [
        f"{test}: not mixed, one series per engine, model and hardware: "
        + "; ".join(f"{k.label} ({len(records[k])} runs)" for k in keys)
        for test, keys in by_test.items()
        if len(keys) > 1
    ]


def _series(
    records: dict[SeriesKey, list[tuple[int, Run, TestRecord]]],
    metrics: Sequence[str],
    tolerances: Sequence[Tolerance],
) -> list[Series]:
    series = []
    for key, measured in records.items():
        for metric in metrics:
            spec = spec_for(metric)
            assert spec is not None  # checked (or one of the headline metrics)
            points = [
                Point(run, position, value, test.samples_of(metric))
                for position, run, test in measured
                if (value := test.metric(metric)) is not None
            ]
            if not points:
                continue
            tolerance = next((t for t in tolerances if t.matches(metric)), None)
            relative = tolerance.relative if tolerance is not None else spec.unit != "ratio"
            positive = all(v > 0 for p in points for v in (p.value, *p.samples))
            scale: Scale = "log" if relative and positive else "linear"
            series.append(Series(key, metric, spec.better, scale, tolerance, tuple(points)))
    return series


def _steps(
    series: Sequence[Series], step_runs: int, step_alpha: float
) -> tuple[list[TrendStep], list[tuple[SeriesKey, int]]]:
    """The steps of each series long enough to have any; the keys of those too short."""
    steps: list[TrendStep] = []
    short: dict[SeriesKey, int] = {}
    for s in series:
        if len(s.points) < step_runs:
            short[s.key] = max(short.get(s.key, 0), len(s.points))
            continue
        runs: list[float | Sequence[float]] = list(s.runs_of(s.points))
        steps += (TrendStep(s, step) for step in change_points(runs, s.scale, step_alpha))
    return steps, list(short.items())


def _newest(
    series: Sequence[Series],
    steps: Sequence[TrendStep],
    newest: Run,
    window: int,
    alpha: float,
    drift: float,
) -> tuple[
    list[NewestJudgement], list[NewestJudgement], list[tuple[SeriesKey, int]], list[SeriesKey]
]:
    """Each series the newest run measured, against up to `window` points before it, none
    before the series' last step (runs at another level are not its baseline, and would
    widen the drift), and against the series' first `REFERENCE_RUNS` points since that step
    (pooled, with the drift floor); Holm's correction over all of them together."""
    recent: list[NewestJudgement] = []
    start: list[NewestJudgement] = []
    few: dict[SeriesKey, int] = {}
    absent: set[SeriesKey] = set()
    for s in series:
        if s.points[-1].run is not newest:
            absent.add(s.key)  # an old verdict, given when its run was the newest
            continue
        since = max((t.step.index for t in steps if t.series is s), default=0)
        earlier = s.points[max(since, len(s.points) - 1 - window) : -1]
        if len(earlier) < FEWEST_EARLIER:
            few[s.key] = len(earlier)
            continue
        verdict = None
        if s.tolerance is not None:
            runs = s.runs_of([*earlier, s.points[-1]])
            verdict = _judge(s, s.tolerance, runs[-1:], runs[:-1], alpha, 0.0)
        recent.append(NewestJudgement(s, tuple(earlier), verdict))
        first = s.points[since:-1][:REFERENCE_RUNS]
        if s.tolerance is not None and len(s.points[since:-1]) > REFERENCE_RUNS:
            runs = s.runs_of([*first, s.points[-1]])
            pooled = [[v for run in runs[:-1] for v in run]]
            verdict = _judge(s, s.tolerance, runs[-1:], pooled, alpha, drift)
            start.append(NewestJudgement(s, tuple(first), verdict))
    both = [*recent, *start]
    verdicts = [j.verdict for j in both if j.verdict is not None]
    corrected = iter(correct(verdicts, alpha)) if verdicts else iter(())
    both = [
        NewestJudgement(j.series, j.window, next(corrected) if j.verdict is not None else None)
        for j in both
    ]
    return (
        both[: len(recent)],
        both[len(recent) :],
        list(few.items()),
        sorted(absent, key=lambda k: k.test),
    )


def _judge(
    s: Series,
    tolerance: Tolerance,
    current: list[list[float]],
    baseline: list[list[float]],
    alpha: float,
    drift: float,
) -> ChangeVerdict:
    """`judge_change` on the tolerance's scale; a relative `drift` floor is carried over to a
    linear tolerance's units by the baseline's mean (as `results.baseline` does)."""
    scale: Scale = "log" if tolerance.relative else "linear"
    if scale == "linear" and drift:
        values = [v for run in baseline for v in run]
        drift *= abs(sum(values) / len(values))
    try:
        return judge_change(
            current, baseline, s.direction, tolerance.amount, alpha, drift=drift, scale=scale
        )
    except ValueError as exc:  # a relative fall of 100% or more allows anything
        raise LLMPerfUsageError(f"--tolerance {tolerance.text!r}: {exc}") from None


def _glob(pattern: str) -> re.Pattern[str]:
    # Only `*` and `?`: fnmatch's `[...]` classes would swallow a parametrized id's brackets.
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.DOTALL)


def when(run: Run) -> str:
    """A run's start as `2026-12-05 13:58` (as written, when not an ISO time)."""
    text = run.started_at
    iso = re.match(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})", text)
    return f"{iso[1]} {iso[2]}" if iso else text or "?"
