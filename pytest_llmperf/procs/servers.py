"""Managed servers: start an inference server from an argument list, wait, always stop it.

`ManagedServer` starts the command (never through a shell) in a session of its own,
with its output in a log file, and waits for its health URL with a deadline while
watching the process: a server that exits first fails with its exit status and the end
of its log. Stopping ends the whole process group (SIGTERM, then SIGKILL) and waits.

No server outlives the run: every started server is stopped when the pytest session
ends (the `vllm-server` engine's `close`, called by the session), at interpreter exit
(`atexit`), and, if the test process is killed outright, by the reaper (`reaper`), which
ends the server's whole group, SIGKILL after a grace period; the kernel's parent-death
signal (Linux `PR_SET_PDEATHSIG`) is a second line for the server process itself.
A server that stops cleanly takes its log with it; one that failed keeps it (its path
is in the error).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_llmperf.procs.reaper import end_group, group_alive, reaper

LOG_TAIL_CHARS = 3000
#: How long a server gets to stop on SIGTERM before SIGKILL: llama-cpp-python's server
#: (uvicorn) waits for requests in flight, and one that hung never finishes them.
STOP_GRACE_S = 10.0
_live: weakref.WeakSet[ManagedServer] = weakref.WeakSet()


class ServerError(RuntimeError):
    """The server could not be started or did not become healthy in time. `argv` is the
    whole command that was run (the message shows it in full, shell-quoted, so that it
    can be run by hand to see the server fail)."""

    def __init__(self, message: str, argv: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.argv = tuple(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def set_parent_death_signal() -> None:
    """In a child, between fork and exec: SIGTERM when the parent dies (Linux; elsewhere
    nothing)."""
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    set_parent_death_signal()


class ManagedServer:
    def __init__(
        self,
        argv: Sequence[str],
        health_url: str,
        *,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        if isinstance(argv, str):
            raise TypeError("argv must be a list of arguments, not a shell string")
        self.argv = list(argv)
        self.health_url = health_url
        self.env = dict(env) if env is not None else None
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(tempfile.mkstemp(prefix="llmperf-server-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        #: Keep the log when the server is stopped (it failed, and a message names the log).
        self.keep_log = False

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(  # an argument list: no shell, no quoting bugs
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env is not None else None,
                preexec_fn=_die_with_parent,
            )
        _live.add(self)
        reaper.watch(self.process.pid)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.keep_log = True
                self.stop()
                raise ServerError(
                    f"server exited with status {code} before it was healthy; its command: "
                    f"{shlex.join(self.argv)}\nend of its log ({self.log_path}):\n"
                    f"{self.log_tail()}",
                    self.argv,
                )
            if self._healthy():
                return
            time.sleep(0.5)
        self.keep_log = True
        self.stop()
        raise ServerError(
            f"server not healthy at {self.health_url} after {self.start_timeout_s:.0f} s; its "
            f"command: {shlex.join(self.argv)}\nend of its log ({self.log_path}):\n"
            f"{self.log_tail()}",
            self.argv,
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = STOP_GRACE_S) -> None:
        """End the server's process group: SIGTERM, then SIGKILL after `timeout_s`.

        Safe to call from another thread while a request is in flight (a hung server
        is ended this way); the in-flight requests then fail with a connection error.
        """
        process, self.process = self.process, None
        if process is None:
            return

        def wait(seconds: float) -> None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=seconds)

        end_group(process.pid, timeout_s, wait)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        _live.discard(self)
        if not group_alive(process.pid):
            reaper.forget(process.pid)
        if not self.keep_log:
            self.log_path.unlink(missing_ok=True)


def shared_servers_dir(run_uid: str) -> Path:
    """Where the xdist workers of run `run_uid` keep their shared servers' state."""
    return Path(tempfile.gettempdir()) / f"llmperf-servers-{run_uid}"


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop(timeout_s=10.0)


class SharedServer:
    """One server per configuration, shared by the pytest-xdist workers of a run.

    The first worker to ask starts the server and owns it; the others find its URL in
    a state file and count themselves in. Every change of the state happens under an
    exclusive file lock. When its owner is done with it, the owner waits (bounded)
    until no other worker uses it, then stops it.
    """

    def __init__(
        self,
        key: str,
        directory: Path,
        make: Callable[[], ManagedServer],
        base_url_of: Callable[[ManagedServer], str],
        release_timeout_s: float = 3600.0,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._state = directory / f"{key}.json"
        self._lock = directory / f"{key}.lock"
        self._make = make
        self._base_url_of = base_url_of
        self._release_timeout_s = release_timeout_s
        self.owned: ManagedServer | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any] | None]:
        with open(self._lock, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self._state.read_text()) if self._state.exists() else None
                yield state
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self._state.unlink(missing_ok=True)
        else:
            self._state.write_text(json.dumps(state))

    def acquire(self) -> str:
        """The shared server's base URL, starting it if no live one exists."""
        with self._locked() as state:
            if state is not None and group_alive(int(state["pid"])):
                state["users"] += 1
                self._write(state)
                return str(state["base_url"])
            server = self._make()
            server.start()  # under the lock: the other workers wait for this one
            assert server.process is not None
            self.owned = server
            url = self._base_url_of(server)
            self._write(
                {"base_url": url, "pid": server.process.pid, "users": 1, "owner": os.getpid()}
            )
            return url

    def release(self) -> None:
        with self._locked() as state:
            if state is not None:
                state["users"] -= 1
                self._write(state)
        if self.owned is None:
            return
        deadline = time.monotonic() + self._release_timeout_s
        while time.monotonic() < deadline:
            with self._locked() as state:
                if state is None or state["users"] <= 0:
                    self._write(None)
                    break
            time.sleep(0.5)
        server, self.owned = self.owned, None
        server.stop()
