"""The reaper: ends every process group the run started, however the run ends.

Engines and servers run in process groups of their own (so one signal ends a server and
everything it started), which also puts them out of reach of the signals that end the
run: a Ctrl-C at the terminal, a `kill -9` of pytest. The kernel's parent-death signal is
not enough either: it reaches only the direct child, not its own children (vLLM's engine
core), and a server may ignore or sit on SIGTERM while it serves (an orphaned
`python -m llama_cpp.server` was seen spinning at 99% CPU for 20 minutes).

So the first process group a pytest process starts also starts the reaper: a small
process in a session of its own that holds the read end of a pipe. The run writes
`+PGID` when it starts a group and `-PGID` once it has stopped it. When the pipe closes
(the run ended, normally or killed outright: the kernel closes it either way), the
reaper sends SIGTERM to every group still listed, SIGKILL after `GRACE_S` to those still
alive, and exits. It imports only the standard library and is run as a script, so it
starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

#: How long a group gets between SIGTERM and SIGKILL once the run is gone.
GRACE_S = 3.0


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_groups(pgids: set[int], grace_s: float) -> None:
    """SIGTERM (with SIGCONT, for stopped ones) to each group, SIGKILL after `grace_s`."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
            os.killpg(pgid, signal.SIGCONT)  # a stopped process keeps SIGTERM pending
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(group_alive(p) for p in pgids):
        time.sleep(0.05)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def end_group(pgid: int, term_wait_s: float, wait: Callable[[float], None]) -> None:
    """End the process group `pgid` that this process started: SIGTERM (with SIGCONT, since
    a stopped process keeps SIGTERM pending until it runs again), then SIGKILL if it outlives
    `term_wait_s`; `wait(seconds)` waits on the group's leader meanwhile (so that it is reaped,
    not left a zombie that keeps the group alive)."""
    for sig, wait_s in ((signal.SIGTERM, term_wait_s), (signal.SIGKILL, 10.0)):
        if not group_alive(pgid):
            return
        try:
            os.killpg(pgid, sig)
            os.killpg(pgid, signal.SIGCONT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while group_alive(pgid) and time.monotonic() < deadline:
            wait(0.05)


def _serve(commands: IO[str]) -> None:
    """The reaper's loop: follow the run's `+PGID` / `-PGID` lines until the pipe closes."""
    # Terminal signals are for the run, not for its last line of defence.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    groups: set[int] = set()
    for line in commands:
        sign, _, number = line.strip().partition(" ")
        with contextlib.suppress(ValueError):
            if sign == "+":
                groups.add(int(number))
            elif sign == "-":
                groups.discard(int(number))
    end_groups({p for p in groups if group_alive(p)}, GRACE_S)


class Reaper:
    """This process's link to its reaper (started on first use, one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._pid = os.getpid()
        self._groups: set[int] = set()

    def owns(self, pid: int) -> bool:
        """Whether `pid` is the reaper or in a group it watches (the run's engines and
        servers), not a process a test left behind."""
        if self._process is not None and pid == self._process.pid:
            return True
        try:
            return os.getpgid(pid) in self._groups
        except OSError:
            return False

    def _pipe(self) -> IO[str] | None:
        if self._process is None or self._pid != os.getpid():  # none yet, or we were forked
            self._pid = os.getpid()
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,  # out of reach of the run's terminal signals
                close_fds=True,
            )
        return self._process.stdin

    def _tell(self, line: str) -> None:
        with self._lock:
            try:
                pipe = self._pipe()
                if pipe is not None:
                    pipe.write(line + "\n")
                    pipe.flush()
            except (OSError, ValueError):  # a broken pipe: the groups are stopped directly
                pass

    def watch(self, pgid: int) -> None:
        """End group `pgid` if this process ends before calling `forget(pgid)`."""
        self._groups.add(pgid)
        self._tell(f"+ {pgid}")

    def forget(self, pgid: int) -> None:
        """Group `pgid` is stopped: nothing to do for it any more."""
        self._groups.discard(pgid)
        if self._process is not None:
            self._tell(f"- {pgid}")

    def close(self) -> None:
        """Let the reaper go (it ends whatever is still listed) and wait for it."""
        with self._lock:
            process, self._process = self._process, None
        if process is None or self._pid != os.getpid():
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=GRACE_S + 5.0)


#: The reaper of this process.
reaper = Reaper()


if __name__ == "__main__":
    _serve(sys.stdin)
