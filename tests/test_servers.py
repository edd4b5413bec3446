"""Managed servers: health with a deadline, clear failures, and no process left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_llmperf.procs.servers import ManagedServer, ServerError, free_port, group_alive


def http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def test_starts_waits_for_health_and_stops_its_group(tmp_path: Path) -> None:
    port = free_port()
    server = ManagedServer(http_server(port), f"http://127.0.0.1:{port}/", start_timeout_s=30)
    server.start()
    assert server.alive
    pid = server.process.pid  # type: ignore[union-attr]
    server.stop()
    assert not group_alive(pid)
    server.stop()  # twice is fine


def test_server_that_exits_early_fails_with_status_and_log() -> None:
    argv = [sys.executable, "-c", "import sys; print('no model here', flush=True); sys.exit(3)"]
    server = ManagedServer(argv, "http://127.0.0.1:9/health", start_timeout_s=30)
    started = time.monotonic()
    with pytest.raises(ServerError, match="exited with status 3") as info:
        server.start()
    assert "no model here" in str(info.value)
    assert time.monotonic() - started < 10


def test_unhealthy_server_fails_at_the_deadline() -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    server = ManagedServer(argv, f"http://127.0.0.1:{free_port()}/health", start_timeout_s=2)
    with pytest.raises(ServerError, match=r"not healthy .* after 2 s"):
        server.start()
    assert server.process is None


def test_a_shell_string_is_refused() -> None:
    with pytest.raises(TypeError, match="list of arguments"):
        ManagedServer("python -m http.server", "http://127.0.0.1:1/")  # type: ignore[arg-type]


def test_server_dies_with_a_killed_test_process(tmp_path: Path) -> None:
    port = free_port()
    pid_file = tmp_path / "server.pid"
    script = textwrap.dedent(f"""
        import time
        from pytest_llmperf.procs.servers import ManagedServer
        s = ManagedServer({http_server(port)!r}, "http://127.0.0.1:{port}/", start_timeout_s=30)
        s.start()
        open({str(pid_file)!r}, "w").write(str(s.process.pid))
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    server_pid = int(pid_file.read_text())
    assert group_alive(server_pid)
    parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can help
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while group_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(server_pid)


def test_workers_share_one_server_and_the_owner_stops_it_last(tmp_path: Path) -> None:
    import threading

    from pytest_llmperf.procs.servers import SharedServer

    port = free_port()
    started: list[ManagedServer] = []

    def make() -> ManagedServer:
        server = ManagedServer(http_server(port), f"http://127.0.0.1:{port}/", start_timeout_s=30)
        started.append(server)
        return server

    def url_of(server: ManagedServer) -> str:
        return server.health_url

    owner = SharedServer("cfg", tmp_path, make, url_of)  # as worker gw0 would
    other = SharedServer("cfg", tmp_path, make, url_of)  # as worker gw1 would
    assert owner.acquire() == other.acquire() == f"http://127.0.0.1:{port}/"
    assert len(started) == 1 and owner.owned is not None and other.owned is None
    pid = started[0].process.pid  # type: ignore[union-attr]
    threading.Timer(1.0, other.release).start()  # gw1 is still busy for a second
    begun = time.monotonic()
    owner.release()  # waits for gw1, then stops the server
    assert time.monotonic() - begun >= 0.9
    assert not group_alive(pid)
    assert not (tmp_path / "cfg.json").exists()
