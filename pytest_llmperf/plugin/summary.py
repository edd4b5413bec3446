"""The terminal summary: one compact row per measured test, what the run noticed (noise
sources: the notes below), engines that failed to start, a dry run's requests, and where
results went.

Under the table, why some numbers may not describe the engine, as the run found out: each
`*_notes` function returns lines, `warning: ...` for a noise source that moved the numbers
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
    server count     the server's own count of the requests it finished during the rounds
                     (`server_requests`, `measure.server`) differs from ours: another client
                     shared it, or it lost requests. For a managed server that xdist workers
                     shared, a note says so instead: its counts include every worker's.

A test's unreliable metrics (`measure.reliability`) and the settings a grid's engine did not
take are noted too. Tests measured on several hosts (xdist workers elsewhere) are grouped by
host, each host with its workers and GPUs (`results.readback.hosts`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llmperf.measure.reliability import EVERY_METRIC
from pytest_llmperf.measure.timed import OWN_ENGINE
from pytest_llmperf.results import readout
from pytest_llmperf.results.changes import unjudged_notes
from pytest_llmperf.results.readback.hosts import grouped, host_labels, host_lines
from pytest_llmperf.results.readback.split import load_lines, merged_loads
from pytest_llmperf.results.readout import headline
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import read_test_records
from pytest_llmperf.results.writer import read_records
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

#: How a dry run's skip reason starts (`plugin.fixture`): such tests get a line each.
DRY_RUN_PREFIX = "dry run: "


@dataclass(frozen=True)
class ThresholdsFile:
    """The thresholds file a test's engine was checked against, or the one looked for."""

    #: As shown: relative to the rootdir where it is under it.
    shown: str
    exists: bool
    #: With --llmperf-update-thresholds: whether this run wrote the test's bounds there;
    #: None on a run that checks rather than writes.
    written: bool | None = None


def bounds_text(test: TestRecord) -> str | None:
    """The test's bounds by verdict (`BoundCheck.verdict`: met, missed, inconclusive):
    misses counted as misses (`MISS 2/5`), else undecided ones (`inconclusive 1/5`), else
    `ok (5)`; None when it had none. The one place the column's words are made:
    `thresholds_cell` and `llmperf show` print it, `llmperf list` sums `missed_bounds`."""
    verdicts = [c.verdict for c in test.thresholds.checked]
    if not verdicts:
        return None
    for verdict, word in (("missed", "MISS"), ("inconclusive", "inconclusive")):
        if verdict in verdicts:
            return f"{word} {verdicts.count(verdict)}/{len(verdicts)}"
    return f"ok ({len(verdicts)})"


def missed_bounds(test: TestRecord) -> int:
    return sum(c.verdict == "missed" for c in test.thresholds.checked)


def thresholds_cell(test: TestRecord, file: ThresholdsFile) -> str:
    """The thresholds column: what this run did with the test's bounds, and in which file:
    an update run says whether it wrote them (a miss against the old bounds fails nothing
    there), any other `bounds_text` and the file, or `none` and whether the file exists."""
    if file.written is not None:
        return f"{'written to' if file.written else 'not written:'} {file.shown}"
    text = bounds_text(test)
    if text is None:
        return f"none in {file.shown}" if file.exists else f"none: no {file.shown}"
    return f"{text}: {file.shown}"


def baseline_cell(test: TestRecord) -> str:
    """Against `--llmperf-compare`'s runs, in the thresholds column's words: never `ok` for
    a test that regressed (`REGRESSED 1/9`), undecided changes said (`inconclusive 2/9`)."""
    against = test.baseline
    if against is None or not against.found:
        return "not in baseline"
    verdicts = [c.verdict for c in against.judged]
    regressed = verdicts.count("regressed")
    if regressed or not against.passed:
        return f"REGRESSED {regressed}/{len(verdicts)}"
    if "inconclusive" in verdicts:
        return f"inconclusive {verdicts.count('inconclusive')}/{len(verdicts)}"
    return f"ok ({len(verdicts)})"


