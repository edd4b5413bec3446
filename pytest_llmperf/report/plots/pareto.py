"""The SLO search's Pareto view (`llmperf.max_load_under_slo`, `suite.slo.search`): each step
as output tok/s per user (1000 / mean TPOT: the decode speed one user sees) against output
tok/s per server, or per GPU where the test leased GPUs; the chosen step ringed. Moving right
along the front serves more users' tokens at once, and each user gets them more slowly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.report.plots.common import (
    MAX_SERIES,
    Plot,
    label_text,
    new_figure,
    palette,
    run_labels,
)
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run

PARETO_TITLE = "SLO search: output tok/s per user vs per server"
#: A step's marker by its decision.
MARKERS = {"pass": "o", "fail": "x", "inconclusive": "^", "client_bound": "s"}


def per_gpu(test: TestRecord) -> int:
    """How many GPUs the test leased (0: none, the x axis is per server)."""
    return len(test.gpus.cuda) if test.gpus is not None else 0


def pareto_points(
    test: TestRecord,
) -> list[tuple[float, float, str, bool]]:
    """(x, y, decision, chosen) of each step with both throughputs."""
    search: Mapping[str, Any] = test.slo_search or {}
    gpus = per_gpu(test)
    points = []
    for index, step in enumerate(search.get("steps") or ()):
        x, y = step.get("output_tok_per_s"), step.get("output_tok_per_s_per_user")
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            chosen = index == search.get("chosen")
            points.append((x / gpus if gpus else x, float(y), str(step.get("decision")), chosen))
    return points


def pareto_plots(runs: Sequence[Run]) -> list[Plot]:
    """The figure of every SLO search in `runs`; none where no test searched."""
    tests = [
        (label, t) for run, label in zip(runs, run_labels(runs), strict=True) for t in run.tests
    ]
    searched = [(label, t) for label, t in tests if t.slo_search and pareto_points(t)]
    if not searched:
        return []
    shown = searched[:MAX_SERIES]
    figure = new_figure(PARETO_TITLE, 9, 6)
    ax = figure.subplots()
    gpus = any(per_gpu(t) for _, t in shown)
    for (label, test), color in zip(shown, palette(len(shown)), strict=True):
        points = pareto_points(test)
        name = f"{label} {test.key.split('::', 1)[-1]}".strip()
        for decision, marker in MARKERS.items():
            mine = [(x, y) for x, y, d, _ in points if d == decision]
            if mine:
                ax.scatter(
                    [x for x, _ in mine],
                    [y for _, y in mine],
                    marker=marker,
                    color=color,
                    label=label_text(f"{name}: {decision}"),
                )
        for x, y, _, chosen in points:
            if chosen:
                ax.scatter([x], [y], s=260, facecolors="none", edgecolors="black", linewidths=1.5)
                ax.annotate("chosen", (x, y), textcoords="offset points", xytext=(8, 8))
    ax.set_xlabel("output tok/s per GPU" if gpus else "output tok/s per server")
    ax.set_ylabel("output tok/s per user (1000 / mean TPOT)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    left_out = len(searched) > len(shown)
    note = f"Showing the first {len(shown)} of {len(searched)} searches." if left_out else ""
    return [Plot(PARETO_TITLE, figure, note)]
