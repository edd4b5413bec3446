"""Exports for CI dashboards and spreadsheets that read their own formats, written into every
run folder with its summary.

`github-action-benchmark` (benchmark-action/github-action-benchmark) plots a history of
values per name from JSON lists, one file per direction: `customBiggerIsBetter` and
`customSmallerIsBetter`, entries `{"name", "unit", "value", "range", "extra"}`:

    results/<run>/github-benchmark/bigger_is_better.json
    results/<run>/github-benchmark/smaller_is_better.json

Names are `<test> <metric>`. Exported: every metric with a known direction except
counts, and of latency distributions the p50, p90 and p99 (the mean and the extremes
move with single outliers and would page people for noise). `range` is the 95% interval of
the metric's per-round samples as a share of the value (`±2.1%`; left out where the metric
was not measured round by round), and `extra` says the engine, the configuration, the
rounds and why they ended, and the verdicts of the metric's bound and baseline tolerance
(`bound >= 3,000: met (p=0.99)`), in the words of `results.readout`.

`results/<run>/tests.csv`: one row per test, for a spreadsheet or `pandas.read_csv`: the
test, engine, model and configuration, `rounds` and `stop` (why they ended), `thresholds`
and `baseline` (the worst verdict: met / missed / inconclusive, ok / regressed /
inconclusive), `bounds` and `baseline_metrics` (each verdict with its p-value, `; `-joined),
then each of `CSV_METRICS` the test has as three columns: its headline value and the low
and high ends of its 95% interval (`output_tok_per_s`, `output_tok_per_s.low`,
`output_tok_per_s.high`; empty where there is none).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from pytest_llmperf.measure.metrics import spec_for
from pytest_llmperf.results import readout
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run
from pytest_llmperf.results.writer import write_json_atomic
from pytest_llmperf.tables import format_interval

GITHUB_DIR = "github-benchmark"
CSV_FILE = "tests.csv"
_DISTRIBUTION_STATS = ("p50", "p90", "p99")
#: The metrics of `tests.csv`, each with its interval, where a test has them.
CSV_METRICS = (
    "output_tok_per_s",
    "total_tok_per_s",
    "requests_per_s",
    "ttft_ms.p50",
    "ttft_ms.p90",
    "tpot_ms.p50",
    "tpot_ms.p90",
    "e2e_ms.p50",
    "e2e_ms.p90",
    "failure_rate",
    "accuracy",
    "exact_match",
)


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
            entry = {"name": f"{key} {metric}", "unit": spec.unit, "value": value}
            found = test.interval(metric)
            if found is not None and found.relative_half_width is not None:
                # `6,193 ±2.1%` less the value: the dashboard shows the value beside it.
                entry["range"] = format_interval(value, found.relative_half_width).split()[-1]
            entry["extra"] = "; ".join([extra, *_verdicts(test, metric)])
            (bigger if spec.better == "higher" else smaller).append(entry)
    return bigger, smaller


def _verdicts(test: TestRecord, metric: str) -> list[str]:
    """The rounds, and this metric's bound and baseline verdicts, as `extra` says them."""
    found = [f"rounds={readout.rounds_text(test)}"]
    found += [
        f"bound {readout.bound_limits(c)}: {readout.bound_verdict(c)}"
        for c in test.thresholds.checked
        if c.metric == metric
    ]
    if test.baseline is not None:
        found += [
            f"baseline {readout.change_interval(c)} within {c.tolerance}: "
            f"{readout.change_verdict(c)}"
            for c in test.baseline.judged
            if c.metric == metric
        ]
    return found


def tests_rows(run: Run) -> list[dict[str, Any]]:
    """`tests.csv`'s rows: one per test of `run` (see the module docstring)."""
    rows = []
    for test in run.tests:
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "test_id": test.key,
            "engine": test.engine,
            "model": test.engine_config.model or test.engine_info.model,
            "config": test.config.name,
            **readout.verdict_columns(test),
        }
        for metric in CSV_METRICS:
            if test.metric(metric) is not None:
                row.update(readout.interval_columns(test, metric))
        rows.append(row)
    return rows


def write_tests_csv(run: Run) -> Path:
    """Write `tests.csv` into the run's folder (whole, then renamed); returns its path."""
    rows = tests_rows(run)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # a column a test lacks stays empty
    path = run.path / CSV_FILE
    partial = path.with_name(f".{CSV_FILE}.{os.getpid()}.tmp")
    partial.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(partial, path)
    return path


def write_github_benchmark(run: Run) -> Path:
    """Write both files into the run's folder; returns their folder."""
    folder = run.path / GITHUB_DIR
    folder.mkdir(exist_ok=True)
    bigger, smaller = github_benchmark_entries(run)
    write_json_atomic(folder / "bigger_is_better.json", bigger)
    write_json_atomic(folder / "smaller_is_better.json", smaller)
    return folder
