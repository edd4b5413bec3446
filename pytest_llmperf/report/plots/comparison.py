"""Figures of a comparison of two runs: both sides' throughput and TTFT, and each test's
relative change coloured by its verdict."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

if TYPE_CHECKING:
    from pytest_llmperf.results.changes import Change
    from pytest_llmperf.results.compare import RunComparison

from pytest_llmperf.report.plots.common import (
    CHANGE_METRICS,
    COMPARE_BARS_TITLE,
    COMPARE_CHANGES_TITLE,
    MAX_TESTS,
    NEUTRAL_COLOR,
    VERDICT_COLORS,
    Plot,
    label_text,
    log_if_wide,
    new_figure,
)


def _by_test(changes: Iterable[Change], metric: str) -> dict[str, Change]:
    return {c.test_id: c for c in changes if c.metric == metric}


def compare_bars_plot(comparison: RunComparison) -> Plot:
    """Base and new side by side for output tok/s and TTFT p90, per test in both runs."""
    metrics = ("output_tok_per_s", "ttft_ms.p90")
    found = [_by_test(comparison.changes, m) for m in metrics]
    tests = list(dict.fromkeys(t for changes in found for t in changes))[:MAX_TESTS]
    if not tests:
        return Plot(
            COMPARE_BARS_TITLE,
            None,
            "The runs have no test in common that reports output_tok_per_s or ttft_ms.p90.",
        )
    figure = new_figure(COMPARE_BARS_TITLE, 12, 2.4 + 0.45 * len(tests))
    # A figure label, not free text: constrained layout keeps it clear of the tick labels.
    figure.supxlabel(
        label_text(f"base {comparison.base.run_id}  →  new {comparison.new.run_id}"),
        fontsize=8,
        color="#555555",
    )
    axes = figure.subplots(1, len(metrics), sharey=True)
    positions = list(range(len(tests)))
    for ax, metric, changes in zip(axes, metrics, found, strict=True):
        base = [(changes[t].base or 0.0) if t in changes else 0.0 for t in tests]
        new = [(changes[t].new or 0.0) if t in changes else 0.0 for t in tests]
        ax.barh([p - 0.2 for p in positions], base, height=0.4, color="#9a9a9a", label="base")
        ax.barh([p + 0.2 for p in positions], new, height=0.4, color="#4c72b0", label="new")
        log_if_wide(ax, base + new)
        better = "higher" if metric == "output_tok_per_s" else "lower"
        ax.set_title(f"{metric} ({better} is better)", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(positions, [label_text(t.split("::", 1)[-1]) for t in tests], fontsize=8)
    axes[0].invert_yaxis()
    axes[-1].legend(fontsize=8, loc="lower right")
    return Plot(COMPARE_BARS_TITLE, figure)


def compare_changes_plot(comparison: RunComparison) -> Plot:
    """The relative change of each main metric per test, colored by its verdict."""
    rows = [c for c in comparison.changes if c.metric in CHANGE_METRICS and c.relative is not None][
        : MAX_TESTS * 2
    ]
    if not rows:
        return Plot(
            COMPARE_CHANGES_TITLE,
            None,
            "No main metric (output tok/s, latency "
            "p90, accuracy) is measured in both runs with a nonzero base.",
        )
    figure = new_figure(COMPARE_CHANGES_TITLE, 12, 2.2 + 0.3 * len(rows))
    ax = figure.add_subplot()
    labels = [label_text(f"{c.test_id.split('::', 1)[-1]}  {c.metric}") for c in rows]
    values = [100.0 * (c.relative or 0.0) for c in rows]
    colors = [VERDICT_COLORS.get(c.verdict, NEUTRAL_COLOR) for c in rows]
    positions = list(range(len(rows)))
    ax.barh(positions, values, color=colors)
    for position, value, change in zip(positions, values, rows, strict=True):
        ax.annotate(
            f"{value:+.1f}% {change.verdict}",
            (value, position),
            textcoords="offset points",
            xytext=(4 if value >= 0 else -4, -3),
            ha="left" if value >= 0 else "right",
            fontsize=7,
        )
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("change from base (%): green better, red worse, by each metric's direction")
    span = max((abs(v) for v in values), default=1.0) or 1.0
    ax.set_xlim(-span * 1.6, span * 1.6)
    ax.grid(True, axis="x", alpha=0.3)
    return Plot(COMPARE_CHANGES_TITLE, figure)


def comparison_plots(comparison: RunComparison) -> list[Plot]:
    return [compare_bars_plot(comparison), compare_changes_plot(comparison)]


def comparison_figures(comparison: RunComparison) -> list[tuple[str, Figure]]:
    """(title, figure) of the comparison of a base run and a new one."""
    return [(p.title, p.figure) for p in comparison_plots(comparison) if p.figure is not None]
