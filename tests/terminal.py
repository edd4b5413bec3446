"""A terminal for the tests: run a command on a pseudo terminal, and read its screen.

pytester's `spawn_pytest` needs pexpect, which the project does not depend on; the standard
library's `pty` gives the child a real terminal (isatty() true, a window size) all the same.
`screen` replays what was written the way a terminal shows it (carriage returns, backspaces,
colours dropped), so a test can tell a line that was rewritten from one that stayed.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Control sequences that change colour or move the cursor within a line; dropped.
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_terminal(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    *,
    columns: int = 120,
    timeout_s: float = 300,
) -> tuple[int, str]:
    """Run `argv` with stdin, stdout and stderr on a new pseudo terminal `columns` wide; its
    exit status and everything it wrote, as written (rewrites included)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    child = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env={**env, "TERM": "xterm", "COLUMNS": str(columns)},
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,  # the terminal becomes the child's own
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal's last follower end
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            child.kill()
        status = child.wait(timeout=30)
    finally:
        os.close(leader)
    return status, b"".join(chunks).decode("utf-8", errors="replace")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows after `raw`: `\\r` returns to the line's start, `\\b` steps
    back one column, later characters overwrite earlier ones; trailing blanks dropped."""
    lines: list[list[str]] = [[]]
    column = 0
    for char in _ESCAPE.sub("", raw):
        line = lines[-1]
        if char == "\n":
            lines.append([])
            column = 0
        elif char == "\r":
            column = 0
        elif char == "\b":
            column = max(column - 1, 0)
        else:
            line.extend(" " * (column + 1 - len(line)))
            line[column] = char
            column += 1
    return ["".join(line).rstrip() for line in lines]
