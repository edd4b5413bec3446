"""The `llmperf` command (also `python -m pytest_llmperf`): runs as data.

    llmperf list [--results-dir DIR]
    llmperf show RUN
    llmperf rebuild RUN [--force]
    llmperf compare BASE NEW [--tolerance METRIC:CHANGE ...]
    llmperf trend [RUN ... | RESULTS_DIR] [--metric M ...] [--test GLOB] [--window N]
    llmperf report RUN [RUN ...] -o report.html [--force]
    llmperf dashboard [RESULTS_DIR] [--host 127.0.0.1] [--port 8501]
    llmperf workload stats DATASET [--model tiny] [--coverage 0.9]
    llmperf reference     grid keys per engine, workload and task parameters (README's tables)

RUN is a run folder, its summary.json, a run id under the results folder, or
`latest` / `latest~N` (see `pytest_llmperf.results.runs`). The results folder is the
project's, found as pytest finds it from the working folder (rootdir and ini file, the
ini's `llmperf_results_dir`: `pytest_llmperf.results.readback.project`), so the command works from
any folder of the project; `--results-dir` names another. Exit status: 0 fine, 1 a regression
(compare, trend), 2 bad input: one line on stderr that says what and where (a run file of the
wrong shape names its file, line and key), never a traceback.

`report -o` writes over a file only if it is a report this command wrote, or with `--force`,
and never inside a run folder. `rebuild --force` rewrites a finished run's summary from its
records and keeps what the summary said of the run's end (finished, interrupted, when).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.results.readback import overview
from pytest_llmperf.results.readback.project import find_project
from pytest_llmperf.results.readback.rebuild import cut_short_tests, is_cut_short
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import (
    Run,
    find_runs,
    is_run_dir,
    open_run,
    read_test_records,
    run_refs,
)
from pytest_llmperf.results.writer import worker_copies, write_summary
from pytest_llmperf.tables import render_table

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2


def _path(text: str) -> Path:
    """A path argument; an empty one (an unset shell variable) is refused, not read as '.'."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty value")
    return Path(text)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (`llmperf show: error: ...`) as the command's
    own are, rather than after a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from pytest_llmperf.results import baseline  # as light as the trend parser's imports

    parser = _Parser(
        prog="llmperf", description="List, show, compare and report pytest-llmperf runs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--results-dir",
            type=_path,
            default=None,
            help="where runs are (default: the project's, as pytest finds its rootdir and "
            "ini file from here: <rootdir>/<llmperf_results_dir>, results unless the ini says)",
        )
        return sub

    command("list", "list the runs in the results folder, oldest first")
    show = command("show", "one run's tests and their main metrics")
    show.add_argument("run", help="run folder, summary.json, run id, or latest[~N]")
    rebuild = command(
        "rebuild",
        "write summary.json of a run that has none (it was killed) from the records it "
        "appended; a torn last line is left out",
    )
    rebuild.add_argument("run", help="run folder, run id, or latest[~N]")
    rebuild.add_argument(
        "--force", action="store_true", help="rewrite the summary of a run that has one"
    )

    merge = command("merge", "join runs of parts of a suite (shards, hosts) into one run")
    merge.add_argument("runs", nargs="+", metavar="RUN", help="run folders, ids, or latest~N")
    merge.add_argument("-o", "--output", type=_path, required=True, help="the new run's folder")

    compare = command("compare", "per-test metric changes from BASE to NEW; 1 on regression")
    compare.add_argument("base")
    compare.add_argument("new")
    compare.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC:CHANGE",
        help="allowed worsening, e.g. output_tok_per_s:-5%% or ttft_ms.p90:+10%% or "
        "accuracy:-0.02 (absolute); METRIC may be a glob (ttft_ms.*). Repeatable. "
        "Default: the metrics and tolerances of pytest_llmperf.results.compare.DEFAULT_TOLERANCES",
    )
    compare.add_argument("--all", action="store_true", help="show unchanged metrics too")

    _trend_parser(command)

    calibrate = command(
        "calibrate",
        "write thresholds from the noise of several runs of a suite (their spread between "
        "runs and within each): <thresholds-dir>/<hardware>/<engine>.yaml",
    )
    calibrate.add_argument("runs", nargs="+", metavar="RUN", help="run folders, ids, or latest:N")
    calibrate.add_argument(
        "--thresholds-dir",
        type=_path,
        default=None,
        help="default: the project's (<rootdir>/<llmperf_thresholds_dir>, thresholds unless the "
        "ini says)",
    )
    calibrate.add_argument(
        "--drift",
        type=float,
        default=baseline.DEFAULT_DRIFT,
        metavar="FRACTION",
        help="the least drift between runs to write bounds for, whatever the runs showed (a "
        "machine other than the one calibrated on drifts more: BENCHMARKS.md 'Gate power' "
        "measured 0.04-0.12 between pytest processes on the 2-core VM). Default: "
        f"{baseline.DEFAULT_DRIFT:g}",
    )

    report = command("report", "a self-contained HTML report of one or more runs")
    report.add_argument("runs", nargs="+", metavar="RUN")
    report.add_argument(
        "-o",
        "--output",
        type=_path,
        default=Path("report.html"),
        help="the report's file; a file that is not a report this command wrote is "
        "kept unless --force, and a run folder's files never (default: report.html)",
    )
    report.add_argument(
        "--force", action="store_true", help="write over an existing file that is not a report"
    )

    dashboard = commands.add_parser("dashboard", help="a Streamlit dashboard over a results folder")
    dashboard.add_argument(
        "results_dir", nargs="?", type=_path, default=None, help="default: the project's"
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    dashboard.add_argument("--port", type=int, default=8501)

    commands.add_parser(
        "reference",
        help="grid keys per engine and the parameters of measure, workloads and tasks, with "
        "defaults, as README.md's reference shows them (made from the code)",
    )

    workload = commands.add_parser("workload", help="facts about a dataset")
    workload_commands = workload.add_subparsers(dest="workload_command", required=True)
    stats = workload_commands.add_parser(
        "stats",
        help="input and output length percentiles, and the max-new-tokens that covers a share",
    )
    stats.add_argument("dataset", type=_path, help="JSONL dataset (prompt/messages, reference)")
    stats.add_argument("--model", default="tiny", help="whose tokens to count (default: tiny)")
    stats.add_argument(
        "--coverage",
        type=float,
        default=0.9,
        help="share of outputs the suggested max-new-tokens must cover (default: 0.9)",
    )
    return parser


def _trend_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    from pytest_llmperf.results import trend
    from pytest_llmperf.results.readback import trend_command

    parser = command(
        "trend",
        "where each test's metrics stepped over a series of runs, and whether the newest run "
        "regressed against the runs before it; 1 on a regression",
    )
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="runs in any order (put in time order), or results folders standing for all "
        "their runs (default: every run under --results-dir)",
    )
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="M",
        help="a metric to follow, as thresholds name it (ttft_ms.p99). Repeatable. Default: "
        + ", ".join(trend.HEADLINE_METRICS)
        + ", where recorded",
    )
    parser.add_argument(
        "--test", metavar="GLOB", help="only the tests whose id matches (* and ?; default: all)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=trend.DEFAULT_WINDOW,
        metavar="N",
        help=f"earlier runs the newest is judged against (default: {trend.DEFAULT_WINDOW})",
    )
    parser.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC:CHANGE",
        help="allowed worsening of the newest run, as for compare. Repeatable. Default: "
        "pytest_llmperf.results.compare.DEFAULT_TOLERANCES",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=trend.DEFAULT_ALPHA,
        help="error rate of the newest run's judgement, over every test and metric "
        f"(default: {trend.DEFAULT_ALPHA})",
    )
    parser.add_argument(
        "--drift",
        type=float,
        default=trend.DEFAULT_DRIFT,
        metavar="FRACTION",
        help="the drift between runs assumed when the newest run is judged against the first "
        f"runs of each series (a creep), as --llmperf-drift (default: {trend.DEFAULT_DRIFT:g})",
    )
    parser.add_argument(
        "--fail-on",
        choices=trend_command.FAIL_ON,
        default="any",
        help="exit 1 on a step for the worse anywhere or the newest run regressed (any), or "
        "on the newest run only (newest; the nightly job's gate) (default: any)",
    )


