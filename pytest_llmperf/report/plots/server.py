"""What the server saw, over each test's measured rounds: its KV-cache use, the requests it
ran and those it queued, from the reads in `server_metrics*.jsonl` (`measure.server`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from pytest_llmperf.report.plots.common import (
    MAX_SERIES,
    Plot,
    label_text,
    new_figure,
    palette,
    run_labels,
)
from pytest_llmperf.results.runs import Run

SERVER_TITLE = "Server metrics over the measured rounds"
#: (quantity in the reads, axis label): the levels a read gives, one panel each.
PANELS = (
    ("kv_cache_usage", "KV-cache use (share)"),
    ("running", "requests running"),
    ("waiting", "requests waiting"),
)

#: One test's series: label, and (seconds since its first read, {quantity: value}) per read.
Series = tuple[str, list[tuple[float, dict[str, float]]]]


def server_series(runs: Sequence[Run]) -> list[Series]:
    """Each test's reads in time order, by test, in the order tests ran; reads that failed
    (a line with `error` and no values) are left out."""
    series: list[Series] = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        by_test: dict[str, list[tuple[float, dict[str, float]]]] = defaultdict(list)
        for read in run.server_reads():
            values, t_s = read.get("values"), read.get("t_s")
            if isinstance(values, dict) and isinstance(t_s, (int, float)):
                key = str(read.get("threshold_key") or read.get("test_id"))
                by_test[key].append((float(t_s), values))
        for key, reads in by_test.items():
            name = key.split("::", 1)[-1]
            series.append((f"{label} {name}".strip(), sorted(reads, key=lambda r: r[0])))
    return series


def server_plots(runs: Sequence[Run]) -> list[Plot]:
    """The figure of the servers' reads; none for runs without any (an in-process engine,
    a client without `--llmperf-metrics-url`), rather than a note in every such report."""
    series = server_series(runs)
    if not series:
        return []
    shown = series[:MAX_SERIES]
    figure = new_figure(SERVER_TITLE, 10, 7.5 + 0.18 * len(shown))
    axes = figure.subplots(len(PANELS), 1, sharex=True)
    for (label, reads), color in zip(shown, palette(len(shown)), strict=True):
        for ax, (quantity, _) in zip(axes, PANELS, strict=True):
            points = [(t, v[quantity]) for t, v in reads if quantity in v]
            if points:  # a quantity the server does not export draws nothing, never 0
                ax.step(
                    [t for t, _ in points],
                    [y for _, y in points],
                    where="post",
                    color=color,
                    label=label_text(label) if ax is axes[0] else None,
                )
    for ax, (_, ylabel) in zip(axes, PANELS, strict=True):
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("seconds since the test's first read")
    # One legend below the panels: they share the tests and their colours.
    figure.legend(loc="outside lower center", fontsize=8, ncols=2, frameon=False)
    left_out = len(series) > len(shown)
    note = f"Showing the first {len(shown)} of {len(series)} tests." if left_out else ""
    return [Plot(SERVER_TITLE, figure, note)]
