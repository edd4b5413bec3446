"""The HTTP/1.1 event-stream client, against a raw socket server that sends exact bytes.

The server is an instrument: it answers each request with bytes a test wrote, split into
packets where the test says (a chunk, an event, a line ending cut in two), so that the
client's framing is checked on the layouts real servers produce, not only on the one
aiohttp happens to send.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_llmperf.engines.openai.http_stream import HTTPClient, HTTPProtocolError

#: A streamed response's head; the body follows in the test's packets.
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawServer:
    """Answers the n-th request on any connection with `responses[n]`, packet by packet.

    A packet is sent, then the server waits `gap_s` so that the next one arrives
    separately. `close_after` closes the connection after that many responses on it.
    """

    def __init__(self, responses: list[list[bytes]], gap_s: float = 0.02, close_after: int = 0):
        self.responses = responses
        self.gap_s = gap_s
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        served = 0
        with conn:
            while True:
                request = self._read_request(conn)
                if request is None:
                    return
                index = len(self.requests)
                self.requests.append(request)
                for packet in self.responses[min(index, len(self.responses) - 1)]:
                    conn.sendall(packet)
                    time.sleep(self.gap_s)
                served += 1
                if self.close_after and served >= self.close_after:
                    return

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return None
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        return head + b"\r\n\r\n" + body


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(asyncio.sleep(0.01))  # let closed transports finish closing
    loop.close()


def stream(
    loop: asyncio.AbstractEventLoop, server: RawServer, requests: int = 1, timeout_s: float = 5
) -> list[list[tuple[bytes, float]]]:
    """Send `requests` streamed POSTs one after another; the events each one got."""
    client = HTTPClient(f"http://127.0.0.1:{server.port}")
    got: list[list[tuple[bytes, float]]] = []

    async def run() -> None:
        for _ in range(requests):
            events: list[tuple[bytes, float]] = []
            got.append(events)

            def on_event(
                data: bytes, at: float, events: list[tuple[bytes, float]] = events
            ) -> bool:
                events.append((data, at))
                return False

            response = await client.request(
                "POST", "/v1/completions", b"{}", on_event=on_event, timeout_s=timeout_s
            )
            assert response.status == 200
        client.close()

    loop.run_until_complete(run())
    return got


def test_events_split_anywhere_are_put_back_together(loop: asyncio.AbstractEventLoop) -> None:
    body = (
        chunk(b'data: {"a": 1}\n\n') + chunk(b'data: {"b": 2}\n\ndata: {"c"') + chunk(b": 3}\n\n")
    )
    body += chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    # Inside the head, the first size line, a chunk's closing CRLF, an event, a size line.
    cuts = [len(CHUNKED_HEAD) + offset for offset in (-5, 3, 21, 40, 75)]
    raw = CHUNKED_HEAD + body
    packets = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    with RawServer([packets]) as server:
        (events,) = stream(loop, server)
    assert [data for data, _ in events] == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}', b"[DONE]"]


def test_each_event_is_stamped_when_its_packet_arrived(loop: asyncio.AbstractEventLoop) -> None:
    packets = [CHUNKED_HEAD] + [chunk(b"data: %d\n\n" % i) for i in range(5)] + [b"0\r\n\r\n"]
    with RawServer([packets], gap_s=0.05) as server:
        (events,) = stream(loop, server)
    gaps_ms = [(b[1] - a[1]) * 1000 for a, b in itertools.pairwise(events)]
    assert [data for data, _ in events] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(45 < gap < 60 for gap in gaps_ms), gaps_ms


def test_crlf_line_endings_comments_and_multiline_data(loop: asyncio.AbstractEventLoop) -> None:
    body = (
        b": keep-alive comment\r\n\r\nevent: x\r\ndata: one\r\ndata: two\r\n\r\ndata:three\r\n\r\n"
    )
    packets = [CHUNKED_HEAD, chunk(body[:30]), chunk(body[30:]), b"0\r\n\r\n"]
    with RawServer([packets]) as server:
        (events,) = stream(loop, server)
    assert [data for data, _ in events] == [b"one\ntwo", b"three"]


def test_content_length_and_read_until_close_bodies(loop: asyncio.AbstractEventLoop) -> None:
    sse = b"data: 1\n\ndata: 2\n\n"
    by_length = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(sse) + sse
    until_close = b"HTTP/1.0 200 OK\r\n\r\n" + sse  # no length: the body ends at close
    for response in (by_length, until_close):
        with RawServer([[response[:25], response[25:]]], close_after=1) as server:
            (events,) = stream(loop, server)
        assert [data for data, _ in events] == [b"1", b"2"]


def test_keep_alive_reuses_one_connection(loop: asyncio.AbstractEventLoop) -> None:
    packets = [CHUNKED_HEAD + chunk(b"data: x\n\n") + b"0\r\n\r\n"]
    with RawServer([packets]) as server:
        results = stream(loop, server, requests=3)
    assert [len(events) for events in results] == [1, 1, 1]
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /v1/completions HTTP/1.1\r\n")
    assert b"Content-Length: 2\r\n" in server.requests[0]


def test_a_dropped_idle_connection_is_replaced_without_error(
    loop: asyncio.AbstractEventLoop,
) -> None:
    packets = [CHUNKED_HEAD + chunk(b"data: x\n\n") + b"0\r\n\r\n"]
    with RawServer([packets], close_after=1) as server:  # the server ends each connection
        results = stream(loop, server, requests=3)
    assert [len(events) for events in results] == [1, 1, 1]
    assert server.connections == 3


def test_an_error_status_returns_its_body_to_the_caller(loop: asyncio.AbstractEventLoop) -> None:
    response = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\noverload!"
    client_events: list[bytes] = []
    with RawServer([[response]]) as server:
        client = HTTPClient(f"http://127.0.0.1:{server.port}")
        result = loop.run_until_complete(
            client.request(
                "POST",
                "/x",
                b"{}",
                on_event=lambda d, a: bool(client_events.append(d)),
                timeout_s=5,
            )
        )
        client.close()
    assert (result.status, result.body, client_events) == (503, b"overload!", [])


@pytest.mark.parametrize(
    "packets, error",
    [
        ([b"SSH-2.0-OpenSSH\r\n\r\n"], "not an HTTP/1.x status line"),
        ([CHUNKED_HEAD + b"zz\r\n"], "bad chunk-size line"),
        ([CHUNKED_HEAD + chunk(b"data: 1\n\n")], "closed the connection mid-response"),
    ],
)
def test_broken_responses_raise_errors_that_say_what_broke(
    loop: asyncio.AbstractEventLoop, packets: list[bytes], error: str
) -> None:
    with RawServer([packets], close_after=1) as server:
        with pytest.raises((HTTPProtocolError, ConnectionError), match=error):
            stream(loop, server)


def test_a_stalled_response_times_out(loop: asyncio.AbstractEventLoop) -> None:
    with RawServer([[CHUNKED_HEAD, chunk(b"data: 1\n\n")]], gap_s=3) as server:
        started = time.perf_counter()
        with pytest.raises(asyncio.TimeoutError):
            stream(loop, server, timeout_s=0.5)
    assert time.perf_counter() - started < 2


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="base URL must be http"):
        HTTPClient("ftp://example.org")
