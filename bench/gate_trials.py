"""Many trials of the gate in one pytest session: the trial process of `bench/gate_power.py`.

Loaded as a plugin (`-p bench.gate_trials`, the project root on the path) with
`LLMPERF_GATE_TRIALS` naming a plan (JSON) that `gate_power.py` writes:

    {"trials": [{"trial": 0, "arm": "baseline 20% slower", "slowdown": 0.2,
                 "compare": true}, ...],
     "deadline": <time.time() after which no trial starts>, "log": "<steps.jsonl>"}

It replaces pytest's run loop: for each trial in order, every selected test runs once
through pytest's own protocol (`pytest_runtest_protocol`, setup to teardown, reported as
usual; re-running an item is what pytest-rerunfailures does), so each repeat is a real
test with its own `llmperf` fixture, and its record is judged under the test's own key
(`TestRecord.threshold_key`, the node id) against the thresholds and the session's
`--llmperf-compare` baseline. For each trial, the hf engine's `stream` is wrapped by the
slowdown instrument (`bench.slowdown.slowed`) at the trial's fraction, and a trial
without `compare` runs with the session's baselines set aside, as a run without
`--llmperf-compare` would judge it. After each test, one line goes to the log: trial,
arm, test, pytest's outcome (and the first line of why, when it failed), the call's
seconds, and how many records tests.jsonl holds by then, so that `gate_power.py` can pair
each step with its record.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.slowdown import slowed
from pytest_llmperf.plugin.hooks import session_key
from pytest_llmperf.plugin.session import LLMPerfSession

ENV = "LLMPERF_GATE_TRIALS"


@dataclass(frozen=True)
class PlannedTrial:
    trial: int
    arm: str
    slowdown: float
    compare: bool


class TrialRunner:
    """Runs the plan's trials in place of pytest's run loop."""

    def __init__(self, config: pytest.Config, plan_path: Path) -> None:
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        self.trials = [PlannedTrial(**t) for t in plan["trials"]]
        self.deadline = float(plan["deadline"])
        self.log = Path(plan["log"])
        self.config = config
        self._phases: list[pytest.TestReport] = []
        self._records = 0
        self._offset = 0

    @property
    def llmperf(self) -> LLMPerfSession:
        return self.config.stash[session_key]

    def check(self) -> None:
        """The instrument wraps the engine in this process: an isolated engine escapes it."""
        settings = self.llmperf.settings
        if settings.engine != "hf" or settings.isolate or self.llmperf.bounded:
            raise pytest.UsageError(
                f"{ENV}: the trials need the hf engine in the test process (engine "
                f"{settings.engine!r}, --llmperf-isolate or a time bound moves it out)"
            )
        if any(t.compare for t in self.trials) and not self.llmperf.baselines:
            raise pytest.UsageError(f"{ENV}: trials judged on a baseline need --llmperf-compare")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if session.config.option.collectonly:
            return None
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
        self.check()
        steps = [(trial, item) for trial in self.trials for item in session.items]
        for index, (trial, item) in enumerate(steps):
            if item is session.items[0] and time.time() > self.deadline:
                break  # the budget is spent: whole trials only
            nextitem = steps[index + 1][1] if index + 1 < len(steps) else None
            self._phases = []
            with self._arm(trial):
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            self._write_step(trial, item)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        return True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._phases.append(report)

    @contextmanager
    def _arm(self, trial: PlannedTrial) -> Iterator[None]:
        from pytest_llmperf.engines.hf.engine import HFEngine

        original: Any = HFEngine.stream
        baselines = self.llmperf.baselines
        if trial.slowdown:
            HFEngine.stream = slowed(original, trial.slowdown)  # type: ignore[method-assign]
        if not trial.compare:
            self.llmperf.baselines = []
        try:
            yield
        finally:
            HFEngine.stream = original  # type: ignore[method-assign]
            self.llmperf.baselines = baselines

    def _write_step(self, trial: PlannedTrial, item: pytest.Item) -> None:
        failed = any(r.failed for r in self._phases)
        skipped = any(r.skipped for r in self._phases)
        call = [r.duration for r in self._phases if r.when == "call"]
        step = {
            "trial": trial.trial,
            "arm": trial.arm,
            "test": item.nodeid,
            "outcome": "failed" if failed else "skipped" if skipped else "passed",
            "call_s": call[0] if call else None,
            "failure": next((_crash(r) for r in self._phases if r.failed), None),
            "records": self._count_records(),
        }
        with self.log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(step) + "\n")

    def _count_records(self) -> int:
        """Records in the run's tests.jsonl so far (read on from where the last count ended)."""
        path = self.llmperf.run_dir / "tests.jsonl"
        if path.is_file():
            with path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
            complete = data.rfind(b"\n") + 1  # a line being written counts when it ends
            self._records += data[:complete].count(b"\n")
            self._offset += complete
        return self._records


def _crash(report: pytest.TestReport) -> str:
    """The first line of why a test failed (`AssertionError: ...`, `Failed: ...`)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(crash.message) if crash is not None else report.longreprtext
    return (text.strip().splitlines() or [""])[0][:300]


def pytest_configure(config: pytest.Config) -> None:
    plan = os.environ.get(ENV)
    if plan and not config.option.help:
        config.pluginmanager.register(TrialRunner(config, Path(plan)), "llmperf-gate-trials")
