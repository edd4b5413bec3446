"""Plain-text tables: the one renderer for every table pytest-llmperf prints.

The run's terminal summary, `llmperf list`, `show` and `compare`, a test's missed thresholds
and its regressions against a baseline all go through `render_table`, so they read alike:

    metric            measured  bound     margin  status
    ----------------  --------  --------  ------  ------
    output_tok_per_s     105.7  >= 120.5  -12.3%  MISS
    ttft_ms.p90            800  <= 800     +0.0%  ok

A header, a rule of dashes, one line per row; columns two spaces apart, trailing spaces
dropped. A column whose cells are all numbers (`1,234`, `-12.3%`, `2.5e+12`, or `-` for
none) is right-aligned, header included, so that digits line up; the others are left-aligned.

ASCII only, no colour, no terminal width: a long test id widens its column instead of
wrapping, so that every row stays one whole line in CI logs, in pytest's failure reports
and under `grep`. That is also why this is ours and not a library's: `rich` lays a table
out for a console's width (80 columns when the output is not a terminal, as in CI), wrapping
or cropping cells to fit, and would be a new core dependency of every pytest run for some
twenty lines of code.
This module imports nothing of the package, so that every layer can use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

GAP = "  "
_NUMBER = re.compile(r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?%?|[+-]?inf|nan")
_NONE = "-"


def render_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """`header`, a rule, then `rows` (cells already formatted), as lines without a final
    newline. Every row has as many cells as the header."""
    body = [list(row) for row in rows]
    for row in body:
        if len(row) != len(header):
            raise ValueError(f"table row has {len(row)} cells, the header {len(header)}: {row}")
    columns = [[header[i], *(row[i] for row in body)] for i in range(len(header))]
    widths = [max(len(cell) for cell in column) for column in columns]
    right = [_numeric(column[1:]) for column in columns]

    def line(cells: Sequence[str]) -> str:
        return GAP.join(
            cell.rjust(width) if is_right else cell.ljust(width)
            for cell, width, is_right in zip(cells, widths, right, strict=True)
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def _numeric(cells: Sequence[str]) -> bool:
    """Numbers (and `-` for none) only, and at least one number."""
    filled = [cell for cell in cells if cell != _NONE]
    return bool(filled) and all(_NUMBER.fullmatch(cell) for cell in filled)


def format_number(value: Any) -> str:
    """A metric's value for a table cell: `-` for none, thousands separated, 3 digits."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if number == 0:
        return "0"
    if abs(number) >= 100:
        return f"{number:,.0f}"
    if abs(number) >= 1:
        return f"{number:.2f}"
    return f"{number:.3g}"


def format_interval(value: Any, relative_half_width: float | None) -> str:
    """A value with its interval's relative half-width: `6,193 ±2.1%` (the value alone
    without one)."""
    text = format_number(value)
    if value is None or relative_half_width is None:
        return text
    if relative_half_width >= 10:  # two rounds 10x apart: a width that says "don't know"
        return f"{text} ±>999%"
    return f"{text} ±{relative_half_width * 100:.1f}%"
