"""`llmperf trend`: the steps and the newest run's judgement of `pytest_llmperf.results.trend`,
as tables (the one renderer, `pytest_llmperf.tables`), and the exit status."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_llmperf.measure.stats import ChangeVerdict
from pytest_llmperf.results.runs import Run
from pytest_llmperf.results.trend import (
    DEFAULT_ALPHA,
    DEFAULT_DRIFT,
    DEFAULT_WINDOW,
    REFERENCE_RUNS,
    STEP_ALPHA,
    NewestJudgement,
    Point,
    TrendStep,
    analyse,
    when,
)
from pytest_llmperf.tables import render_table

#: What fails the command: `any` a step for the worse anywhere in a series, or the newest
#: run regressed; `newest` only the newest run regressed (the nightly job's gate: an old
#: step was judged on its own night).
FAIL_ON = ("any", "newest")


def trend_command(
    runs: Sequence[Run],
    metrics: Sequence[str] = (),
    test_glob: str | None = None,
    window: int = DEFAULT_WINDOW,
    tolerances: Sequence[str] = (),
    alpha: float = DEFAULT_ALPHA,
    fail_on: str = "any",
    drift: float = DEFAULT_DRIFT,
) -> int:
    """Print the steps and the newest run's judgements; 1 on a regression (see `FAIL_ON`)."""
    trend = analyse(runs, metrics, test_glob, window, tolerances, alpha, drift=drift)
    first, last = trend.runs[0], trend.runs[-1]
    tests = len({s.key.test for s in trend.series})
    print(
        f"trend: {len(trend.runs)} runs, {first.run_id} ({when(first)}) to {last.run_id} "
        f"({when(last)}); {len(trend.series)} series of {tests} test(s)"
    )
    print(f"\nsteps (change points at level {STEP_ALPHA} per series, {trend.step_runs}+ runs)")
    print(_indent(steps_table(trend.steps)) if trend.steps else "  none found")
    judged = [j for j in (*trend.newest, *trend.since_start) if j.verdict is not None]
    print(
        f"\nnewest run {last.run_id} against up to {trend.window} runs before it, since "
        f"each series' last step (alpha {trend.alpha} over {len(judged)} judgement(s), Holm)"
    )
    print(_indent(newest_table(trend.newest)) if trend.newest else "  nothing to judge")
    print(
        f"\nnewest run {last.run_id} against the first {REFERENCE_RUNS} runs of each series "
        f"(since its last step), pooled, drift between runs {trend.drift:.0%} (a creep that "
        "never makes a step; same Holm correction)"
    )
    print(
        _indent(newest_table(trend.since_start))
        if trend.since_start
        else f"  nothing to judge (a series needs {REFERENCE_RUNS + 2} runs)"
    )
    if trend.notes:
        print("\nnotes:")
        print("\n".join(f"  {note}" for note in trend.notes))
    worse, regressed = trend.regression_steps, [j for j in trend.newest if j.regressed]
    print()
    if worse:
        ignored = " (reported; --fail-on newest)" if fail_on == "newest" else ""
        print(f"{len(worse)} step(s) for the worse{ignored}:")
        for s in worse:
            print(
                f"  {s.series.key.test}  {s.series.metric}: {_relative(s.relative)} "
                f"at {s.point.run.run_id}"
            )
    else:
        print("no step for the worse")
    if regressed:
        print(f"{len(regressed)} metric(s) regressed against the last {trend.window} runs:")
        for j in regressed:
            change = _change(j.verdict) if j.verdict else "-"
            print(f"  {j.series.key.test}  {j.series.metric}: {change}")
    else:
        print(f"the newest run regressed nowhere against the last {trend.window} runs")
    crept = trend.crept
    if crept:
        print(
            f"{len(crept)} metric(s) regressed since the start of their series, beyond their "
            f"tolerance and a drift of {trend.drift:.0%} between runs (a creep):"
        )
        for j in crept:
            change = _change(j.verdict) if j.verdict else "-"
            print(
                f"  {j.series.key.test}  {j.series.metric}: {change} against "
                f"{_span(j.window)}, pooled"
            )
    else:
        print("the newest run regressed nowhere against the start of its series")
    return 1 if regressed or crept or (worse and fail_on == "any") else 0


def _span(points: Sequence[Point]) -> str:
    """The runs of a judgement's baseline: `A` or `A to C (3 runs)`."""
    if len(points) == 1:
        return points[0].run.run_id
    return f"{points[0].run.run_id} to {points[-1].run.run_id} ({len(points)} runs)"


def steps_table(steps: Sequence[TrendStep]) -> str:
    rows = [
        (
            s.series.key.test,
            s.series.key.label,
            s.series.metric,
            s.point.run.run_id,
            when(s.point.run),
            _number(s.step.before),
            _number(s.step.after),
            _relative(s.relative),
            "REGRESSION" if s.worse else "improvement",
            f"{s.step.p_value:.2g}",
            "rounds" if s.series.uses_samples else "values",
        )
        for s in steps
    ]
    header = ("test", "series", "metric", "run", "started", "before", "after", "change")
    return render_table((*header, "verdict", "p", "from"), rows)


def newest_table(judgements: Sequence[NewestJudgement]) -> str:
    rows = []
    for j in judgements:
        v = j.verdict
        rows.append(
            (
                j.series.key.test,
                j.series.key.label,
                j.series.metric,
                str(len(j.window)),
                _number(v.baseline if v else None),
                _number(j.newest.value if v is None else v.current),
                _change(v) if v else "-",
                j.series.tolerance.text.partition(":")[2] if j.series.tolerance else "-",
                ("REGRESSED" if v.bad else v.outcome) if v else "not judged",
                f"{v.p_adjusted:.2g}" if v else "-",
                "rounds" if v and all(p.samples for p in (*j.window, j.newest)) else "values",
            )
        )
    header = ("test", "series", "metric", "runs", "baseline", "newest", "change", "tolerance")
    return render_table((*header, "verdict", "p", "from"), rows)


def _change(verdict: ChangeVerdict) -> str:
    """The change as the verdict judged it: relative on the log scale, else absolute."""
    if verdict.scale == "log":
        return _relative(verdict.change - 1)
    return f"{verdict.change:+.3g}"


def _relative(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
