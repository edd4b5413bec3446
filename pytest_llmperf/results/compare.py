"""Comparing runs (`llmperf compare`, the HTML report): each test's metric changes, judged on
per-round samples where both runs have them (`results.baseline`), else point by point
(`results.changes`), with tolerances (`results.tolerances`).

Two runs of different engines, models or hardware compare setups, not one setup over
time: `llmperf compare` shows both sides' (`results.identity`) and says when they differ,
down to the machines' CPUs, cores, memory and GPUs (two `cpu` runs of a 2-core VM and a
64-core server); it compares them all the same.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.results.baseline import DEFAULT_ALPHA, DEFAULT_DRIFT, judge_changes
from pytest_llmperf.results.changes import (
    Change,
    changes_table,
    compare_metrics,
    fmt,
    judged,
    record_unreliable,
    unjudged_notes,
)
from pytest_llmperf.results.identity import Machine, Setup
from pytest_llmperf.results.runs import Run
from pytest_llmperf.results.tolerances import parse_tolerances


@dataclass(frozen=True)
class RunComparison:
    base: Run
    new: Run
    changes: list[Change]
    tests_only_in_base: list[str]
    tests_only_in_new: list[str]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regressed"]


def compare_runs(
    base: Run,
    new: Run,
    tolerances: Sequence[str] = (),
    alpha: float = DEFAULT_ALPHA,
    drift: float = DEFAULT_DRIFT,
) -> RunComparison:
    """Tests present in both runs, metric by metric (`tolerances` as the CLI takes them):
    on per-round samples where both runs have them (`results.baseline`)."""
    parsed = parse_tolerances(tolerances)
    base_ids = [t.key for t in base.tests]
    new_ids = [t.key for t in new.tests]
    changes: list[Change] = []
    for test_id in dict.fromkeys(new_ids):
        before, after = base.test(test_id), new.test(test_id)
        if before is None or after is None:
            continue
        points = compare_metrics(
            test_id,
            before.metrics_flat,
            after.metrics_flat,
            parsed,
            record_unreliable(before),
            record_unreliable(after),
        )
        changes += judge_changes(points, after.samples, [before], parsed, alpha, drift)
    return RunComparison(
        base,
        new,
        changes,
        [t for t in dict.fromkeys(base_ids) if t not in set(new_ids)],
        [t for t in dict.fromkeys(new_ids) if t not in set(base_ids)],
    )


def check_measured(run: Run, role: str) -> None:
    """A run compared must hold measured tests: one without judges nothing, silently."""
    if not run.tests:
        raise LLMPerfUsageError(
            f"{role} {run.run_id} ({run.path}) has no measured tests, so there is nothing to "
            "compare (a run that stopped before measuring?)"
        )


def setup_lines(base: Run, new: Run) -> list[str]:
    """Both sides' engine, model and hardware, and a warning line when they differ."""
    before, after = Setup.of_run(base), Setup.of_run(new)
    lines = [f"base {base.run_id}: {before.describe()}", f"new  {new.run_id}: {after.describe()}"]
    differences = before.differences(after)
    if differences:
        lines.append(
            f"WARNING: the runs differ in {'; '.join(differences)}: the changes below compare "
            "two setups, not one setup over time"
        )
    machine, other = Machine.of_run(base), Machine.of_run(new)
    hardware = machine.differences(other)
    if hardware:
        lines.append(
            f"WARNING: the runs were made on different hardware ({'; '.join(hardware)}): the "
            "changes below include the machines' difference"
        )
    elif machine.host and other.host and machine.host != other.host:
        lines.append(
            f"note: the runs were made on two machines ({machine.host}, {other.host}) of the "
            "same hardware as recorded (cpu, cores, memory, GPUs)"
        )
    return lines


def compare_command(base: Run, new: Run, tolerances: Sequence[str], show_all: bool = False) -> int:
    """`llmperf compare`: print the changes; 1 when any metric regressed, else 0."""
    parse_tolerances(tolerances)  # a bad tolerance first: it is what the user typed last
    check_measured(base, "base")
    check_measured(new, "new")
    comparison = compare_runs(base, new, tolerances)
    print("\n".join(setup_lines(base, new)))
    for test_id in dict.fromkeys(c.test_id for c in comparison.changes):
        mine = [c for c in comparison.changes if c.test_id == test_id]
        shown = [c for c in mine if show_all or judged(c)]
        if shown:
            print(f"\n{test_id}")
            print(textwrap.indent(changes_table(shown), "  "))
        for note in unjudged_notes([c for c in mine if judged(c)]):
            print(f"  {note}")
    for label, ids in (
        ("only in base", comparison.tests_only_in_base),
        ("only in new", comparison.tests_only_in_new),
    ):
        if ids:
            print(f"\n{label}: " + ", ".join(ids))
    regressions = comparison.regressions
    if regressions:
        print(f"\n{len(regressions)} regression(s) beyond tolerance:")
        for c in regressions:
            print(
                f"  {c.test_id}  {c.metric}: {fmt(c.base)} -> {fmt(c.new)} "
                f"(tolerance {c.tolerance})"
            )
        return 1
    print("\nno regression beyond tolerance")
    return 0
