"""The live status line (`plugin.progress`): when it shows, what it says, and that it leaves
the terminal as pytest wrote it.

The end-to-end runs measure the tiny model on the hf engine on a pseudo terminal
(`tests.terminal`), the way a user sees a run; the others drive the line through pytest's own
`TerminalWriter` on a string, replayed as a terminal shows it.
"""

from __future__ import annotations

import io
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
from _pytest._io import TerminalWriter
from scipy import stats

from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.plugin.progress import (
    Progress,
    ProgressMode,
    StatusLine,
    in_ci,
    progress_wanted,
)
from tests.terminal import run_on_terminal, screen

# --- when it shows ---------------------------------------------------------------------------

TERMINAL: dict[str, Any] = {
    "terminal": True,
    "verbosity": 0,
    "worker": False,
    "ci": False,
    "capture": "fd",
}
QUIET_CASES: dict[str, dict[str, Any]] = {
    "not a terminal": {"terminal": False},
    "-q": {"verbosity": -1},
    "xdist worker": {"worker": True},
    "CI": {"ci": True},
    "-s": {"capture": "no"},
    "--capture=tee-sys": {"capture": "tee-sys"},
}


def wanted(mode: ProgressMode, **changes: Any) -> bool:
    situation: dict[str, Any] = {**TERMINAL, **changes}
    return progress_wanted(mode, **situation)


def test_auto_shows_on_a_terminal_only() -> None:
    assert wanted("auto")
    assert wanted("auto", verbosity=2, capture="sys")
    for case, changes in QUIET_CASES.items():
        assert not wanted("auto", **changes), case


def test_on_and_off_override_every_situation() -> None:
    for changes in QUIET_CASES.values():
        assert wanted("on", **changes)
    assert not wanted("off")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), ("", False), ("false", False), ("0", False)],
)
def test_ci_is_the_variable_set_to_something_true(value: str, expected: bool) -> None:
    assert in_ci({"CI": value}) is expected
    assert not in_ci({})


# --- what it says, and how it is drawn ------------------------------------------------------

PREFIX = "test_x.py::test_decode "


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def terminal(width: int = 100) -> tuple[TerminalWriter, io.StringIO]:
    """pytest's writer on a string, as the reporter leaves it while a test runs (`-v`)."""
    out = io.StringIO()
    writer = TerminalWriter(out)
    writer.fullwidth = width
    writer.write(PREFIX)
    return writer, out


def record(tokens: int, error: str | None = None) -> RequestRecord:
    return RequestRecord("r", 0, 8, tokens, "length", 1.0, 2.0, 0.1, 0.0, error=error)


def test_short_tests_print_nothing() -> None:
    writer, out = terminal()
    clock = Clock()
    progress = Progress(StatusLine(writer), 3, started=0.0, clock=clock)
    clock.now = 1.9
    progress.on_round(0, [record(10)], 0.5)
    progress.close()
    assert out.getvalue() == PREFIX
    assert "round 1 of 3" in progress.text  # composed, not drawn


def test_line_shows_rounds_throughput_so_far_and_interval_then_is_erased() -> None:
    writer, out = terminal()
    clock = Clock()
    progress = Progress(StatusLine(writer), 3, started=0.0, clock=clock)
    clock.now = 2.5
    # 100 tok/s, then 125 (the failed request's tokens do not count), then 110.
    progress.on_round(0, [record(40), record(60)], 1.0)
    assert screen(out.getvalue()) == [PREFIX + " llmperf round 1 of 3 | 100 tok/s"]
    progress.on_round(1, [record(100), record(50, error="timeout")], 0.8)
    progress.on_round(2, [record(110)], 1.0)

    logs = [math.log(v) for v in (100, 125, 110)]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(logs) / math.sqrt(3)
    centre = math.exp(statistics.fmean(logs))  # the geometric mean: 111.2
    width = math.sinh(half)  # (e^(m+h) - e^(m-h)) / 2 / e^m, the log-t interval's
    expected = f" llmperf round 3 of 3 | {centre:,.0f} tok/s ±{width * 100:.1f}%"
    assert screen(out.getvalue()) == [PREFIX + expected]
    assert expected == " llmperf round 3 of 3 | 111 tok/s ±28.2%"

    progress.close()
    writer.write("PASSED")  # pytest's outcome lands where it would have
    assert screen(out.getvalue()) == [PREFIX + "PASSED"]
    assert writer.width_of_current_line == len(PREFIX + "PASSED")  # pytest's count intact


def test_until_decided_and_undecided_metrics() -> None:
    writer, out = terminal(width=120)
    progress = Progress(StatusLine(writer), None, started=-10.0)
    progress.round_done(3, None, {"output_tok_per_s": 2000.0}, 0.031, ["ttft_ms.p90", "x"])
    assert screen(out.getvalue()) == [
        PREFIX + " llmperf round 4, until decided | 2,000 tok/s ±3.1% | undecided: ttft_ms.p90, x"
    ]


