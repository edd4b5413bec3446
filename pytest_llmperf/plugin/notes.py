"""What the terminal summary says under its table: why some numbers may not describe the
engine, as the run found out.

Each function returns lines, `warning: ...` for a noise source that moved the numbers
(they would differ alone, on an idle machine, with the client on its own cores) and
`note: ...` for facts to keep in mind; the summary prints them in yellow. They read the
test records and the run's metadata (`run.json`: `threads`, `load_average_at_start`), so
that what is said is what was recorded:

    client-bound     `client_bound` = 1: the load client, not the server, was the bottleneck
                     (`suite.load`); its latencies and rates describe the client.
    failed requests  some requests failed (allowed, or the test failed for them): the
                     numbers are of those that succeeded.
    shared cores     xdist workers measured at the same time on the same CPUs (fewer CPUs
                     than workers: `hardware.threads` could not split them), or split them
                     (each test had a share of the cores, not all of them).
    oversubscribed   an engine ran more threads than the CPUs its process may use.
    a busy machine   the load average when the run started was at least half the usable
                     CPUs (and at least 1): other work competed with the measured tests.

A test's unreliable metrics (`measure.reliability`) and the settings a grid's engine did not
take are noted too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.measure.reliability import EVERY_METRIC
from pytest_llmperf.results.changes import unjudged_notes
from pytest_llmperf.results.record import TestRecord

#: A load average at least this share of the usable CPUs (and at least 1) is a busy machine.
BUSY_LOAD_SHARE = 0.5
#: Tests a run-level line names before "and N more".
NAMED = 4


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:NAMED])
    return shown + (f" and {len(keys) - NAMED} more" if len(keys) > NAMED else "")


def client_bound_notes(tests: Sequence[TestRecord]) -> list[str]:
    bound = [t.threshold_key for t in tests if t.metric("client_bound")]
    if not bound:
        return []
    return [
        f"warning: client-bound: {len(bound)} of {len(tests)} tests ({_names(bound)}): the "
        "load client, not the server, was the bottleneck (its event loop lagged or stayed "
        "busy), so their latencies and rates describe the client: give the client cores "
        "of its own, or fewer requests in flight"
    ]


def failure_notes(tests: Sequence[TestRecord]) -> list[str]:
    notes = []
    for test in tests:
        failures, requests = test.metric("failures"), test.metric("requests")
        if failures and requests:
            notes.append(
                f"warning: {test.threshold_key}: {failures:.0f} of {requests:.0f} requests "
                f"failed ({failures / requests:.1%}): its numbers are of the requests that "
                "succeeded"
            )
    return notes


def thread_notes(tests: Sequence[TestRecord], threads: Mapping[str, Any]) -> list[str]:
    """Cores shared between xdist workers, or threads beyond a process's CPUs."""
    notes = []
    xdist = threads.get("xdist") or {}
    workers = xdist.get("workers") or 0
    cpus = threads.get("cpus_allowed_count")
    if workers > 1 and xdist.get("split"):
        shares = "; ".join(f"{w}: {_cpu_list(c)}" for w, c in sorted(xdist["shares"].items()))
        notes.append(
            f"note: {workers} xdist workers measured side by side, each on its own share of "
            f"the {cpus} CPUs ({shares}): each test had its share, not every core"
        )
    elif workers > 1 and xdist.get("not_split") != "a GPU run":
        notes.append(
            f"warning: {workers} xdist workers measured at the same time on {cpus} shared "
            f"CPUs ({xdist.get('not_split')}): measured tests competed for cores, so their "
            "numbers are lower and noisier than alone; run benchmarks without -n for numbers "
            "to keep"
        )
    for test in tests:
        used = test.engine_info.details.get("torch_num_threads")
        allowed = test.engine_info.details.get("cpus_allowed_count")
        if isinstance(used, int) and isinstance(allowed, int) and used > allowed:
            notes.append(
                f"warning: {test.threshold_key}: torch ran {used} threads on {allowed} usable "
                f"CPUs: threads that outnumber the cores slow each other (set the hf "
                f"engine's n_threads, or OMP_NUM_THREADS, to at most {allowed})"
            )
    return notes


def _cpu_list(cpus: Sequence[int]) -> str:
    return "CPU " + ",".join(map(str, cpus)) if len(cpus) < 2 else f"CPUs {cpus[0]}-{cpus[-1]}"


def load_notes(load: object, threads: Mapping[str, Any]) -> list[str]:
    cpus = threads.get("cpus_allowed_count") or 1
    if not isinstance(load, (int, float)) or load < max(1.0, BUSY_LOAD_SHARE * cpus):
        return []
    return [
        f"warning: the machine was busy when the run started (load average {load:.2f} over "
        f"the last minute, {cpus} usable CPUs): other work competed with the measured tests, "
        "so compare their numbers with care"
    ]


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


def run_notes(tests: Sequence[TestRecord], metadata: Mapping[str, Any]) -> list[str]:
    """Every line for under the summary's table, noise sources first."""
    threads = metadata.get("threads") or {}
    return [
        *client_bound_notes(tests),
        *failure_notes(tests),
        *thread_notes(tests, threads),
        *load_notes(metadata.get("load_average_at_start"), threads),
        *not_applied_notes(tests),
        *unreliable_notes(tests),
    ]