def _list(results_dir: Path) -> int:
    from pytest_llmperf.plugin.summary import missed_bounds

    runs = find_runs(results_dir)
    if not runs:
        print(f"no runs in {results_dir}")
        return EXIT_OK
    rows = []
    for run in runs:
        verdicts = list(overview.verdicts(run).values())
        misses = sum(missed_bounds(t) for t in run.tests)
        rows.append(
            (
                run.run_id,
                run.started_at,
                ",".join(overview.engines(run)),
                ",".join(overview.models(run)),
                str(run.summary.get("hardware") or "?"),
                str(verdicts.count("passed")),
                str(verdicts.count("failed") + verdicts.count("cut short")),
                "updated" if overview.updated_thresholds(run) else str(misses),
                _state(run),
            )
        )
    header = ("run", "started", "engine", "model", "hardware", "passed", "failed")
    print(render_table((*header, "threshold misses", "state"), rows))
    return EXIT_OK


def _state(run: Run) -> str:
    """finished, interrupted (Ctrl-C, SIGTERM), rebuilt (by `rebuild`), or unfinished
    (killed, or still going: no summary.json)."""
    if not run.finished:
        return "unfinished"
    if run.summary.get("rebuilt"):
        return "rebuilt"
    return "interrupted" if run.summary.get("interrupted") else "finished"


