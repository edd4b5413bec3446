"""A small HTTP/1.1 client for streamed responses (server-sent events), on asyncio protocols.

Why not aiohttp or httpx: a client that benchmarks a server on the same machine takes
its CPU from the server, and its receipt times are only as good as its event loop is
idle. Here one packet is one `data_received` call: the time is read once, the body is
un-chunked, and every complete event goes to a callback with that time; no coroutine
is resumed per line or per event. `bench/client_vs_vllm_bench.py` measures the result
against vLLM's own aiohttp-based benchmark client.

What it speaks: HTTP/1.1 over TCP (TLS for https), `Content-Length`, chunked and
read-until-close bodies, keep-alive connections reused across requests (one request on
a connection at a time), `text/event-stream` framing (`data:` lines, events ended by a
blank line, comments skipped) or JSON lines (Ollama's native API). No redirects, no
compression (it asks for none), no proxies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

#: Called with each event's data and the `time.perf_counter()` of the packet that
#: completed it; returns True to stop reading (the connection is then closed).
EventCallback = Callable[[bytes, float], bool]

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024


class HTTPProtocolError(ConnectionError):
    """The server's bytes are not HTTP/1.1 as this client speaks it."""


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    #: The whole body, except for the events of a streamed response (they went to the
    #: callback as they came).
    body: bytes = b""
    #: Whether the callback asked to stop before the response ended.
    stopped: bool = False


