"""A barrier for processes on several hosts: the xdist controller holds it, workers wait at it.

A load split over client workers (`suite.split`) starts each measured round on every share
at once. xdist gives workers no channel to each other, and its own channel to the controller
is one-way while tests run, so the controller listens on a TCP port of its own
(`Rendezvous`), whose address reaches each worker through `workerinput`, and a worker
`wait`s by sending one line, `{"key": ..., "parties": n}`, and reading one back: `go` when
the n-th party with that key has arrived. Nothing else is exchanged; a party that never
comes leaves the others to time out, each with its own message.

The controller listens on 127.0.0.1 unless a worker runs on another host (`--tx ssh=...`):
then on every interface, and workers there reach it at `LLMPERF_RENDEZVOUS_HOST` (the
controller's environment), else at its fully qualified host name.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from typing import Any

#: The `workerinput` key that carries the barrier's address to each xdist worker.
RENDEZVOUS_KEY = "llmperf_rendezvous"
#: The controller's environment variable that names its address as remote workers reach it.
HOST_ENV = "LLMPERF_RENDEZVOUS_HOST"


class BarrierTimeout(Exception):
    """The other parties did not all arrive in time."""


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        try:
            line = self.rfile.readline(4096)
            asked = json.loads(line)
            key, parties = str(asked["key"]), int(asked["parties"])
        except (ValueError, KeyError, TypeError):
            return  # not ours: closed without an answer
        self.server.arrive(key, parties, self.wfile).wait()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[Any]]] = {}

    def arrive(self, key: str, parties: int, out: Any) -> threading.Event:
        with self._lock:
            event, outs = self._waiting.setdefault(key, (threading.Event(), []))
            outs.append(out)
            if len(outs) >= parties:
                del self._waiting[key]
                for each in outs:  # all at once, as close together as one loop can
                    try:
                        each.write(b"go\n")
                        each.flush()
                    except OSError:
                        pass  # that party gave up waiting
                event.set()
        return event


class Rendezvous:
    """The controller's barrier server, on a free port; `close` stops it."""

    def __init__(self, remote: bool) -> None:
        self._server = _Server(("0.0.0.0" if remote else "127.0.0.1", 0))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="llmperf-rendezvous", daemon=True
        )
        self._thread.start()

    def address(self, local: bool) -> str:
        """`host:port` as a worker on this host (`local`) or on another reaches it."""
        host = "127.0.0.1" if local else os.environ.get(HOST_ENV) or socket.getfqdn()
        return f"{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait(address: str, key: str, parties: int, timeout_s: float) -> None:
    """Block until `parties` callers have waited with `key` at the barrier at `address`;
    `BarrierTimeout` after `timeout_s`, `OSError` when the barrier cannot be reached."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
        conn.settimeout(timeout_s)
        conn.sendall(json.dumps({"key": key, "parties": parties}).encode() + b"\n")
        try:
            answer = conn.makefile("rb").readline()
        except TimeoutError:
            raise BarrierTimeout(f"waited {timeout_s:g} s") from None
        if answer.strip() != b"go":
            raise BarrierTimeout("the barrier closed before every party arrived")