def test_a_shorter_text_leaves_nothing_of_the_longer_one() -> None:
    writer, out = terminal()
    progress = Progress(StatusLine(writer), None, started=-10.0)
    progress.round_done(0, None, {}, None, ["ttft_ms.p90", "tpot_ms.p90"])
    progress.round_done(1, None, {}, None, [])
    assert screen(out.getvalue()) == [PREFIX + " llmperf round 2, until decided"]


def test_the_line_is_cut_to_the_terminal_and_skipped_without_room() -> None:
    writer, out = terminal(width=len(PREFIX) + 30)
    line = StatusLine(writer)
    line.show(" llmperf round 1 of 3 | 1,234 tok/s ±3.1%")
    (shown,) = screen(out.getvalue())
    assert shown == PREFIX + " llmperf round 1 of 3 | 1,..."
    assert len(shown) == len(PREFIX) + 29  # the last column stays free: no wrap
    line.clear()

    writer, out = terminal(width=len(PREFIX) + 10)
    StatusLine(writer).show(" llmperf round 1 of 3")
    assert out.getvalue() == PREFIX


def test_text_pytest_wrote_meanwhile_is_not_blanked() -> None:
    """Live logging writes its own lines during a test: what it wrote stays."""
    writer, out = terminal()
    line = StatusLine(writer)
    line.show(" llmperf round 1 of 3")
    writer.write("\nINFO engine ready")
    line.clear()
    assert out.getvalue().endswith("INFO engine ready")  # nothing blanked after it
    assert screen(out.getvalue())[1] == "INFO engine ready"


# --- the option ------------------------------------------------------------------------------


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nllmperf_progress = sometimes\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini option llmperf_progress: 'sometimes' is not one of auto, on, off*"]
    )


def test_bad_option_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--llmperf-progress=yes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-progress: invalid choice: 'yes'*"])


# --- a user's run on a terminal -------------------------------------------------------------

# Past the line's 2 s delay before its measured rounds, so that every round would be shown:
# the engine's start (seconds here) counts, as it does for a user; a sleep tops it up.
LONG_TEST = """
import time
from pytest_llmperf import SyntheticWorkload

def test_long(llmperf):
    started = time.monotonic()
    tiny = SyntheticWorkload(num_requests=1, input_tokens=1, output_tokens=1)
    llmperf.measure(workload=tiny, rounds=1, warmup_rounds=0, label="start")
    time.sleep(max(0.0, 2.1 - (time.monotonic() - started)))
    llmperf.measure(
        workload=SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=8), rounds=3
    )
"""

#: What a drawn status line always holds.
STATUS = "llmperf round"


def on_terminal(pytester: pytest.Pytester, *args: str, ci: bool = False) -> str:
    """Run pytest on a pseudo terminal in pytester's folder; what it wrote, as written."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--gpus", "cpu", *args]
    status, raw = run_on_terminal(argv, Path(pytester.path), env)
    assert status == 0, raw[-3000:]
    return raw


def test_status_line_on_a_terminal_then_erased_before_the_outcome(
    pytester: pytest.Pytester,
) -> None:
    """`on` under CI: it overrides CI; on a real terminal the line shows each round and is
    gone before pytest writes PASSED."""
    pytester.makepyfile(test_long=LONG_TEST)
    raw = on_terminal(pytester, "-v", "--llmperf-progress=on", ci=True)
    for k in (1, 2, 3):
        assert f"{STATUS} {k} of 3 | " in raw, raw[-3000:]
    assert " tok/s ±" in raw  # the interval from the second round on
    shown = screen(raw)
    assert not [line for line in shown if STATUS in line]
    (outcome,) = [line for line in shown if "PASSED" in line]
    assert outcome.split() == ["test_long.py::test_long", "PASSED", "[100%]"]


def test_auto_on_a_terminal_shows_the_line(pytester: pytest.Pytester) -> None:
    """The control for the quiet runs below: `auto` does draw on a terminal (driven here
    without an engine, so that it costs a second)."""
    pytester.makepyfile(
        test_drawn="""
        from pytest_llmperf.plugin.progress import open_progress

        def test_drawn(request):
            progress = open_progress(
                request.config, "auto", worker=False, total=2, started=-10.0
            )
            progress.round_done(0, 2, {"output_tok_per_s": 100.0}, None)
            progress.close()
        """
    )
    raw = on_terminal(pytester, "-v")
    assert f"{STATUS} 1 of 2 | 100 tok/s" in raw
    assert not [line for line in screen(raw) if STATUS in line]


def test_no_line_without_a_terminal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_long=LONG_TEST)
    result = pytester.runpytest("-v", "--gpus", "cpu")
    result.assert_outcomes(passed=1)
    assert STATUS not in result.stdout.str()


@pytest.mark.parametrize("args", [["-q"], ["-n", "2"]], ids=["quiet", "xdist"])
def test_no_line_under_quiet_or_xdist(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile(test_long=LONG_TEST)
    raw = on_terminal(pytester, *args)
    assert "1 passed" in raw
    assert STATUS not in raw
