"""A thresholds file's comments, kept across a rewrite (`thresholds.update`).

An update renders the file afresh from its bounds, and a YAML writer knows nothing of the
comments it read: yet the notes people write in these files (where a bound came from, which
one was raised by hand and why) are the file's history. So they are read before and put back
after the rewrite:

- the comment lines at the top of the file stay at the top (the update's own header, which
  says what the noise fields mean, is written afresh below them);
- a full-line comment anywhere below stays with the test entry that follows it (comments
  precede what they describe); those after the last entry stay at the end;
- a comment at the end of a test's line or of a metric's line stays on that line.

Blank lines are not kept: the writer spaces the file its own way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

#: The update's own header (see `generated_header`): never kept as a user's comment, since
#: each rewrite writes it afresh.
_HEADER = (
    "# Written by pytest --llmperf-update-thresholds or llmperf calibrate. Bounds with noise\n"
    "# are prediction limits for a new run (noise: the spread of a run's mean, runs and\n"
    "# rounds it was seen over, detects: the smallest change caught in 80% of runs; see\n"
    "# pytest_llmperf/thresholds/noise.py); the others are the value with a margin of "
)
_HEADER_LINES = _HEADER.splitlines()
_LAST_HEADER_LINE = re.compile(re.escape(_HEADER_LINES[-1]) + r"[0-9.e+-]+%\.$")

#: Where a line's own comment is: (test id, None) for a test's line, (test id, metric) for
#: a metric's.
Place = tuple[str, str | None]


def generated_header(margin: float) -> str:
    """The lines an update writes at the top of every file it writes."""
    return f"{_HEADER}{margin * 100:g}%.\n"


@dataclass
class Comments:
    """The comments of one file, by where they belong."""

    head: list[str] = field(default_factory=list)
    above: dict[str, list[str]] = field(default_factory=dict)
    inline: dict[Place, str] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)


def _places(text: str) -> dict[int, tuple[Place, int]]:
    """Each test's and metric's line (0-based): where it belongs and the column where its
    value ends on that line (what follows is its comment, if any)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    found: dict[int, tuple[Place, int]] = {}
    if not isinstance(root, yaml.MappingNode):
        return found
    for key, tests in root.value:
        if key.value != "tests" or not isinstance(tests, yaml.MappingNode):
            continue
        for test_key, entry in tests.value:
            line, column = test_key.end_mark.line, test_key.end_mark.column
            found[line] = ((test_key.value, None), column)
            if not isinstance(entry, yaml.MappingNode):
                continue
            for metric_key, bound in entry.value:
                end = bound.end_mark if bound.end_mark.line == metric_key.start_mark.line else None
                column = end.column if end is not None else metric_key.end_mark.column
                found[metric_key.start_mark.line] = ((test_key.value, metric_key.value), column)
    return found


def _own_comment(line: str, column: int) -> str | None:
    rest = line[column:].lstrip(" :\t")
    return rest if rest.startswith("#") else None


def _without_generated_header(head: list[str]) -> list[str]:
    n = len(_HEADER_LINES)
    for start in range(len(head) - n + 1):
        block = head[start : start + n]
        if block[:-1] == _HEADER_LINES[:-1] and _LAST_HEADER_LINE.match(block[-1]):
            return head[:start] + head[start + n :]
    return head


def read_comments(text: str) -> Comments:
    """The comments of a thresholds file's text (a text YAML cannot read has none kept)."""
    places = _places(text)
    comments = Comments()
    lines = text.splitlines()
    at_top = True
    pending: list[str] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if at_top and (not stripped or stripped.startswith("#")):
            if stripped:
                comments.head.append(line)
            continue
        at_top = False
        if stripped.startswith("#"):
            pending.append(line)
        elif number in places:
            place, column = places[number]
            if place[1] is None and pending:
                comments.above[place[0]] = pending
                pending = []
            own = _own_comment(line, column)
            if own is not None:
                comments.inline[place] = own
    comments.head = _without_generated_header(comments.head)
    comments.tail = pending
    return comments


def put_back(text: str, comments: Comments) -> str:
    """`text` (a file the update rendered, its header first) with `comments` in place."""
    places = _places(text)
    out = list(comments.head)
    for number, line in enumerate(text.splitlines()):
        place = places.get(number, (None, 0))[0]
        if place is not None and place[1] is None:
            out.extend(comments.above.get(place[0], ()))
        own = comments.inline.get(place) if place is not None else None
        out.append(f"{line}  {own}" if own else line)
    out.extend(comments.tail)
    return "\n".join(out) + "\n"