def _rebuild(run: Run, force: bool) -> int:
    if run.finished and not force:
        raise LLMPerfUsageError(
            f"{run.path}: has a summary.json already (--force rewrites it from the records)"
        )
    # A finished run keeps what its summary said of its end (finished or interrupted, when,
    # its hand-overs); only one that has none is marked rebuilt, as it was cut short.
    state = dict(run.summary) if run.finished else {"rebuilt": True, "interrupted": True}
    state.pop("schema_version", None)
    # Every record is read (strictly) before anything is written: a broken file stops it.
    try:
        tests = read_test_records(run.path)
        requests = list(run.requests())
        known = {r.get("test_id") for r in requests} | {t.test_id for t in tests}
        spare = worker_copies(run.path, "requests")  # xdist: tests the controller never got
        requests += [r for r in spare if r.get("test_id") not in known]
        # A test the run was measuring when it was killed has request records only.
        cut_short = cut_short_tests(
            requests, tests, overview.settings_of(run), str(run.summary.get("started_at", ""))
        )
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise LLMPerfUsageError(f"{run.path}: its records cannot be read ({exc})") from None
    path = write_summary(run.path, state, [t.as_record() for t in cut_short])
    short = f" (+{len(cut_short)} cut short, from their requests)" if cut_short else ""
    print(f"wrote {path}: {len(tests)} test(s){short}, {len(requests)} request record(s)")
    return EXIT_OK


def _report(refs: Sequence[str], out: Path, results_dir: Path, force: bool) -> int:
    from pytest_llmperf.report.html import write_report, written_by_report

    runs = [open_run(ref, results_dir) for ref in refs]
    if out.is_dir():
        raise LLMPerfUsageError(f"-o: {out} is a folder; give the report's file")
    holder = next((p for p in out.resolve().parents if is_run_dir(p)), None)
    if holder is not None:
        raise LLMPerfUsageError(
            f"-o: {out} is inside the run folder {holder}, whose files are the run's records: "
            "write the report elsewhere"
        )
    if out.exists() and not force and not written_by_report(out):
        raise LLMPerfUsageError(
            f"-o: {out} exists and is not a report written by llmperf report; "
            "--force writes over it"
        )
    try:
        write_report(runs, out)
    except OSError as exc:
        raise LLMPerfUsageError(f"-o: cannot write {out}: {exc}") from None
    print(f"wrote {out}")
    return EXIT_OK


#: The metrics `show` prints per test, when the test has them.
SHOW_METRICS = (
    "output_tok_per_s",
    "ttft_ms.p50",
    "ttft_ms.p90",
    "tpot_ms.p50",
    "e2e_ms.p90",
    "failure_rate",
    "accuracy",
    "exact_match",
)