def own_rows(tests: Sequence[TestRecord], files: dict[str, ThresholdsFile]) -> list[list[str]]:
    """Rows of the suite's own code (`llmperf.time`, `llmperf.record`): its metrics, each
    with the interval of its samples."""
    rows = []
    for test in tests:
        shown = []
        for name in test.metrics_flat:
            shown.append(f"{name} {headline(test, name)}")
        rows.append(
            [test.threshold_key, "; ".join(shown), thresholds_cell(test, files[test.threshold_key])]
        )
    return rows


def summary_rows(
    tests: Sequence[TestRecord], files: dict[str, ThresholdsFile], baseline: bool = False
) -> list[list[str]]:
    """One row per test; `files` maps each test's key to its thresholds file."""
    rows = []
    for test in tests:
        row = [
            test.threshold_key,
            test.engine,
            *(_cell(test, key) for _, key in COLUMNS),
            thresholds_cell(test, files[test.threshold_key]),
        ]
        rows.append([*row, baseline_cell(test)] if baseline else row)
    return rows


def _cell(test: TestRecord, key: str) -> str:
    """A metric's headline value, with its interval where it was measured round by round."""
    if key in INTERVAL_COLUMNS:
        return headline(test, key)
    return format_number(test.metrics_flat.get(key))


def thresholds_files(
    session: LLMPerfSession, tests: Sequence[TestRecord]
) -> dict[str, ThresholdsFile]:
    """Each test's thresholds file, as `thresholds_cell` shows it."""
    report = session.update_report
    written = set(report.written) if report is not None else set()
    files: dict[str, ThresholdsFile] = {}
    for test in tests:
        used = session.threshold_files(test.engine)
        path = used[0] if used else session.update_target(test.engine)
        files[test.threshold_key] = ThresholdsFile(
            shown=_shown(path, session.config.rootpath),
            exists=bool(used),
            written=(
                f"{session.update_target(test.engine)}: {test.threshold_key}" in written
                if report is not None
                else None
            ),
        )
    return files


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def engine_failure_lines(run_dir: Path) -> list[str]:
    """One line per engine that failed to start, with the command a server ran."""
    if not run_dir.is_dir():
        return []
    lines = []
    for failure in read_records(run_dir, "engine_failures"):
        error = str(failure.get("error") or "").split("\n", 1)[0]
        lines.append(f"engine failed to start: {error}")
        command = shlex.join(map(str, failure.get("command") or ()))
        if command and command not in error:
            lines.append(f"  its command: {command}")
    return lines


def dry_run_lines(reporter: Any) -> list[str]:
    """What each test of a dry run would send, from its skip reason (xdist forwards the
    reports), so that it shows without `-rs`."""
    lines = []
    for report in reporter.stats.get("skipped", ()):
        longrepr = getattr(report, "longrepr", None)  # (file, line, reason) once serialized too
        if not isinstance(longrepr, (tuple, list)) or len(longrepr) != 3:
            continue
        reason = str(longrepr[2]).removeprefix("Skipped: ")
        if reason.startswith(DRY_RUN_PREFIX):
            what = reason.removeprefix(DRY_RUN_PREFIX)
            lines.append(what if what.startswith(report.nodeid) else f"{report.nodeid}: {what}")
    return lines


# --- what the run noticed, under the table --------------------------------------

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


def server_count_notes(tests: Sequence[TestRecord]) -> list[str]:
    """A warning for each test whose server counted other requests than it sent; a note,
    not a warning, for tests on a managed server that xdist workers shared (every worker's
    requests are in its counts, by design: no per-worker attribution)."""
    notes = []
    shared = [t for t in tests if t.engine_info.details.get("shared_server")]
    shared_ids = {id(t) for t in shared}
    read = [t.threshold_key for t in shared if t.metric("server_requests") is not None]
    if read:
        notes.append(
            f"note: {len(read)} tests read a server that xdist workers shared ({_names(read)}): "
            "its counts and levels (requests, queue, batch, KV cache) include the other "
            "workers' requests, so server_requests is not compared with each test's own"
        )
    for test in tests:
        counted, ours = test.metric("server_requests"), test.metric("requests")
        if id(test) in shared_ids:
            continue
        if counted is not None and ours is not None and counted != ours:
            notes.append(
                f"warning: {test.threshold_key}: the server finished {counted:.0f} requests "
                f"during the rounds, this test sent {ours:.0f}: another client shared the "
                "server (its queue and batch held theirs too), or requests were lost"
            )
    return notes


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
        *server_count_notes(tests),
        *thread_notes(tests, threads),
        *load_notes(metadata.get("load_average_at_start"), threads),
        *not_applied_notes(tests),
        *unreliable_notes(tests),
        *inconclusive_notes(tests),
    ]


