"""`llmperf dashboard RESULTS_DIR`: a Streamlit dashboard over a results folder.

Streamlit runs `dashboard_app.py` as its script, bound to 127.0.0.1 unless `--host`
says otherwise (a dashboard of benchmark results is not for the whole network: put a
tunnel or a reverse proxy with authentication in front of it to share it), with usage
statistics off (this tool makes no call home) and no file watcher. The command is an
argument list; nothing goes through a shell.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pytest_llmperf.errors import LLMPerfUsageError

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
    try:
        return subprocess.call(streamlit_argv(results_dir, host, port))
    except KeyboardInterrupt:
        return 0
