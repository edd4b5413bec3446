"""A run at a glance, for `llmperf list` and `show`: what it ran on and how its tests ended.

A test's verdict is pytest's: `summary.json` keeps each test's outcome (`outcomes`:
passed, failed or skipped, as the controller saw the reports). A run without them (written
before they were kept, or killed and rebuilt) is judged from its records, as the plugin
judged it: a test failed when its evidence failed (no request measured, requests failed
beyond the allowance), a bound was missed (not in a run that rewrote its bounds:
`--llmperf-update-thresholds` does not fail on the old ones) or it regressed against the
baseline. A test a killed run was measuring is `cut short` (`results.readback.rebuild`).

Threshold misses are counted apart from failures: a missed bound fails a test, but an
update run rewrites it, and a failed test may have missed none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_llmperf.results.readback.rebuild import is_cut_short
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run


def settings_of(run: Run) -> dict[str, Any]:
    settings = run.summary.get("settings")
    return settings if isinstance(settings, dict) else {}


def updated_thresholds(run: Run) -> bool:
    """Whether the run wrote its bounds (`--llmperf-update-thresholds`)."""
    return bool(settings_of(run).get("update_thresholds"))


def test_verdict(run: Run, test: TestRecord) -> str:
    """pytest's verdict of the test that made this record, as recorded or as judged."""
    if is_cut_short(test):
        return "cut short"
    recorded = run.summary.get("outcomes")
    if isinstance(recorded, dict) and test.test_id in recorded:
        return str(recorded[test.test_id])
    no_evidence = test.evidence is not None and not test.evidence.passed
    missed = not test.thresholds.passed and not updated_thresholds(run)
    regressed = test.baseline is not None and not test.baseline.passed
    return "failed" if no_evidence or missed or regressed else "passed"


def verdicts(run: Run) -> dict[str, str]:
    """Each test's verdict by node id: the recorded outcomes, with every measured test
    (a node measured twice, with labels, fails when either did)."""
    recorded = run.summary.get("outcomes")
    found = {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}
    for test in run.tests:
        verdict = test_verdict(run, test)
        if found.get(test.test_id) != "failed":
            found[test.test_id] = verdict
    return found


def engines(run: Run) -> list[str]:
    """The engines the run's tests ran on, else the one the run was started with."""
    names = sorted({t.engine for t in run.tests})
    return names or [str(settings_of(run).get("engine") or "?")]


def models(run: Run) -> list[str]:
    """The models, by their folder's (or file's) name: `tiny-v1`, `llama-3.2-1b`."""
    paths = {t.engine_config.model for t in run.tests} or {str(settings_of(run).get("model"))}
    return sorted(Path(p).name or p for p in paths if p and p != "None") or ["?"]


def engine_failures(run: Run) -> list[dict[str, Any]]:
    """The engines (and servers) that failed to start during the run."""
    failures = run.summary.get("engine_failures")
    return [f for f in failures if isinstance(f, dict)] if isinstance(failures, list) else []