class _Exchange:
    """One request's response, parsed as the bytes arrive.

    The parser works on each packet with offsets rather than editing a buffer: a packet
    usually holds exactly one chunk with one event, and that case costs a few slices.
    """

    def __init__(
        self,
        on_event: EventCallback | None,
        future: asyncio.Future[Response],
        ndjson: bool = False,
    ) -> None:
        self.on_event = on_event
        self.ndjson = ndjson  # events are JSON lines (Ollama), not server-sent events
        self.future = future
        self.pending = b""  # bytes of an unfinished head or chunk-size line
        self.response: Response | None = None
        self.framing = ""  # "length", "chunked" or "close", once the head is read
        self.remaining = 0  # bytes left of the body ("length") or of the chunk ("chunked")
        self.trailers = False
        self.streaming = False  # a 200 with a callback: the body is events
        self.events = b""  # event-stream text not yet ended by a blank line
        self.body = bytearray()
        self.keep_alive = False
        self.received_any = False
        self.finished = False

    def feed(self, data: bytes, at: float) -> None:
        self.received_any = True
        if (
            self.streaming
            and not self.ndjson
            and self.remaining < 0
            and not (self.pending or self.events)
        ):
            if self._one_event_chunk(data, at):
                return
        if self.pending:
            data, self.pending = self.pending + data, b""
        try:
            pos = 0
            if self.response is None:
                pos = self._read_head(data)
                if pos < 0:
                    return
            if self.framing == "chunked":
                pieces = self._read_chunked(data, pos)
            elif self.framing == "length":
                take = min(self.remaining, len(data) - pos)
                pieces = [data[pos : pos + take]]
                self.remaining -= take
            else:
                pieces = [data[pos:]]
            self._body_pieces(pieces, at)
            if not self.finished and (
                (self.framing == "length" and self.remaining == 0)
                or (self.framing == "chunked" and self.trailers and self.remaining == 0)
            ):
                self._end(at)
        except HTTPProtocolError as exc:
            self._fail(exc)

    def _one_event_chunk(self, data: bytes, at: float) -> bool:
        """The common packet of a token stream, whole: one chunk holding one `data:` event.

        Handled with a few comparisons; False (nothing consumed) for anything else.
        """
        end = data.find(b"\r\n", 0, 10)
        if end <= 0 or not data.endswith(b"\n\n\r\n") or not data.startswith(b"data: ", end + 2):
            return False
        try:
            size = int(data[:end], 16)
        except ValueError:
            return False
        if end + 4 + size != len(data):
            return False
        payload = data[end + 8 : -4]
        if b"\n" in payload or b"\r" in payload:
            return False
        assert self.on_event is not None
        if self.on_event(payload, at):
            self._finish(keep_alive=False, stopped=True)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.finished:
            return
        if self.response is not None and self.framing == "close":
            self._end(time.perf_counter())
            return
        reason = f": {exc}" if exc else ""
        self._fail(ConnectionResetError(f"the server closed the connection mid-response{reason}"))

    def _read_head(self, data: bytes) -> int:
        """Parse the head if it is all here: the offset of the body, or -1 (kept pending)."""
        pos = 0
        while True:
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                if len(data) - pos > MAX_HEAD_BYTES:
                    raise HTTPProtocolError("response head larger than 64 KiB")
                self.pending = data[pos:]
                return -1
            lines = data[pos:end].decode("latin-1").split("\r\n")
            pos = end + 4
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise HTTPProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
            status = int(parts[1])
            if 100 <= status < 200:
                continue  # an interim response (100 Continue): the real one follows
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.response = Response(status, headers)
            self.streaming = self.on_event is not None and status == 200
            self.keep_alive = (
                parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            )
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.framing, self.remaining = "chunked", -1
            elif "content-length" in headers:
                try:
                    self.framing, self.remaining = "length", int(headers["content-length"])
                except ValueError:
                    raise HTTPProtocolError("bad Content-Length") from None
            else:
                self.framing, self.keep_alive = "close", False
            return pos

    def _read_chunked(self, data: bytes, pos: int) -> list[bytes]:
        """The data of the chunks in `data[pos:]`; `remaining` < 0 means a size line is next."""
        pieces = []
        size_of_data = len(data)
        while pos < size_of_data:
            if self.trailers:  # after the last chunk: trailer lines up to an empty one
                end = data.find(b"\r\n", pos)
                if end < 0:
                    self.pending = data[pos:]
                    break
                if end == pos:
                    self.remaining = 0  # the response is complete
                    break
                pos = end + 2
                continue
            if self.remaining < 0:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if size_of_data - pos > 1024:
                        raise HTTPProtocolError("chunk-size line too long")
                    self.pending = data[pos:]
                    break
                try:
                    size = int(data[pos:end].split(b";", 1)[0], 16)
                except ValueError:
                    raise HTTPProtocolError("bad chunk-size line") from None
                pos = end + 2
                if size == 0:
                    self.trailers, self.remaining = True, -1
                    continue
                self.remaining = size + 2  # the data and its CRLF
            take = min(self.remaining, size_of_data - pos)
            data_end = pos + min(take, self.remaining - 2)
            if data_end > pos:
                pieces.append(data[pos:data_end])
            pos += take
            self.remaining -= take
            if self.remaining == 0:
                self.remaining = -1
        return pieces

    def _body_pieces(self, pieces: list[bytes], at: float) -> None:
        if not self.streaming:
            for piece in pieces:
                self.body += piece
            if len(self.body) > MAX_BODY_BYTES:
                raise HTTPProtocolError("response body larger than 16 MiB")
            return
        if pieces:
            self.events += pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self._flush(at, final=False)

    def _flush(self, at: float, final: bool) -> None:
        """Hand every complete event to the callback (at the end, an unterminated one too)."""
        events = self.events
        if not self.streaming or not events:
            return
        if b"\r" in events and not events.endswith(b"\r"):
            events = events.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *complete, rest = events.split(b"\n" if self.ndjson else b"\n\n")
        if final and rest.strip():
            complete.append(rest)
            rest = b""
        self.events = rest
        assert self.on_event is not None
        for block in complete:
            data = (block.strip() or None) if self.ndjson else _event_data(block)
            if data is not None and self.on_event(data, at):
                self._finish(keep_alive=False, stopped=True)
                return
        if len(rest) > MAX_BODY_BYTES:
            raise HTTPProtocolError("one event larger than 16 MiB")

    def _end(self, at: float) -> None:
        self._flush(at, final=True)
        if not self.finished:
            self._finish(keep_alive=self.keep_alive and not self.pending)

    def _finish(self, keep_alive: bool, stopped: bool = False) -> None:
        assert self.response is not None
        self.keep_alive = keep_alive
        self.response.body = bytes(self.body)
        self.response.stopped = stopped
        self.finished = True
        self.future.set_result(self.response)

    def _fail(self, exc: Exception) -> None:
        self.keep_alive = False
        if not self.finished:
            self.finished = True
            self.future.set_exception(exc)