def inconclusive_notes(tests: Sequence[TestRecord]) -> list[str]:
    """One warning for the tests whose bounds or baseline stayed undecided: they passed
    without evidence either way, which a green run must not hide (`--llmperf-strict` fails
    them; more rounds, `--llmperf-rounds auto` or pooled baselines decide more)."""
    undecided: list[str] = []
    for test in tests:
        metrics = [c.metric for c in test.thresholds.checked if c.verdict == "inconclusive"]
        if test.baseline is not None:
            metrics += [c.metric for c in test.baseline.judged if c.verdict == "inconclusive"]
        if metrics:
            undecided.append(f"{test.threshold_key} ({', '.join(dict.fromkeys(metrics))})")
    if not undecided:
        return []
    return [
        f"warning: {len(undecided)} test(s) passed undecided, neither within nor beyond a bound "
        "or baseline with confidence (not failed; --llmperf-strict fails them, more rounds "
        f"decide): {'; '.join(undecided)}"
    ]


def ab_lines(tests: Sequence[TestRecord]) -> list[str]:
    """A line per A/B test (`llmperf.compare`): how its turns ran and its speedup."""
    return [f"A/B {t.key}: {readout.ab_text(t)}" for t in tests if t.ab is not None]


def write_terminal_summary(reporter: Any, session: LLMPerfSession) -> None:
    tests = read_test_records(session.run_dir) if session.run_dir.exists() else ()
    failures = engine_failure_lines(session.run_dir)
    dry_run = dry_run_lines(reporter) if session.settings.dry_run else []
    if not (tests or failures or dry_run or session.update_report or session.unmatched_thresholds):
        return
    reporter.write_sep("=", "llmperf summary")
    if session.baseline is not None and session.baseline_mismatch:
        reporter.write_line(
            f"note: baseline {session.baseline.run_id} differs from this run "
            f"({'; '.join(session.baseline_mismatch)}; baseline first), compared all the same "
            "(--llmperf-allow-mismatch)",
            yellow=True,
        )
    if dry_run:
        reporter.write_line("dry run: what each test would send (no engine started)")
        for line in dry_run:
            reporter.write_line(f"  {line}")
    if tests:
        own = [t for t in tests if t.engine == OWN_ENGINE]
        engines = [t for t in tests if t.engine != OWN_ENGINE]
        files = thresholds_files(session, tests)
        places = grouped(tests)
        if engines:
            baseline = any(t.baseline is not None for t in engines)
            header = ["test", "engine", *(name for name, _ in COLUMNS), "thresholds"]
            header += ["baseline"] if baseline else []
            rows = summary_rows(engines, files, baseline)
            if len(places) > 1:  # tests measured on several hosts: grouped by host
                header.insert(2, "host")
                labels = host_labels(tests)
                order = {label: n for n, (label, _) in enumerate(places)}
                for row, test in zip(rows, engines, strict=True):
                    row.insert(2, labels[test.test_id])
                rows.sort(key=lambda row: order[row[2]])
            for text in render_table(header, rows).splitlines():
                reporter.write_line(text)
        if own:
            header = ["your code", "metrics", "thresholds"]
            for text in render_table(header, own_rows(own, files)).splitlines():
                reporter.write_line(text)
        if len(places) > 1:
            for line in host_lines(tests):
                reporter.write_line(line)
        for load in merged_loads(tests, session.run_dir):  # `suite.split`
            (line,) = load_lines([load])
            reporter.write_line(line, yellow=load["more_client_hosts_needed"])
        for line in ab_lines(tests):
            reporter.write_line(line)
        for note in run_notes(tests, session.metadata):
            reporter.write_line(note, yellow=True)
    for line in failures:
        reporter.write_line(line, red=True)
    if tests or failures:
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
