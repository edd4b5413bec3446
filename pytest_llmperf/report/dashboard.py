"""`llmperf dashboard RESULTS_DIR`: a Streamlit dashboard over a results folder.

Streamlit runs `dashboard_app.py` as its script, bound to 127.0.0.1 unless `--host`
says otherwise (a dashboard of benchmark results is not for the whole network: put a
tunnel or a reverse proxy with authentication in front of it to share it), with usage
statistics off (this tool makes no call home) and no file watcher. The command is an
argument list; nothing goes through a shell.

Streamlit runs in a child process, which ends when this command does: every signal that
can be caught (SIGINT, SIGTERM, SIGHUP, SIGQUIT) is passed on to it as SIGTERM (SIGKILL
after `STOP_GRACE_S`), and the kernel sends it SIGTERM if this process dies without a
word (SIGKILL; Linux's parent-death signal). Without this, `kill PID` of a dashboard
ended the command and left Streamlit serving, re-parented to PID 1.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.procs.servers import set_parent_death_signal

APP = Path(__file__).with_name("dashboard_app.py")


def streamlit_argv(results_dir: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--",
        str(results_dir.resolve()),
    ]


def serve(results_dir: Path, host: str = "127.0.0.1", port: int = 8501) -> int:
    """Run the dashboard until it is stopped (Ctrl-C); its exit status."""
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise LLMPerfUsageError(
            "the dashboard needs Streamlit: pip install 'pytest-llmperf[dashboard]'"
        ) from None
    if not results_dir.is_dir():
        raise LLMPerfUsageError(f"{results_dir}: no such results folder")
    if not 0 < port < 65536:
        raise LLMPerfUsageError(f"--port: {port} is not a TCP port (1-65535)")
    if not host.strip() or not host.isascii() or any(c.isspace() for c in host):
        raise LLMPerfUsageError(f"--host: {host!r} is not an address (e.g. 127.0.0.1)")
    print(f"dashboard of {results_dir} on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    return _run_until_ended(streamlit_argv(results_dir, host, port))


#: Seconds Streamlit gets to stop after SIGTERM before SIGKILL.
STOP_GRACE_S = 10.0
#: Every signal that ends this command by default and can be caught.
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _run_until_ended(argv: list[str]) -> int:
    """Run `argv` until it exits or this process is told to end; then end it too.

    Returns the child's exit status, 0 after Ctrl-C (the usual way to stop a dashboard), or
    128 + the signal's number for any other signal, as a shell reports a process it ended."""
    received: list[int] = []

    def end_child(signum: int, _frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)

    previous = {signum: signal.getsignal(signum) for signum in ENDING_SIGNALS}
    process = subprocess.Popen(argv, preexec_fn=set_parent_death_signal)
    try:
        for signum in ENDING_SIGNALS:
            signal.signal(signum, end_child)
        code = _wait(process, received)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:  # an exception of our own: the child goes too
            process.kill()
            process.wait()
    if not received:
        return code
    return 0 if received[0] == signal.SIGINT else 128 + received[0]


def _wait(process: subprocess.Popen[bytes], received: list[int]) -> int:
    """The child's exit status; once a signal came, SIGKILL past the grace period."""
    deadline: float | None = None
    while True:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if received and deadline is None:
            deadline = time.monotonic() + STOP_GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            process.kill()