def _show(run: Run) -> int:
    from pytest_llmperf.plugin.summary import bounds_text

    print(f"run {run.run_id}  started {run.started_at}  hardware {run.summary.get('hardware')}")
    print(f"folder {run.path}  ({_state(run)})")
    shown = [m for m in SHOW_METRICS if any(_value(t, m) is not None for t in run.tests)]
    rows = []
    for test in run.tests:
        rows.append(
            (
                test.key,
                test.engine,
                overview.test_verdict(run, test),
                bounds_text(test) or "none",
                *(_format(_value(test, m)) for m in shown),
            )
        )
    print(render_table(("test", "engine", "result", "thresholds", *shown), rows))
    for failure in overview.engine_failures(run):
        print(f"engine failed to start: {failure.get('error')}")
        if failure.get("command"):
            print(f"  its command: {shlex.join(map(str, failure['command']))}")
    for test in run.tests:
        if is_cut_short(test):
            print(f"{test.key}: cut short: {test.workload.get('note')}")
    return EXIT_OK


def _value(test: TestRecord, metric: str) -> float | None:
    value = test.metrics_flat.get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def _one_line(message: str) -> str:
    """An error as one line: a message quoting a file's text may hold line breaks."""
    return " ".join(message.split("\n"))


def _results_dir(given: Path | None) -> tuple[Path, str | None]:
    """`--results-dir` as given, else the project's (see the module docstring), with a hint
    for errors when the project's is not there."""
    if given is not None:
        return given, None
    project = find_project()
    hint = (
        None
        if project.results_dir.is_dir()
        else (
            f"looked for {project.describe()}: run llmperf inside the project, or pytest "
            "there first, or give --results-dir"
        )
    )
    return project.results_dir, hint


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    hint = None
    try:
        if hasattr(args, "results_dir"):
            args.results_dir, hint = _results_dir(args.results_dir)
        if args.command == "list":
            return _list(args.results_dir)
        if args.command == "show":
            return _show(open_run(args.run, args.results_dir))
        if args.command == "rebuild":
            return _rebuild(open_run(args.run, args.results_dir), args.force)
        if args.command == "merge":
            from pytest_llmperf.results.readback.merge import merge_runs

            merged = merge_runs([open_run(r, args.results_dir) for r in args.runs], args.output)
            print(f"wrote {merged.path}: {len(merged.tests)} test(s) of {len(args.runs)} runs")
            return EXIT_OK
        if args.command == "compare":
            from pytest_llmperf.results.compare import compare_command

            return compare_command(
                open_run(args.base, args.results_dir),
                open_run(args.new, args.results_dir),
                args.tolerance,
                show_all=args.all,
            )
        if args.command == "trend":
            from pytest_llmperf.results.readback.trend_command import trend_command
            from pytest_llmperf.results.trend import collect_runs

            return trend_command(
                collect_runs(args.runs, args.results_dir),
                args.metric,
                args.test,
                args.window,
                args.tolerance,
                args.alpha,
                args.fail_on,
                args.drift,
            )
        if args.command == "calibrate":
            from pytest_llmperf.thresholds.calibrate import calibrate

            refs = [ref for given in args.runs for ref in run_refs(given, "llmperf calibrate")]
            runs = [open_run(ref, args.results_dir, baseline=True) for ref in refs]
            thresholds_dir = args.thresholds_dir or find_project().thresholds_dir
            print("\n".join(calibrate(runs, thresholds_dir, drift=args.drift)))
            return EXIT_OK
        if args.command == "report":
            return _report(args.runs, args.output, args.results_dir, args.force)
        if args.command == "workload":
            from pytest_llmperf.suite.workload_stats import stats_lines

            print("\n".join(stats_lines(args.dataset, args.model, args.coverage)))
            return EXIT_OK
        if args.command == "reference":
            from pytest_llmperf.report.reference import reference_text

            print(reference_text(), end="")
            return EXIT_OK
        if args.command == "dashboard":
            from pytest_llmperf.report.dashboard import serve

            return serve(args.results_dir, host=args.host, port=args.port)
    except LLMPerfUsageError as exc:
        message = f"{exc} ({hint})" if hint else str(exc)
        print(f"llmperf {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file or folder that cannot be read: input, not a crash
        print(f"llmperf {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    raise SystemExit(main())
