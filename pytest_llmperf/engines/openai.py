"""The `openai` engine: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama).

Requests go out as streaming `/v1/completions` (or `/v1/chat/completions` with
`endpoint: chat`, and always for `messages` requests) with `stream_options.include_usage`.
The client runs on an asyncio loop in a thread of its own; each server-sent event is
stamped with `time.perf_counter()` the moment it is read, and the harness uses those
stamps (`StreamChunk.received_at`), so the time a chunk waits for the harness's thread
is not counted. A request's arrival is when it left the client (`sent_at`).

Token counts: the server's usage report when it sends one (`token_count_source =
"usage"`); otherwise the run's tokenizer on the returned text ("tokenizer"); for a
group of prompts sent in one request (`prompts_per_request > 1`, the `prompt` list
form), where usage only covers the group, the tokenizer too.

Failures are data: an HTTP error status, an in-band error event, a malformed event, a
stream that ends before its request finished, a connection that fails or a request
that outlives `request_timeout_s`: each ends that request with `finish_reason="error"`
and the reason, and the others go on. The API key is read from the environment
variable named by `api_key_env` (default `OPENAI_API_KEY`), never from the command line,
and appears in no result.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    FinishReason,
    GenerationRequest,
    StreamChunk,
    Tokenizer,
)

_DONE = object()


async def _measure_lag(lags: list[float], interval_s: float = 0.005) -> None:
    """How late a short timer fires: the time an arriving event may wait unstamped."""
    while True:
        due = time.perf_counter() + interval_s
        await asyncio.sleep(interval_s)
        lags.append(max(0.0, time.perf_counter() - due))


class OpenAIEngine:
    name: ClassVar[str] = "openai"
    #: Sends requests on a schedule (`GenerationRequest.send_offset_s`): open-loop load.
    supports_arrivals: ClassVar[bool] = True
    #: The server runs elsewhere: a test on this engine leases no GPU of the run.
    uses_gpus: ClassVar[bool] = False
    settings_accepted: ClassVar[frozenset[str]] = frozenset(
        {
            "base_url",
            "api_key_env",
            "endpoint",
            "max_concurrency",
            "request_timeout_s",
            "prompts_per_request",
            "vllm_extensions",
            "tokenizer",
        }
    )

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        settings = dict(config.settings)
        self.base_url = str(settings.get("base_url") or "http://127.0.0.1:8000").rstrip("/")
        self.api_key_env = str(settings.get("api_key_env") or "OPENAI_API_KEY")
        self.endpoint = str(settings.get("endpoint") or "completions")
        self.max_concurrency = int(settings.get("max_concurrency") or 0)
        self.request_timeout_s = float(settings.get("request_timeout_s") or 600.0)
        self.prompts_per_request = int(settings.get("prompts_per_request") or 1)
        self.vllm_extensions = bool(settings.get("vllm_extensions", True))
        self._tokenizer_name = settings.get("tokenizer")
        self._tokenizer: Tokenizer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._served_model: str = config.model
        #: The client's own cost in the last round (see `load.client_check`).
        self.last_round_stats: dict[str, float] = {}

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> EngineInfo:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llmperf-http", daemon=True
        )
        self._thread.start()
        models = self._run(self._open(), timeout=30.0)
        if self.config.model in ("", "tiny", "auto") and models:
            self._served_model = models[0]
        self._tokenizer = self._make_tokenizer()
        return EngineInfo(
            engine=self.name,
            model=self._served_model,
            device="server",
            dtype="server",
            details={
                "base_url": self.base_url,
                "endpoint": self.endpoint,
                "served_models": models,
                "api_key_env": self.api_key_env,
                "max_concurrency": self.max_concurrency,
                "prompts_per_request": self.prompts_per_request,
            },
        )

    def _run(self, coroutine: Any, timeout: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _open(self) -> list[str]:
        import aiohttp

        self._session = aiohttp.ClientSession(headers=self._headers())
        try:
            async with self._session.get(
                f"{self.base_url}/v1/models", timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                if response.status != 200:
                    raise ConnectionError(
                        f"{self.base_url}/v1/models answered HTTP {response.status}"
                    )
                body = await response.json()
        except aiohttp.ClientError as exc:
            await self._session.close()
            raise ConnectionError(f"cannot reach the server at {self.base_url}: {exc}") from None
        return [str(m["id"]) for m in body.get("data", []) if isinstance(m, dict) and "id" in m]

    def _make_tokenizer(self) -> Tokenizer:
        """The tokenizer that builds prompts and counts tokens when usage is missing.

        The `tokenizer` setting, else the served model when it is a local directory (a
        server started on the tiny model serves it under its path).
        """
        from transformers import AutoTokenizer

        from pytest_llmperf.engines.hf import HFTokenizer
        from pytest_llmperf.tinymodel import resolve_model

        path = resolve_model(str(self._tokenizer_name or self._served_model))
        return HFTokenizer(AutoTokenizer.from_pretrained(path))

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            raise RuntimeError("openai engine: start() it first")
        return self._tokenizer

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._session is not None:
            asyncio.run_coroutine_threadsafe(self._session.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not loop.is_running():
            loop.close()

    # --- requests -------------------------------------------------------------------

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        assert self._loop is not None
        out: queue.Queue[Any] = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(self._send_all(requests, out), self._loop)
        # Every wait is bounded: the whole batch can take at most the per-request bound
        # times the number of waves the concurrency limit makes.
        waves = 1 + len(requests) // max(1, self.max_concurrency or len(requests) or 1)
        deadline = time.monotonic() + self.request_timeout_s * waves + 30.0
        while True:
            item = out.get(timeout=max(0.1, deadline - time.monotonic()))
            if item is _DONE:
                break
            yield item
        future.result(timeout=5)

    async def _send_all(self, requests: Sequence[GenerationRequest], out: queue.Queue[Any]) -> None:
        limit = asyncio.Semaphore(self.max_concurrency or max(1, len(requests)))
        groups = self._groups(requests)
        start = time.perf_counter()
        cpu_start = time.thread_time()
        lags: list[float] = []
        ticker = asyncio.ensure_future(_measure_lag(lags))

        async def one(group: list[tuple[int, GenerationRequest]]) -> None:
            offset = group[0][1].send_offset_s
            if offset > 0:  # open loop: send on schedule; the schedule is the arrival
                await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            async with limit:
                await self._send(group, out, start + offset if offset > 0 else None)

        try:
            await asyncio.gather(*(one(g) for g in groups))
        finally:
            ticker.cancel()
            lags.sort()
            self.last_round_stats = {
                "client_cpu_s": time.thread_time() - cpu_start,
                "loop_lag_ms_max": lags[-1] * 1000 if lags else 0.0,
                "loop_lag_ms_p99": lags[int(0.99 * (len(lags) - 1))] * 1000 if lags else 0.0,
            }
            out.put(_DONE)

    def _groups(
        self, requests: Sequence[GenerationRequest]
    ) -> list[list[tuple[int, GenerationRequest]]]:
        indexed = list(enumerate(requests))
        size = self.prompts_per_request
        if size <= 1:
            return [[item] for item in indexed]
        # Only plain prompts with equal sampling share a request (the `prompt` list form).
        groups: list[list[tuple[int, GenerationRequest]]] = []
        for item in indexed:
            last = groups[-1] if groups else None
            if (
                last is not None
                and len(last) < size
                and item[1].messages is None
                and last[0][1].messages is None
                and last[0][1].sampling == item[1].sampling
            ):
                last.append(item)
            else:
                groups.append([item])
        return groups

    def _body(self, group: list[tuple[int, GenerationRequest]]) -> tuple[str, dict[str, Any]]:
        first = group[0][1]
        s = first.sampling
        body: dict[str, Any] = {
            "model": self._served_model,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if self.vllm_extensions:
            body.update({"min_tokens": s.min_tokens, "ignore_eos": s.ignore_eos})
            if s.top_k:
                body["top_k"] = s.top_k
        if first.messages is not None or self.endpoint == "chat":
            messages = first.messages or ({"role": "user", "content": first.prompt or ""},)
            body["messages"] = [dict(m) for m in messages]
            body["max_completion_tokens"] = body.pop("max_tokens")
            return "/v1/chat/completions", body
        prompts = [(r.prompt_token_ids and list(r.prompt_token_ids)) or r.prompt for _, r in group]
        body["prompt"] = prompts if len(prompts) > 1 else prompts[0]
        return "/v1/completions", body

    async def _send(
        self,
        group: list[tuple[int, GenerationRequest]],
        out: queue.Queue[Any],
        scheduled: float | None = None,
    ) -> None:
        import aiohttp

        path, body = self._body(group)
        members = {choice: index for choice, (index, _) in enumerate(group)}
        open_members = set(members.values())
        texts = {index: [] for index in open_members}  # type: dict[int, list[str]]
        usage: dict[str, Any] = {}
        finished: dict[int, tuple[str, float]] = {}
        sent = scheduled if scheduled is not None else time.perf_counter()
        for index in open_members:
            out.put(StreamChunk(index, (), sent_at=sent, received_at=sent, token_count=0))

        def fail(reason: str) -> None:
            now = time.perf_counter()
            for index in sorted(open_members):
                out.put(StreamChunk(index, (), "error", error=reason, received_at=now))
            open_members.clear()

        try:
            timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
            async with self._session.post(
                f"{self.base_url}{path}", json=body, timeout=timeout
            ) as response:
                if response.status != 200:
                    text = (await response.text())[:300]
                    fail(f"HTTP {response.status}: {text}")
                    return
                async for raw in response.content:
                    now = time.perf_counter()
                    line = raw.decode("utf-8", errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        event = json.loads(data)
                    except json.JSONDecodeError:
                        fail(f"malformed event from the server: {data[:200]!r}")
                        return
                    if not isinstance(event, dict):
                        fail(f"malformed event from the server: {data[:200]!r}")
                        return
                    if "error" in event:
                        fail(f"server error in the stream: {json.dumps(event['error'])[:300]}")
                        return
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or ():
                        member = members.get(int(choice.get("index", 0)))
                        if member is None or member not in open_members:
                            continue
                        index = member
                        piece = choice.get("text")
                        if piece is None:
                            piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            texts[index].append(piece)
                            out.put(StreamChunk(index, (), token_count=1, received_at=now))
                        if choice.get("finish_reason"):
                            # Usage comes in a later event: finish when the stream ends.
                            open_members.discard(index)
                            finished[index] = (choice["finish_reason"], now)
        except asyncio.TimeoutError:
            fail(f"request timed out after {self.request_timeout_s:.0f} s")
            return
        except aiohttp.ClientError as exc:
            fail(f"connection failed: {type(exc).__name__}: {exc}")
            return
        for index, (finish, at) in finished.items():
            self._finish(out, index, len(group), finish, "".join(texts[index]), usage, at)
        if open_members:
            fail("stream ended before the request finished")

    def _finish(
        self,
        out: queue.Queue[Any],
        index: int,
        group_size: int,
        finish: str,
        text: str,
        usage: dict[str, Any],
        at: float,
    ) -> None:
        # The server's usage covers the whole request, so it is one request's count only
        # when the request carried one prompt; otherwise count with the run's tokenizer.
        if group_size == 1 and usage.get("completion_tokens") is not None:
            count, source = int(usage["completion_tokens"]), "usage"
            prompt = usage.get("prompt_tokens")
        else:
            count, source = (len(self.tokenizer.encode(text)) if text else 0), "tokenizer"
            prompt = None
        reason: FinishReason = "length" if finish == "length" else "stop"
        out.put(
            StreamChunk(
                index,
                (),
                reason,
                text=text,
                received_at=at,
                token_count=0,
                prompt_tokens=prompt,
                output_tokens=count,
                token_count_source=source,
            )
        )
