"""The terminal summary: one compact row per measured test, then where results went."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_llmperf.measure.reliability import EVERY_METRIC
from pytest_llmperf.measure.timed import OWN_ENGINE
from pytest_llmperf.results.changes import unjudged_notes
from pytest_llmperf.results.readout import headline
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import read_test_records
from pytest_llmperf.tables import format_number, render_table

if TYPE_CHECKING:
    from pytest_llmperf.plugin.session import LLMPerfSession

COLUMNS: tuple[tuple[str, str], ...] = (
    ("req", "requests"),
    ("fail", "failures"),
    ("out tok/s", "output_tok_per_s"),
    ("ttft p50 ms", "ttft_ms.p50"),
    ("ttft p90 ms", "ttft_ms.p90"),
    ("tpot p50 ms", "tpot_ms.p50"),
    ("e2e p90 ms", "e2e_ms.p90"),
)
#: Columns shown with the 95% interval of their per-round samples (`6,193 ±2.1%`).
INTERVAL_COLUMNS = frozenset({"output_tok_per_s", "ttft_ms.p90", "tpot_ms.p50"})


def own_rows(tests: Sequence[TestRecord]) -> list[list[str]]:
    """Rows of the suite's own code (`llmperf.time`, `llmperf.record`): its metrics, each
    with the interval of its samples."""
    rows = []
    for test in tests:
        shown = []
        for name in test.metrics_flat:
            shown.append(f"{name} {headline(test, name)}")
        rows.append([test.threshold_key, "; ".join(shown), thresholds_cell(test)])
    return rows


def summary_rows(tests: Sequence[TestRecord]) -> list[list[str]]:
    rows = []
    for test in tests:
        rows.append(
            [
                test.threshold_key,
                test.engine,
                *(_cell(test, key) for _, key in COLUMNS),
                thresholds_cell(test),
            ]
        )
    return rows


def _cell(test: TestRecord, key: str) -> str:
    """A metric's headline value, with its interval where it was measured round by round."""
    if key in INTERVAL_COLUMNS:
        return headline(test, key)
    return format_number(test.metrics_flat.get(key))


def thresholds_cell(test: TestRecord) -> str:
    """The thresholds' verdict: none, ok, MISS or inconclusive, with how many bounds."""
    checked = test.thresholds.checked
    if not checked:
        return "none"
    missed = sum(c.verdict == "missed" for c in checked)
    undecided = sum(c.verdict == "inconclusive" for c in checked)
    if missed:
        return f"MISS {missed}/{len(checked)}"
    if undecided:
        return f"inconclusive {undecided}/{len(checked)}"
    return f"ok ({len(checked)})"


def not_applied_notes(tests: Sequence[TestRecord]) -> list[str]:
    """One line per test whose grid gave settings its engine did not take (a grid meant
    for several engines), each said once."""
    notes: dict[str, None] = {}
    for test in tests:
        skipped = test.engine_config.settings_not_applied
        if skipped:
            notes[
                f"note: {test.threshold_key}: settings not applied on {test.engine}: "
                f"{', '.join(skipped)}"
            ] = None
    return list(notes)


def unreliable_notes(tests: Sequence[TestRecord]) -> list[str]:
    """What no bound or baseline was made of: each test's unreliable metrics, by reason,
    and the metrics a baseline could not judge."""
    notes: list[str] = []
    for test in tests:
        by_reason: dict[str, list[str]] = {}
        for metric, reason in test.unreliable.items():
            by_reason.setdefault(reason, []).append(metric)
        for reason, metrics in by_reason.items():
            if metrics == [EVERY_METRIC]:
                what = "no bound or baseline is made of this test"
            else:
                what = f"no bound or baseline is made of {', '.join(metrics)}"
            notes.append(f"note: {test.threshold_key}: {reason}: {what}")
        if test.baseline is not None:
            for note in unjudged_notes(test.baseline.judged):
                notes.append(f"note: {test.threshold_key}: baseline {test.baseline.run_id}: {note}")
    return notes


def write_terminal_summary(reporter: Any, session: LLMPerfSession) -> None:
    tests = read_test_records(session.run_dir) if session.run_dir.exists() else ()
    if not tests and not session.update_report and not session.unmatched_thresholds:
        return
    reporter.write_sep("=", "llmperf summary")
    if session.baseline is not None and session.baseline_mismatch:
        reporter.write_line(
            f"note: baseline {session.baseline.run_id} differs from this run "
            f"({'; '.join(session.baseline_mismatch)}; baseline first), compared all the same "
            "(--llmperf-allow-mismatch)",
            yellow=True,
        )
    if tests:
        own = [t for t in tests if t.engine == OWN_ENGINE]
        engines = [t for t in tests if t.engine != OWN_ENGINE]
        if engines:
            header = ["test", "engine", *(name for name, _ in COLUMNS), "thresholds"]
            for text in render_table(header, summary_rows(engines)).splitlines():
                reporter.write_line(text)
        if own:
            header = ["your code", "metrics", "thresholds"]
            for text in render_table(header, own_rows(own)).splitlines():
                reporter.write_line(text)
        for note in not_applied_notes(tests) + unreliable_notes(tests):
            reporter.write_line(note, yellow=True)
        reporter.write_line("")
        reporter.write_line(f"hardware: {session.hardware}; results: {session.run_dir}")
    for message in session.unmatched_thresholds:
        reporter.write_line(f"thresholds: {message}", yellow=True)
    report = session.update_report
    if report is not None:
        for written in report.written:
            reporter.write_line(f"thresholds updated: {written}")
        for loosened in report.loosened:
            reporter.write_line(f"WARNING: threshold loosened: {loosened}", yellow=True)
        for refused in report.refused:
            reporter.write_line(f"WARNING: thresholds not updated: {refused}", yellow=True)
