"""The processes a test leaves behind: this process's descendants, read from `/proc`.

`llmperf_gpus` lists them before a test and after it; one alive after the test that was
not there before, and that is not the run's own (the reaper, an engine's or a server's
process group: `reaper.owns`), is a leak: the test fails naming it, and it is ended so
that it cannot hold the next test's GPU. Without `/proc` (not Linux) the list is empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_llmperf.procs.reaper import reaper

PROC = Path("/proc")


@dataclass(frozen=True)
class Child:
    pid: int
    command: str


def descendants(pid: int | None = None) -> dict[int, Child]:
    """Every live (not zombie) descendant of `pid` (default: this process)."""
    root = os.getpid() if pid is None else pid
    parents: dict[int, int] = {}
    for entry in PROC.glob("[0-9]*") if PROC.is_dir() else ():
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The fields after the command (which may hold spaces) start at its last ")".
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: dict[int, Child] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = Child(child, _command(child))
                frontier.append(child)
    return found


def parent_of(pid: int) -> int | None:
    """The parent of `pid`, or None when it is gone."""
    try:
        return int((PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def left_behind(before: set[int]) -> list[Child]:
    """Descendants alive now that were not in `before` and are not the run's own."""
    return [c for pid, c in descendants().items() if pid not in before and not reaper.owns(pid)]


def end(children: list[Child], grace_s: float = 3.0) -> None:
    """SIGTERM each, SIGKILL after `grace_s` those still alive."""
    for child in children:
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(c.pid) for c in children):
        time.sleep(0.05)
    for child in children:
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(child.pid, os.WNOHANG)  # ours: reap it, or it stays a zombie


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        state = (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
        return state != "Z"
    return False


def _command(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or "?"
