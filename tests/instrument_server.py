"""An instrument: an OpenAI-style server that emits tokens at scripted times, or fails on cue.

It stands in for no engine; its only behaviour is to send server-sent events at known
moments (and to misbehave in known ways), so that tests can check the client measures
what happened. It runs on 127.0.0.1 in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Script:
    """What the server does with the next requests.

    `delays_s`: the gap before each token event (the first is the time to first token).
    `fault`: None, "http500", "cut" (close the stream half-way), "malformed" (a broken
    event half-way), "stall" (stop sending half-way and hold the connection), or
    "inband" (an error event half-way).
    """

    delays_s: list[float] = field(default_factory=lambda: [0.02] + [0.01] * 9)
    fault: str | None = None
    usage: bool = True
    #: How a scoring request (`echo` + `logprobs`, not streamed) is answered, as servers
    #: without prompt log-probabilities answer it: "refuse" (HTTP 400 naming echo, as
    #: OpenAI's API does) or "ignore" (a completion whose logprobs cover only the
    #: generated token, in the chat-style shape llama.cpp's server uses).
    echo: str = "refuse"
    #: Requests its /metrics counts for each it receives (more than 1: as if other clients
    #: shared the server, sending as many).
    counted_per_request: int = 1
    #: Seconds added before the first token for each message of a chat request: a server
    #: whose prefill grows with a conversation's history, by a known amount.
    first_token_per_message_s: float = 0.0
    #: Completions answered at once (None: all); the rest wait, in order of arrival, for a
    #: place, before their first token. With every request taking `sum(delays_s)`, the
    #: server's capacity is exactly `capacity / sum(delays_s)` requests per second.
    capacity: int | None = None


class InstrumentServer:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.received_at: list[float] = []
        #: For each streamed completion, when each token event was written (perf_counter).
        self.emitted_at: list[list[float]] = []
        #: For each streamed completion answered in full: seconds to its first and its last
        #: token event from when it was taken up.
        self.took_s: list[tuple[float, float]] = []
        #: With a capacity: how long each request held its place (its whole answer).
        self.held_s: list[float] = []
        #: Completions being answered now (its /metrics' running gauge).
        self.in_flight = 0
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._places: asyncio.Semaphore | None = None

    def __enter__(self) -> InstrumentServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def cancel_handlers() -> None:  # a "stall" handler sleeps for an hour
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(cancel_handlers(), self._loop).result(10)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/api/generate", self._ollama)
        app.router.add_post("/api/chat", self._ollama)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "tiny"}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        """TGI's names (`tgi_request_count`, `tgi_batch_current_size`): requests received
        and completions in flight; nothing else (a server exporting little)."""
        count = len(self.received_at) * self.script.counted_per_request
        text = (
            "# TYPE tgi_request_count counter\n"
            f"tgi_request_count {count}\n"
            "# TYPE tgi_batch_current_size gauge\n"
            f"tgi_batch_current_size {self.in_flight}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        async with self._place():
            self.in_flight += 1
            try:
                return await self._complete(request)
            finally:
                self.in_flight -= 1

    @contextlib.asynccontextmanager
    async def _place(self) -> AsyncIterator[None]:
        """A place among the script's `capacity` (asyncio's semaphore wakes waiters first
        come, first served); at once without one."""
        if self.script.capacity is None:
            yield
            return
        if self._places is None:  # made in the server's own loop
            self._places = asyncio.Semaphore(self.script.capacity)
        async with self._places:
            taken = time.perf_counter()
            try:
                yield
            finally:
                self.held_s.append(time.perf_counter() - taken)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        self.received_at.append(received)
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        script = self.script
        if script.fault == "http500":
            return web.Response(status=500, text="scripted failure")
        if body.get("echo"):
            return self._echo_answer(body)
        chat = request.path.endswith("chat/completions")
        prompts = body.get("prompt")
        n_choices = (
            len(prompts)
            if isinstance(prompts, list) and prompts and not isinstance(prompts[0], int)
            else 1
        )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        half = len(script.delays_s) // 2
        emitted: list[float] = []
        self.emitted_at.append(emitted)
        start = time.perf_counter()
        due = start + len(body.get("messages") or ()) * script.first_token_per_message_s
        for i, delay in enumerate(script.delays_s):
            due += delay
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if i == half and script.fault in ("cut", "malformed", "stall", "inband"):
                if script.fault == "malformed":
                    await response.write(b"data: {not json\n\n")
                elif script.fault == "inband":
                    await response.write(b'data: {"error": {"message": "scripted"}}\n\n')
                elif script.fault == "stall":
                    await asyncio.sleep(3600)
                return response  # "cut": end the stream without [DONE]
            last = i == len(script.delays_s) - 1
            choices = []
            for c in range(n_choices):
                choice: dict[str, Any] = {"index": c, "finish_reason": "length" if last else None}
                if chat:
                    choice["delta"] = {"content": f" t{i}"}
                else:
                    choice["text"] = f" t{i}"
                choices.append(choice)
            emitted.append(time.perf_counter())
            await response.write(f"data: {json.dumps({'choices': choices})}\n\n".encode())
        # From when the request was taken up (with a capacity: when it got its place).
        self.took_s.append((emitted[0] - received, emitted[-1] - received))
        if script.usage:
            usage = {"prompt_tokens": 7, "completion_tokens": len(script.delays_s) * n_choices}
            await response.write(
                f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
            )
        await response.write(b"data: [DONE]\n\n")
        return response

    def _echo_answer(self, body: dict[str, Any]) -> web.Response:
        if self.script.echo == "refuse":
            error = {"message": "echo is not supported with this model", "param": "echo"}
            return web.json_response({"error": error}, status=400)
        logprobs = {"content": [{"token": " t0", "logprob": -0.5, "top_logprobs": []}]}
        choice = {"index": 0, "text": " t0", "finish_reason": "length", "logprobs": logprobs}
        return web.json_response({"choices": [choice]})

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        """Ollama's native API: JSON lines, then its statistics (durations in ns)."""
        self.received_at.append(time.perf_counter())
        body = await request.json()
        self.requests.append(body)
        chat = request.path.endswith("/chat")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        due = time.perf_counter()
        for i, delay in enumerate(self.script.delays_s):
            due += delay
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            piece = f" t{i}"
            line = {"message": {"role": "assistant", "content": piece}} if chat else {}
            line = line or {"response": piece}
            await response.write((json.dumps({**line, "done": False}) + "\n").encode())
        n = len(self.script.delays_s)
        final = {
            "response": "",
            "done": True,
            "done_reason": "length",
            "total_duration": 250_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": 7,
            "prompt_eval_duration": 12_500_000,
            "eval_count": n,
            "eval_duration": n * 10_000_000,
        }
        await response.write((json.dumps(final) + "\n").encode())
        return response

    def emitted_times_ms(self, request: int = -1) -> list[float]:
        """When a request's token events were written, in ms from its arrival.

        These are the moments the events happened, not the script's: a loaded machine
        wakes the server late, and the client is judged on what it was sent.
        """
        arrival = self.received_at[request]
        return [(t - arrival) * 1000 for t in self.emitted_at[request]]

    def scripted_times_ms(self) -> list[float]:
        """Cumulative times of the token events, from the request's arrival."""
        times, total = [], 0.0
        for delay in self.script.delays_s:
            total += delay
            times.append(total * 1000)
        return times


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
