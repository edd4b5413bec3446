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

import psutil
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


def start_dashboard(results: Path) -> tuple[subprocess.Popen[str], str]:
    """`llmperf dashboard` in a session of its own, once it answers; and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_llmperf", "dashboard", str(results), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read())  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("the dashboard did not come up in 90 s")
        time.sleep(0.3)


@pytest.fixture
def dashboard(results: Path) -> Iterator[str]:
    process, url = start_dashboard(results)
    try:
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
    # The run's id shows in the sidebar before the runs tab is drawn: wait for the tab's line.
    text = page_text(dashboard + "/", "test(s)")
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=str)
def test_ending_the_dashboard_ends_its_server(results: Path, signum: int) -> None:
    """A signal to the `llmperf dashboard` process alone (`kill PID`, a closed terminal):
    Streamlit goes with it. Before, SIGTERM ended the command and left Streamlit serving,
    re-parented to PID 1. Descendants are read before the signal, while they are still
    found under the command."""
    process, url = start_dashboard(results)
    children = psutil.Process(process.pid).children(recursive=True)
    try:
        assert children, "Streamlit runs in a child process"
        process.send_signal(signum)
        code = process.wait(timeout=30)
        assert code == (0 if signum == signal.SIGINT else 128 + signum)
        alive = [c for c in children if _alive(c)]
        deadline = time.monotonic() + 10
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [c for c in children if _alive(c)]
        assert alive == [], [c.cmdline() for c in alive]
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
    finally:
        for child in children:
            if _alive(child):
                child.kill()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()  # type: ignore[union-attr]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_dashboard_shows_intervals_rounds_and_verdicts(gated_run: Path) -> None:
    """A run judged on bounds, a baseline and rounds until decided: the runs page shows each
    test's rounds and why they ended, its headline metrics with their intervals, and each
    bound's and baseline metric's verdict, in the words of the report and the exports."""
    from pytest_llmperf.results import readout
    from pytest_llmperf.results.runs import open_run

    process, url = start_dashboard(gated_run.parent)
    try:
        text = page_text(url + "/", "Deploy")
        text = page_text(url + "/", "missed (p=")  # once the verdicts table is drawn
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=20)
        process.stdout.close()  # type: ignore[union-attr]
    assert f"{gated_run.name}: intervals and verdicts" in text, text[:3000]
    assert "Traceback" not in text and "Error" not in text, text[-3000:]  # no tab failed
    text = text.replace("≤", "<=").replace("≥", ">=")  # how the table draws <= and >=
    for test in open_run(gated_run).tests:
        assert readout.rounds_text(test) in text
        assert readout.headline(test, "output_tok_per_s") in text
        assert "±" in readout.headline(test, "output_tok_per_s")
        for check in test.thresholds.checked:
            assert readout.bound_text(check) in text
    assert "e2e_ms.p90 <= 0.001: missed (p=" in text
    assert " within 10%: " in text  # a baseline metric's verdict
