"""A live status line while a test measures: round k of n, throughput so far, how sure.

    test_smoke.py::test_decode_throughput[batch8]  llmperf round 3 of 5 | 1,234 tok/s ±3.1%

The fixture makes one `Progress` per measurement and feeds it each measured round
(`on_round`, from `measure.rounds.run_rounds`); it draws once the test has run `delay_s`
(2 s, the engine's start included), so that short tests print nothing, and is erased when
the rounds end, before pytest writes the test's outcome, so the output reads as if it had
never been there.

How it is drawn: after what pytest's terminal line holds (the test's name under `-v`, the
file and its dots otherwise), through pytest's own `TerminalWriter` but with `write_raw`,
which leaves the writer's idea of the current line alone. Each draw writes the text,
blanks what a longer earlier text left, and backspaces to where it began, so between
draws the cursor is where pytest's writer thinks it is: its next write (the outcome, its
`[ 50%]` column) lands as it would have. The text is cut to the room left on the line, so
it never wraps (a backspace cannot climb back over a wrap). Writes happen with pytest's
capture suspended (as its live logging does), since during a test fd 1 is a capture file.

Where it shows (`--llmperf-progress` / ini `llmperf_progress`): `auto` only when the
output is a terminal, not under `-q`, not in an xdist worker (its output is not the
terminal), not with capture off (`-s`: a test's own prints would land in the middle of the
line) and not under CI (`CI` set: logs keep every rewrite as a line); `on` always, `off`
never.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Literal, Protocol

import pytest

from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.measure.stats import estimate
from pytest_llmperf.tables import format_number

ProgressMode = Literal["auto", "on", "off"]
PROGRESS_MODES: tuple[ProgressMode, ...] = ("auto", "on", "off")

#: Seconds a test runs before its status line appears: below it, a line that flashes and
#: is erased tells nothing.
DEFAULT_DELAY_S = 2.0

#: The round metric the line shows, as the metrics name it.
THROUGHPUT = "output_tok_per_s"

#: Fewer free columns than this on the line, and the status is not drawn at all.
MIN_ROOM = 16

#: Capture modes that let a test's output reach the terminal in the middle of our line.
_CAPTURE_OFF = ("no", "tee-sys")


class LineWriter(Protocol):
    """What the status line needs of pytest's `TerminalWriter` (the reporter's `_tw`)."""

    @property
    def fullwidth(self) -> int: ...

    @property
    def width_of_current_line(self) -> int: ...

    def markup(self, text: str, **markup: bool) -> str: ...

    def write_raw(self, msg: str, *, flush: bool = False) -> None: ...


def progress_wanted(
    mode: ProgressMode, *, terminal: bool, verbosity: int, worker: bool, ci: bool, capture: str
) -> bool:
    """Whether a run shows the status line: `on` and `off` say so; `auto` (module docstring)
    only on a terminal, at normal verbosity or more, in the controller, outside CI, with
    the test's output captured."""
    if mode != "auto":
        return mode == "on"
    return terminal and verbosity >= 0 and not worker and not ci and capture not in _CAPTURE_OFF


