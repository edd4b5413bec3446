"""Figures of one or more runs: throughput against concurrency, scaling, latency
percentiles, TTFT distributions, accuracy against throughput."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from pytest_llmperf.results.runs import Run

if TYPE_CHECKING:
    pass

from pytest_llmperf.report.plots.common import (
    ACCURACY_TITLE,
    LATENCIES,
    LATENCY_TITLE,
    MAX_SERIES,
    MAX_TESTS,
    PERCENTILES,
    SCALING_TITLE,
    THROUGHPUT_TITLE,
    TTFT_TITLE,
    Plot,
    PlotSeries,
    concurrency,
    concurrency_axis,
    label_text,
    legend_below,
    log_if_wide,
    new_figure,
    palette,
    run_labels,
    test_views,
)
from pytest_llmperf.report.plots.pareto import pareto_plots
from pytest_llmperf.report.plots.server import server_plots


def throughput_series(runs: Sequence[Run]) -> list[PlotSeries]:
    """output_tok_per_s against concurrency, one series per run, test function and engine.
    Tests that generated nothing (multiple choice scores, it does not decode) are left out."""
    grouped: dict[tuple[str, str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for test in test_views(runs):
        x, y = concurrency(test.record), test.metric("output_tok_per_s")
        if x is None or not y:
            continue
        name = test.record.config.name
        key = (test.run_label, test.function, test.record.engine or "?")
        grouped[key].append((x, y, name))
    return [
        PlotSeries(f"{run} {function} ({engine})".strip(), sorted(points))
        for (run, function, engine), points in grouped.items()
    ]


def throughput_plot(runs: Sequence[Run]) -> Plot:
    series = throughput_series(runs)
    if not series:
        return Plot(
            THROUGHPUT_TITLE,
            None,
            "No test reports output_tok_per_s with a known "
            "concurrency (max_num_seqs, max_concurrency or a request count).",
        )
    shown = series[:MAX_SERIES]
    figure = new_figure(THROUGHPUT_TITLE, 10, 5.5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    for line, color in zip(shown, palette(len(shown)), strict=True):
        xs = [x for x, _, _ in line.points]
        ys = [y for _, y, _ in line.points]
        style = "-o" if line.distinct else "o"
        ax.plot(xs, ys, style, color=color, label=label_text(line.label))
        if len(line.points) <= 12:  # the config names, where they still fit
            for x, y, name in line.points:
                if name and name != "default":
                    ax.annotate(
                        label_text(name),
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=7,
                        color=color,
                    )
    ax.set_xlabel("concurrency: max_num_seqs / max_concurrency, capped by requests per round")
    ax.set_ylabel("output tokens/s")
    concurrency_axis(ax, [x for line in shown for x, _, _ in line.points])
    log_if_wide(ax, [y for line in shown for _, y, _ in line.points], axis="y")
    ax.grid(True, alpha=0.3)
    legend_below(ax, len(shown))
    note = _left_out(len(series), len(shown), "series")
    if any(not s.distinct for s in shown):
        note += (
            " Series with several configurations at one concurrency are drawn as points "
            "only: they differ in more than concurrency."
        )
    return Plot(THROUGHPUT_TITLE, figure, note.strip())


def _left_out(total: int, shown: int, what: str) -> str:
    return f"Showing the first {shown} of {total} {what}." if total > shown else ""


def scaling_series(runs: Sequence[Run]) -> tuple[list[PlotSeries], str]:
    """Efficiency against concurrency, and where it came from.

    Tests that report `efficiency` (or `speedup`, divided here by their concurrency) are
    taken as they are. Otherwise it is derived from each throughput series measured once
    per concurrency: efficiency(n) = tput(n) / ((n / n0) * tput(n0)), n0 the series' least
    concurrency, so 1.0 is linear scaling from n0 (from n0 = 1: tput(n) / (n * tput(1))).
    """
    reported: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for test in test_views(runs):
        x = concurrency(test.record)
        efficiency, speedup = test.metric("efficiency"), test.metric("speedup")
        if efficiency is None and speedup is not None and x:
            efficiency = speedup / x
        if efficiency is not None:
            name = test.record.config.name
            reported[(test.run_label, test.function)].append((x or 1.0, efficiency, name))
    if reported:
        series = [
            PlotSeries(f"{run} {function}".strip(), sorted(points))
            for (run, function), points in reported.items()
        ]
        return series, "as the tests report it (efficiency, or speedup / concurrency)"
    derived = []
    for line in throughput_series(runs):
        if not line.distinct or len(line.points) < 2:
            continue
        x0, y0, _ = line.points[0]
        points = [(x, y / ((x / x0) * y0), name) for x, y, name in line.points]
        derived.append(PlotSeries(line.label, points))
    return derived, "derived: tput(n) / ((n / n0) * tput(n0)), n0 the least concurrency"


def scaling_plot(runs: Sequence[Run]) -> Plot:
    series, source = scaling_series(runs)
    if not series:
        return Plot(
            SCALING_TITLE,
            None,
            "No test reports efficiency or speedup, and no "
            "throughput series has two or more concurrencies measured once each.",
        )
    shown = series[:MAX_SERIES]
    figure = new_figure(SCALING_TITLE, 10, 5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    ax.axhline(1.0, color="#555555", linestyle="--", linewidth=1, label="linear scaling")
    for line, color in zip(shown, palette(len(shown)), strict=True):
        xs = [x for x, _, _ in line.points]
        ys = [y for _, y, _ in line.points]
        ax.plot(xs, ys, "-o", color=color, label=label_text(line.label))
    ax.set_title(label_text(f"efficiency {source}"), fontsize=9)
    ax.set_xlabel("concurrency")
    ax.set_ylabel("efficiency (1.0 = linear)")
    concurrency_axis(ax, [x for line in shown for x, _, _ in line.points])
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    legend_below(ax, len(shown) + 1)
    return Plot(SCALING_TITLE, figure, _left_out(len(series), len(shown), "series"))


# -- latency ---------------------------------------------------------------------------


def latency_plot(runs: Sequence[Run]) -> Plot:
    """p50 / p90 / p99 of TTFT, TPOT and end-to-end latency, one group of bars per test."""
    tests = [
        t for t in test_views(runs) if any(t.metric(f"{m}.p50") is not None for m in LATENCIES)
    ]
    if not tests:
        return Plot(LATENCY_TITLE, None, "No test reports ttft_ms, tpot_ms or e2e_ms.")
    shown = tests[:MAX_TESTS]
    height = 2.2 + 0.45 * len(shown)
    figure = new_figure(LATENCY_TITLE, 12, height)
    axes = figure.subplots(1, len(LATENCIES), sharey=True)
    bar = 0.8 / len(PERCENTILES)
    positions = list(range(len(shown)))
    colors = ["#4c72b0", "#dd8452", "#c44e52"]
    for ax, metric in zip(axes, LATENCIES, strict=True):
        values = []
        for i, (stat, color) in enumerate(zip(PERCENTILES, colors, strict=True)):
            widths = [t.metric(f"{metric}.{stat}") or 0.0 for t in shown]
            values += widths
            offsets = [p - 0.4 + bar * (i + 0.5) for p in positions]
            ax.barh(offsets, widths, height=bar, color=color, label=stat)
        log_if_wide(ax, values)
        ax.set_title(f"{metric} (ms)", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(positions, [label_text(t.label) for t in shown], fontsize=8)
    axes[0].invert_yaxis()  # shared: the first test on top, as in the table
    axes[-1].legend(fontsize=8, loc="lower right")
    return Plot(LATENCY_TITLE, figure, _left_out(len(tests), len(shown), "tests"))


def ttft_samples(runs: Sequence[Run]) -> list[tuple[str, list[float]]]:
    """Per-request TTFTs (successful requests), by test, in the order tests ran."""
    samples: list[tuple[str, list[float]]] = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        by_test: dict[str, list[float]] = defaultdict(list)
        for record in run.requests():
            ttft = record.get("ttft_ms")
            if record.get("error") is None and isinstance(ttft, (int, float)) and ttft >= 0:
                by_test[str(record.get("test_id"))].append(float(ttft))
        for test_id, values in by_test.items():
            name = test_id.split("::", 1)[-1]
            samples.append((f"{label} {name}".strip(), sorted(values)))
    return samples


def ttft_plot(runs: Sequence[Run]) -> Plot:
    """The empirical CDF of TTFT per test: unlike histograms, many tests overlay legibly and
    every percentile reads off the y axis."""
    samples = ttft_samples(runs)
    if not samples:
        return Plot(
            TTFT_TITLE,
            None,
            "No measured request with a time to first token (requests*.jsonl is missing or empty).",
        )
    shown = samples[:MAX_SERIES]
    figure = new_figure(TTFT_TITLE, 10, 5.5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    for (label, values), color in zip(shown, palette(len(shown)), strict=True):
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        ax.step(
            values,
            fractions,
            where="post",
            color=color,
            label=label_text(f"{label} (n={len(values)})"),
        )
    log_if_wide(ax, [v for _, values in shown for v in values])
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    legend_below(ax, len(shown))
    return Plot(TTFT_TITLE, figure, _left_out(len(samples), len(shown), "tests"))


# -- accuracy --------------------------------------------------------------------------


def accuracy_points(runs: Sequence[Run]) -> list[tuple[str, float, float, str]]:
    """(label, questions per second, score, score's metric) of every scored test.

    The score is `accuracy`, else `exact_match`; the rate is `questions_per_s`, else
    `requests_per_s` (a generation task sends one request per question). Both are per
    question, so multiple-choice and generation tests share the axis; output tok/s would
    not, as scoring choices decodes nothing."""
    points = []
    for test in test_views(runs):
        metric = next((m for m in ("accuracy", "exact_match") if test.metric(m) is not None), None)
        rate = test.metric("questions_per_s") or test.metric("requests_per_s")
        if metric is None or not rate:
            continue
        score = test.metric(metric)
        assert score is not None
        points.append((test.label, rate, score, metric))
    return points


def accuracy_plot(runs: Sequence[Run]) -> Plot:
    points = accuracy_points(runs)
    if not points:
        return Plot(
            ACCURACY_TITLE,
            None,
            "No test reports accuracy or exact_match with questions_per_s or requests_per_s.",
        )
    shown = points[:MAX_SERIES]
    figure = new_figure(ACCURACY_TITLE, 10, 5.5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    for (label, rate, score, metric), color in zip(shown, palette(len(shown)), strict=True):
        marker = "o" if metric == "accuracy" else "s"
        ax.scatter(
            [rate],
            [score],
            color=color,
            marker=marker,
            s=60,
            label=label_text(f"{label} ({metric})"),
        )
    ax.set_xlabel("questions/s (requests/s where a test reports no questions_per_s)")
    ax.set_ylabel("accuracy / exact match")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(left=0, right=max(rate for _, rate, _, _ in shown) * 1.15)
    ax.grid(True, alpha=0.3)
    legend_below(ax, len(shown))
    return Plot(ACCURACY_TITLE, figure, _left_out(len(points), len(shown), "tests"))


def run_plots(runs: Sequence[Run]) -> list[Plot]:
    """Every figure of `runs`, those without data as a note saying what is missing (the
    servers' reads and the SLO searches only where there are some)."""
    return [
        throughput_plot(runs),
        latency_plot(runs),
        ttft_plot(runs),
        *server_plots(runs),
        *pareto_plots(runs),
        scaling_plot(runs),
        accuracy_plot(runs),
    ]


def run_figures(runs: list[Run]) -> list[tuple[str, Figure]]:
    """(title, figure) of every figure `runs` have data for."""
    return [(p.title, p.figure) for p in run_plots(runs) if p.figure is not None]


# -- comparison ------------------------------------------------------------------------
