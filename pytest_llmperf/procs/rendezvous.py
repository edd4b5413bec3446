"""A barrier for processes on several hosts: the xdist controller holds it, workers wait at it.

A load split over client workers (`suite.split`) starts each measured round on every share
at once. xdist gives workers no channel to each other, and its own channel to the controller
is one-way while tests run, so the controller listens on a TCP port of its own
(`Rendezvous`), whose address reaches each worker through `workerinput`, and a worker
`wait`s by sending one line, `{"key": "group#step", "parties": n}`, and reading one back:
`go` when the n-th party with that key has arrived. A party that fails sends
`{"abort": "group", "why": ...}` (`abort`): every party of that group waiting, or still to
come, is answered `abort <why>` instead of waiting for one that will never come; a party that
dies without a word leaves the others to time out, each with its own message.

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


class BarrierError(Exception):
    """The other parties did not all arrive in time, or one of them gave up."""


class BarrierAborted(BarrierError):
    """A party of the group gave up (`abort`)."""


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        try:
            asked = json.loads(self.rfile.readline(4096))
            if "abort" in asked:
                self.server.abort(str(asked["abort"]), str(asked.get("why")))
                return
            key, parties = str(asked["key"]), int(asked["parties"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # not ours: closed without an answer
        self.server.arrive(key, parties, self.wfile).wait()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[Any]]] = {}
        #: Groups a party gave up on, with why.
        self._aborted: dict[str, str] = {}

    def arrive(self, key: str, parties: int, out: Any) -> threading.Event:
        with self._lock:
            event, outs = self._waiting.setdefault(key, (threading.Event(), []))
            outs.append(out)
            why = self._aborted.get(key.rpartition("#")[0])
            if why is not None or len(outs) >= parties:
                self._release(key, b"go" if why is None else f"abort {why}".encode())
        return event

    def abort(self, group: str, why: str) -> None:
        with self._lock:
            self._aborted[group] = why
            for key in [k for k in self._waiting if k.rpartition("#")[0] == group]:
                self._release(key, f"abort {why}".encode())

    def _release(self, key: str, answer: bytes) -> None:
        event, outs = self._waiting.pop(key)
        for each in outs:  # all at once, as close together as one loop can
            try:
                each.write(answer.replace(b"\n", b" ") + b"\n")
                each.flush()
            except OSError:
                pass  # that party gave up waiting
        event.set()


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
    """Block until `parties` callers have waited with `key` (`group#step`) at the barrier at
    `address`; `BarrierError` after `timeout_s` or when a party of the group gave up,
    `OSError` when the barrier cannot be reached."""
    with _connect(address, timeout_s) as conn:
        conn.sendall(json.dumps({"key": key, "parties": parties}).encode() + b"\n")
        try:
            answer = conn.makefile("rb").readline().decode(errors="replace").strip()
        except TimeoutError:
            raise BarrierError(f"waited {timeout_s:g} s") from None
        if answer.startswith("abort "):
            raise BarrierAborted(f"another party gave up: {answer.removeprefix('abort ')}")
        if answer != "go":
            raise BarrierError("the barrier closed before every party arrived")


def abort(address: str, group: str, why: str) -> None:
    """Tell the barrier at `address` that a party of `group` will not come: every party of
    the group waiting, or still to come, is let go with `why` (`BarrierError`)."""
    with _connect(address, 10.0) as conn:
        conn.sendall(json.dumps({"abort": group, "why": why}).encode() + b"\n")


def _connect(address: str, timeout_s: float) -> socket.socket:
    host, _, port = address.rpartition(":")
    conn = socket.create_connection((host, int(port)), timeout=timeout_s)
    conn.settimeout(timeout_s)
    return conn
