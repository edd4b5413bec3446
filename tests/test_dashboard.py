"""`llmperf dashboard`: the Streamlit app over a real results folder, seen in a browser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.procs.servers import free_port
from tests.browser import page_text
from tests.conftest import SUITE
from tests.suite_run import make_project, run_project


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"), SUITE)
    out = run_project(root, "--llmperf-responses")
    assert out.returncode == 0, out.stdout[-3000:]
    return root / "results"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.fixture
def dashboard(results: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_llmperf", "dashboard", str(results), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not come up in 90 s"
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in its terminal
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        finally:
            process.stdout.close()  # type: ignore[union-attr]


def test_dashboard_serves_the_runs_on_loopback_only(dashboard: str, results: Path) -> None:
    with urllib.request.urlopen(dashboard + "/", timeout=10) as response:
        assert response.status == 200 and "text/html" in response.headers["Content-Type"]
    port = int(dashboard.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    (run_dir,) = results.iterdir()
    text = page_text(dashboard + "/", run_dir.name)
    assert run_dir.name in text, text[:2000]
    assert "pytest-llmperf results" in text and "3 test(s)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dashboard", "/no/such/folder"], "/no/such/folder: no such results folder"),
        (["dashboard", ".", "--port", "70000"], "--port: 70000 is not a TCP port"),
    ],
)
def test_dashboard_bad_input_is_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err