def in_ci(environ: Mapping[str, str]) -> bool:
    """`CI` set, as GitHub Actions, GitLab and most CI services set it (`true`, `1`)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class StatusLine:
    """One line of text drawn after the terminal's current line and rewritten in place."""

    def __init__(
        self,
        writer: LineWriter,
        suspend: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self._writer = writer
        self._suspend = suspend
        #: Columns our text covers now, from where pytest's line ends.
        self._shown = 0
        #: pytest's line width when we last drew: if it changed, someone wrote since.
        self._anchor = -1

    def show(self, text: str) -> None:
        column = self._writer.width_of_current_line
        if column != self._anchor:
            self._shown = 0  # pytest wrote since: what we drew is behind its text, not here
        self._anchor = column
        room = self._writer.fullwidth - column - 1  # the last column can wrap: keep it free
        if column < 0 or room < MIN_ROOM:  # a line pytest cannot measure, or no room
            self.clear()
            return
        if len(text) > room:
            text = text[: room - 3] + "..."
        blank = max(self._shown - len(text), 0)
        self._write(self._writer.markup(text, cyan=True) + " " * blank)
        self._write("\b" * (len(text) + blank))
        self._shown = len(text)

    def clear(self) -> None:
        if self._shown and self._writer.width_of_current_line == self._anchor:
            self._write(" " * self._shown + "\b" * self._shown)
        self._shown = 0

    def _write(self, raw: str) -> None:
        with self._suspend():
            self._writer.write_raw(raw, flush=True)


class Progress:
    """A measurement's status line, fed round by round.

    `line` None: nothing is drawn (a run where `progress_wanted` says no); the rounds are
    still counted, which costs nothing.
    """

    def __init__(
        self,
        line: StatusLine | None,
        total: int | None,
        *,
        started: float | None = None,
        delay_s: float = DEFAULT_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._line = line
        self._total = total
        self._clock = clock
        self._started = clock() if started is None else started
        self._delay_s = delay_s
        #: Each metric's value in every round so far.
        self._samples: dict[str, list[float]] = {}
        self.text = ""
        #: What the last look of rounds until decided left undecided (`plugin.decide`).
        self.undecided: Sequence[str] = ()

    def on_round(self, index: int, records: Sequence[RequestRecord], duration: float) -> None:
        """`run_rounds`' callback: the round's throughput (output tokens of its answered
        requests over its duration) and the interval over the rounds so far."""
        if duration <= 0:
            return  # no time measured: no throughput to show
        tokens = sum(r.output_tokens for r in records if r.error is None)
        throughput = tokens / duration
        so_far = [*self._samples.get(THROUGHPUT, ()), throughput]
        width = estimate(so_far).relative_half_width if len(so_far) > 1 else None
        self.round_done(index, self._total, {THROUGHPUT: throughput}, width, self.undecided)

    def round_done(
        self,
        index: int,
        total: int | None,
        round_metrics: Mapping[str, float],
        interval_half_width: float | None,
        undecided: Sequence[str] = (),
    ) -> None:
        """Round `index` (from 0) of `total` (None: rounds until decided) ended with
        `round_metrics`; `interval_half_width` is the throughput interval's relative
        half-width over the rounds so far (0.031 shows as ±3.1%), `undecided` the metrics
        whose verdict more rounds may still decide."""
        for name, value in round_metrics.items():
            self._samples.setdefault(name, []).append(float(value))
        self.text = self._compose(index, total, interval_half_width, undecided)
        if self._line is not None and self._clock() - self._started >= self._delay_s:
            self._line.show(self.text)

    def close(self) -> None:
        """Erase the line; the measurement is over (or failed)."""
        if self._line is not None:
            self._line.clear()

    def _compose(
        self,
        index: int,
        total: int | None,
        interval_half_width: float | None,
        undecided: Sequence[str],
    ) -> str:
        rounds = f"round {index + 1} of {total}" if total else f"round {index + 1}, until decided"
        parts = [f" llmperf {rounds}"]
        throughputs = self._samples.get(THROUGHPUT)
        if throughputs:
            # The centre the interval is about: the geometric mean of the rounds.
            speed = f"{format_number(estimate(throughputs).centre)} tok/s"
            if interval_half_width is not None:
                speed += f" ±{interval_half_width * 100:.1f}%"
            parts.append(speed)
        if undecided:
            parts.append("undecided: " + ", ".join(undecided))
        return " | ".join(parts)


def open_progress(
    config: pytest.Config, mode: ProgressMode, *, worker: bool, total: int | None, started: float
) -> Progress:
    """A measurement's `Progress`, drawing on pytest's terminal when the run wants it."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not progress_wanted(
        mode,
        terminal=bool(reporter.isatty()),
        verbosity=config.get_verbosity(),
        worker=worker,
        ci=in_ci(os.environ),
        capture=str(config.getoption("capture", "fd")),
    ):
        return Progress(None, total, started=started)
    capture = config.pluginmanager.get_plugin("capturemanager")
    suspend = capture.global_and_fixture_disabled if capture is not None else nullcontext
    # `_tw`: the reporter's writer, which pytest offers no public name for (xdist and
    # pytest-benchmark use it too); only the Protocol's members are touched.
    return Progress(StatusLine(reporter._tw, suspend), total, started=started)
