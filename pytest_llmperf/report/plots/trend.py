"""Figures of a history of runs: each headline metric over the runs, in time order, with each
run's confidence interval where its record has per-round samples, the steps `llmperf trend`
finds marked where they happened, and a newest run that regressed against the runs before it
circled. The analysis is `pytest_llmperf.results.trend`'s, so figure and command agree.

One figure per metric, one line per series (a test on one engine, model and hardware). With
one series the axis is the metric's own; with several, each series is drawn relative to its
median (100% = its median), so that a test at 10 tok/s and one at 6,000 share an axis and a
20% step looks the same size in both.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import spec_for
from pytest_llmperf.measure.stats import estimate
from pytest_llmperf.report.plots.common import (
    MAX_SERIES,
    VERDICT_COLORS,
    Plot,
    label_text,
    new_figure,
    palette,
    run_labels,
)
from pytest_llmperf.results.runs import Run
from pytest_llmperf.results.trend import HEADLINE_METRICS, Series, Trend, analyse, when

HISTORY_TITLE = "History: {metric}"
#: Past this many runs, only some runs get an x tick label.
MAX_TICK_LABELS = 16


def trend_title(metric: str) -> str:
    return HISTORY_TITLE.format(metric=metric)


def trend_plots(runs: Sequence[Run]) -> list[Plot]:
    """One figure per headline metric the runs record (none for fewer than three runs)."""
    try:
        trend = analyse(runs)
    except LLMPerfUsageError as exc:
        return [Plot(trend_title("headline metrics"), None, str(exc))]
    plots = []
    for metric in HEADLINE_METRICS:
        series = [s for s in trend.series if s.metric == metric]
        if series:
            plots.append(_metric_plot(trend, metric, series))
    return plots


def _metric_plot(trend: Trend, metric: str, series: list[Series]) -> Plot:
    spec = spec_for(metric)
    better = spec.better if spec is not None else "?"
    title = trend_title(metric)
    # Series that stepped or regressed first: what the figure is for, should some be left out.
    marked = {id(t.series) for t in trend.steps} | {id(j.series) for j in trend.regressed}
    ordered = sorted(series, key=lambda s: id(s) not in marked)
    shown = ordered[:MAX_SERIES]
    relative = len(shown) > 1
    figure = new_figure(f"{title} ({better} is better)", 11, 5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    several_keys = len({s.key.test for s in shown}) < len(shown)
    for index, (s, color) in enumerate(zip(shown, palette(len(shown)), strict=True)):
        scale = 100 / statistics.median(p.value for p in s.points) if relative else 1.0
        _draw_series(ax, trend, s, (color, index), scale, several_keys)
    unit = spec.unit if spec is not None else ""
    ax.set_ylabel("% of the series' median" if relative else f"{metric} ({unit})")
    _run_axis(ax, trend.runs)
    ax.grid(True, alpha=0.3)
    # Beside the axes: below, it would meet the slanted run names.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    notes = []
    if len(trend.runs) < trend.step_runs:
        notes.append(
            f"Steps are found in {trend.step_runs} runs or more; these {len(trend.runs)} runs "
            "show the series only."
        )
    if len(series) > len(shown):
        notes.append(f"Showing {len(shown)} of {len(series)} series, those that moved first.")
    if any(p.samples for s in shown for p in s.points):
        notes.append("Bars: each run's 95% interval from its per-round samples.")
    return Plot(title, figure, " ".join(notes))


def _draw_series(
    ax: Axes, trend: Trend, series: Series, style: tuple[Any, int], scale: float, engine: bool
) -> None:
    """A series' points and intervals, its segment levels between steps, the steps marked.
    `style`: its color and its place among the figure's series (labels of steps at one run
    are stacked by it)."""
    color, order = style
    name = series.key.test.split("::", 1)[-1]
    label = f"{name} ({series.key.label})" if engine else name
    xs, ys, lows, highs = [], [], [], []
    for point in series.points:
        centre = low = high = point.value
        if len(point.samples) >= 2:
            interval = estimate(point.samples, series.scale)
            centre, low, high = interval.centre, interval.low, interval.high
        xs.append(point.position)
        ys.append(centre * scale)
        lows.append((centre - low) * scale)
        highs.append((high - centre) * scale)
    errors = [lows, highs] if any(lows) or any(highs) else None
    ax.errorbar(
        xs,
        ys,
        yerr=errors,
        fmt="-o",
        color=color,
        markersize=4,
        capsize=2,
        linewidth=1,
        label=label_text(label),
    )
    steps = sorted((t for t in trend.steps if t.series is series), key=lambda t: t.step.index)
    edges = [0, *(t.step.index for t in steps), len(series.points)]
    levels = [t.step.before for t in steps[:1]] + [t.step.after for t in steps]
    for start, end, level in zip(edges, edges[1:], levels, strict=False):
        first, last = series.points[start].position, series.points[end - 1].position
        ax.hlines(level * scale, first - 0.3, last + 0.3, colors=[color], linestyles="dotted")
    for t in steps:
        x = t.point.position
        mark = VERDICT_COLORS["regressed" if t.worse else "improved"]
        ax.axvline(x - 0.5, color=mark, linestyle="--", linewidth=1)
        change = f"{t.relative:+.0%}" if t.relative is not None else "step"
        # At the top of the axes, one line per series: steps of several tests at one run
        # would overlap at their levels.
        ax.annotate(
            label_text(f"{change} {'worse' if t.worse else 'better'}"),
            (x - 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            textcoords="offset points",
            xytext=(4, -12 - 11 * order),
            fontsize=8,
            color=color,  # the series' own: which line stepped
            fontweight="bold",
        )
    for judgement in trend.regressed:
        if judgement.series is series:
            newest = series.points[-1]
            ax.scatter(
                [newest.position],
                [ys[-1]],
                s=160,
                facecolors="none",
                linewidths=2,
                edgecolors=VERDICT_COLORS["regressed"],
            )
            ax.annotate(
                "regressed",
                (newest.position, ys[-1]),
                textcoords="offset points",
                xytext=(-10, -16),
                fontsize=8,
                color=VERDICT_COLORS["regressed"],
            )


def _run_axis(ax: Axes, runs: Sequence[Run]) -> None:
    """The runs in time order, labelled by start date and short name (some, when many)."""
    from matplotlib.ticker import FixedLocator

    every = max(1, -(-len(runs) // MAX_TICK_LABELS))
    ticks = list(range(0, len(runs), every))
    if ticks[-1] != len(runs) - 1:
        ticks.append(len(runs) - 1)  # the newest run is always named
    names = run_labels(runs)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticks(ticks, [label_text(f"{when(runs[i])}\n{names[i]}") for i in ticks], fontsize=7)
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlim(-0.7, len(runs) - 0.3)
    ax.set_xlabel("runs, oldest first (started; run)")