def _event_data(block: bytes) -> bytes | None:
    """The data of one event-stream event (its `data:` lines joined), or None if it has none."""
    if block.startswith(b"data:") and b"\n" not in block:  # the common case, one line
        return block[6:] if block[5:6] == b" " else block[5:]
    lines = [
        line[6:] if line[5:6] == b" " else line[5:]
        for line in block.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        at = time.perf_counter()  # first: the receipt time of everything in this packet
        exchange = self.exchange
        if exchange is None or exchange.finished:
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        exchange.feed(data, at)
        if exchange.finished and not exchange.keep_alive:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.exchange is not None:
            self.exchange.connection_lost(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        exchange = self.exchange
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and (exchange is None or (exchange.finished and exchange.keep_alive))
        )


class HTTPClient:
    """Requests to one server (`base_url`), over a pool of keep-alive connections.

    Use it on one event loop. `headers` is called for every request, so a secret it
    returns (an API key read from the environment) is never stored here.
    """

    def __init__(self, base_url: str, headers: Callable[[], Mapping[str, str]] = dict) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http(s)://host[:port][/path], got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.prefix = parts.path.rstrip("/")
        default_port = self.port == (443 if self.tls else 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.headers = headers
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        on_event: EventCallback | None = None,
        ndjson: bool = False,
        timeout_s: float,
    ) -> Response:
        """One request; with `on_event`, a 200 response's events go to it as they arrive.

        Events are server-sent events (their `data`), or with `ndjson` lines of JSON.

        Raises `TimeoutError` (`asyncio.TimeoutError`) past `timeout_s` (connecting
        included), `OSError` when the server cannot be reached or closes mid-response,
        `HTTPProtocolError` for bytes that are not HTTP.
        """
        return await asyncio.wait_for(
            self._request(method, path, body, on_event, ndjson), timeout_s
        )

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        on_event: EventCallback | None,
        ndjson: bool,
    ) -> Response:
        head = self._head(method, path, body)
        while self._idle:  # a kept-alive connection the server may have closed since
            connection = self._idle.pop()
            if not connection.reusable:
                continue
            exchange = self._send(connection, head, body, on_event, ndjson)
            try:
                return await self._await(connection, exchange)
            except ConnectionError:
                if exchange.received_any:
                    raise
                # Closed before a byte of response came: the server had dropped the idle
                # connection. Nothing was processed, so send again on another.
        connection = await self._connect()
        return await self._await(connection, self._send(connection, head, body, on_event, ndjson))

    def _head(self, method: str, path: str, body: bytes | None) -> bytes:
        lines = [
            f"{method} {self.prefix}{path} HTTP/1.1",
            f"Host: {self.host_header}",
            "User-Agent: pytest-llmperf",
            "Accept-Encoding: identity",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers().items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.tls else None
        _, connection = await loop.create_connection(_Connection, self.host, self.port, ssl=context)
        return connection

    @staticmethod
    def _send(
        connection: _Connection,
        head: bytes,
        body: bytes | None,
        on_event: EventCallback | None,
        ndjson: bool,
    ) -> _Exchange:
        exchange = _Exchange(on_event, asyncio.get_running_loop().create_future(), ndjson)
        connection.exchange = exchange
        assert connection.transport is not None
        connection.transport.write(head + (body or b""))
        return exchange

    async def _await(self, connection: _Connection, exchange: _Exchange) -> Response:
        try:
            response = await exchange.future
        except BaseException:
            connection.close()  # cancelled (timeout) or failed mid-response: never reuse
            raise
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
