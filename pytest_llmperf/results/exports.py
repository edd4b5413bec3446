"""Exports for CI dashboards that read their own formats.

`github-action-benchmark` (benchmark-action/github-action-benchmark) plots a history of
values per name from JSON lists, one file per direction: `customBiggerIsBetter` and
`customSmallerIsBetter`, entries `{"name", "unit", "value", "extra"}`. Every run folder
gets both, written with its summary:

    results/<run>/github-benchmark/bigger_is_better.json
    results/<run>/github-benchmark/smaller_is_better.json

Names are `<test> <metric>`. Exported: every metric with a known direction except
counts, and of latency distributions the p50, p90 and p99 (the mean and the extremes
move with single outliers and would page people for noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_llmperf.measure.metrics import spec_for
from pytest_llmperf.results.runs import Run
from pytest_llmperf.results.writer import write_json_atomic

GITHUB_DIR = "github-benchmark"
_DISTRIBUTION_STATS = ("p50", "p90", "p99")


def github_benchmark_entries(run: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(bigger-is-better entries, smaller-is-better entries) of a run."""
    bigger: list[dict[str, Any]] = []
    smaller: list[dict[str, Any]] = []
    for test in run.tests:
        key = test.key
        extra = f"engine={test.engine} config={test.config.name}"
        for metric, value in sorted(test.metrics_flat.items()):
            spec = spec_for(metric)
            if spec is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            stat = metric.partition(".")[2]
            if spec.kind == "count" or (stat and stat not in _DISTRIBUTION_STATS):
                continue
            entry = {"name": f"{key} {metric}", "unit": spec.unit, "value": value, "extra": extra}
            (bigger if spec.better == "higher" else smaller).append(entry)
    return bigger, smaller


def write_github_benchmark(run: Run) -> Path:
    """Write both files into the run's folder; returns their folder."""
    folder = run.path / GITHUB_DIR
    folder.mkdir(exist_ok=True)
    bigger, smaller = github_benchmark_entries(run)
    write_json_atomic(folder / "bigger_is_better.json", bigger)
    write_json_atomic(folder / "smaller_is_better.json", smaller)
    return folder
