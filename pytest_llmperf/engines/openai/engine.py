"""The `openai` engine: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama).

Requests go out as streaming `/v1/completions` (or `/v1/chat/completions` with
`endpoint: chat`, and always for `messages` requests) with `stream_options.include_usage`.
The client (`engines.http_stream`, our own HTTP/1.1 client on asyncio protocols, on
uvloop when it is installed) runs on an event loop in a thread of its own; each packet
is stamped with `time.perf_counter()` the moment it is read, and every token event in
it gets that stamp. A request is handed to the harness once, when it ends, with the
stamps of all its token events (`StreamChunk.token_times`): nothing crosses threads per
token, and the time a request waits for the harness's thread is not counted. A
request's arrival is when it left the client (`sent_at`).

Conversations (`GenerationRequest.follows`): a later turn is sent when the turn before it
has been answered and its think time has passed, with the real answers in its history
(`engines.turns`); its arrival is when it is sent. Each session goes at its own pace.

A token event is an event whose choice carries text (a completion's `text`, a chat
`delta.content`), or empty text before the finish (a token whose characters are not
complete yet); the chat role announcement and an empty closing event are not tokens.
One event is one inter-token gap sample even if a server that fell behind merged
several tokens into it (the count of tokens still comes from usage).

Token counts: the server's usage report when it sends one (`token_count_source =
"usage"`); otherwise the run's tokenizer on the returned text ("tokenizer"); for a
group of prompts sent in one request (`prompts_per_request > 1`, the `prompt` list
form), where usage only covers the group, the tokenizer too.

`tokenized_requests: true` sends text prompts as token ids, tokenized by the client as
the server would tokenize the text (special tokens included), as evaluation harnesses
do (lm-evaluation-harness's `tokenized_requests`): the server skips tokenizing. The
client's tokenizing happens inside the round, so its cost is counted.

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
from dataclasses import replace
from typing import Any, ClassVar

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    ScoreRequest,
    ScoreResult,
    ScoringUnsupported,
    StreamChunk,
    Tokenizer,
)
from pytest_llmperf.engines.openai.conversations import ClientTurns
from pytest_llmperf.engines.openai.events import EventStream
from pytest_llmperf.engines.openai.http_stream import HTTPClient
from pytest_llmperf.engines.openai.scoring import parse_score, score_body, unsupported_answer
from pytest_llmperf.engines.openai.spec import OPENAI
from pytest_llmperf.engines.scoring import TokenPair, token_pairs
from pytest_llmperf.engines.spec import EngineSpec
from pytest_llmperf.models.tokenizer import FileTokenizer, HFTokenizer, local_tokenizer

_DONE = object()


async def _measure_lag(lags: list[float], interval_s: float = 0.02) -> None:
    """How late a short timer fires: the time an arriving event may wait unstamped.

    Every 20 ms: each wake-up costs the client CPU (at 5 ms this timer cost 2.5 us per
    token in `bench/client_vs_vllm_bench.py`), and a loop busy enough to delay stamps
    stays busy for longer than that.
    """
    while True:
        due = time.perf_counter() + interval_s
        await asyncio.sleep(interval_s)
        lags.append(max(0.0, time.perf_counter() - due))


class OpenAIEngine:
    name: ClassVar[str] = "openai"
    spec: ClassVar[EngineSpec] = OPENAI
    #: Sends a conversation's turns itself, each after the answer before it (`SendsTurns`).
    sends_turns: ClassVar[bool] = True

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        settings = self.spec.resolve(dict(config.settings))
        self.base_url = str(settings["base_url"]).rstrip("/")
        #: The server's Prometheus endpoint (`ExportsMetrics`), when given.
        self.metrics_url: str | None = settings["metrics_url"]
        self.api_key_env = str(settings["api_key_env"])
        self.endpoint = str(settings["endpoint"])
        self.max_concurrency = int(settings["max_concurrency"] or 0)
        self.request_timeout_s = float(settings["request_timeout_s"])
        #: Requests that outlived `request_timeout_s` so far (a managed server that let
        #: one time out is presumed hung and is ended: `managed_server`).
        self.timed_out_requests = 0
        self.prompts_per_request = int(settings["prompts_per_request"])
        self.tokenized_requests = bool(settings["tokenized_requests"])
        self.vllm_extensions = bool(settings["vllm_extensions"])
        self.eos_logit_bias = bool(settings["eos_logit_bias"])
        #: Fields merged into every request body.
        self.extra_body = dict(settings["extra_body"])
        self._tokenizer_name = settings["tokenizer"]
        self._tokenizer: HFTokenizer | FileTokenizer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http = HTTPClient(self.base_url, self._headers)
        self._served_model: str = config.model
        #: The client's own cost in the last round (see `load.client_check`).
        self.last_round_stats: dict[str, float] = {}

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> EngineInfo:
        self._loop, loop_name = _new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llmperf-http", daemon=True
        )
        self._thread.start()
        models = self._run(self._models(), timeout=30.0)
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
                "tokenized_requests": self.tokenized_requests,
                "event_loop": loop_name,
            },
        )

    def _run(self, coroutine: Any, timeout: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _redact(self, text: str | None) -> str | None:
        """Text a server sent, with the API key blanked out: servers that refuse a key often
        quote it ("Incorrect API key provided: sk-..."), and failure reasons are written to
        every results file and printed."""
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "[redacted]") if text and key else text

    async def _models(self) -> list[str]:
        try:
            response = await self._http.request("GET", "/v1/models", timeout_s=10.0)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectionError(
                f"cannot reach the server at {self.base_url}: {_describe(exc)}"
            ) from None
        if response.status != 200:
            raise ConnectionError(f"{self.base_url}/v1/models answered HTTP {response.status}")
        try:
            body = json.loads(response.body)
        except ValueError:
            raise ConnectionError(f"{self.base_url}/v1/models did not answer JSON") from None
        data = body.get("data", []) if isinstance(body, dict) else []
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

    def _make_tokenizer(self) -> HFTokenizer | FileTokenizer:
        """The tokenizer that builds prompts and counts tokens when usage is missing.

        The `tokenizer` setting, else the served model when it is a local directory (a
        server started on the tiny model serves it under its path); read without torch
        (`models.tokenizer`).
        """
        return local_tokenizer(str(self._tokenizer_name or self._served_model))

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            raise RuntimeError("openai engine: start() it first")
        return self._tokenizer

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._thread is not None and self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            except Exception:  # closing must go on; the loop stops below
                pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not loop.is_running():
            loop.close()

    async def _shutdown(self) -> None:
        self._http.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the closed transports report `connection_lost`

    # --- requests -------------------------------------------------------------------

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        assert self._loop is not None
        if self.tokenized_requests:
            requests = [self._as_token_ids(r) for r in requests]
        out: queue.Queue[Any] = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(self._send_all(requests, out), self._loop)
        # Every wait is bounded: the whole batch can take at most the per-request bound
        # times the number of waves the concurrency limit makes.
        waves = 1 + len(requests) // max(1, self.max_concurrency or len(requests) or 1)
        # A conversation's turns go one after another: each adds a request and its think time.
        turns = sum(1 for r in requests if r.follows is not None)
        thinking = sum(r.think_time_s for r in requests)
        deadline = time.monotonic() + self.request_timeout_s * (waves + turns) + thinking + 30.0
        while True:
            item = out.get(timeout=max(0.1, deadline - time.monotonic()))
            if item is _DONE:
                break
            yield from item
        future.result(timeout=5)

    def _as_token_ids(self, request: GenerationRequest) -> GenerationRequest:
        """A text prompt as the ids the server would make of it (special tokens included)."""
        if request.prompt is None:
            return request
        ids = self._server_token_ids(request.prompt)
        return replace(request, prompt=None, prompt_token_ids=tuple(ids))

    def _server_token_ids(self, text: str) -> list[int]:
        """`text` tokenized as a completions server tokenizes a text prompt."""
        if self._tokenizer is None:
            raise RuntimeError("openai engine: start() it first")
        return self._tokenizer.encode_with_specials(text)

    async def _send_all(self, requests: Sequence[GenerationRequest], out: queue.Queue[Any]) -> None:
        limit = asyncio.Semaphore(self.max_concurrency or max(1, len(requests)))
        groups = self._groups(requests)
        start = time.perf_counter()
        cpu_start = time.thread_time()
        lags: list[float] = []
        ticker = asyncio.ensure_future(_measure_lag(lags))
        turns = ClientTurns(requests)
        # Open-loop sends: (scheduled, actual) seconds after the round's start, for the
        # achieved send rate (`load.send_rates`).
        sends: list[tuple[float, float]] = []

        async def one(group: list[tuple[int, GenerationRequest]]) -> None:
            index, first = group[0]
            try:
                if turns.follows(first):  # a conversation's later turn: after its answer
                    ready = await turns.ready(index, first)
                    if isinstance(ready, StreamChunk):
                        out.put([ready])
                        return
                    async with limit:
                        chunks = await self._send([(index, ready)])
                else:
                    offset = first.send_offset_s
                    if offset > 0:  # open loop: send on schedule; the schedule is the arrival
                        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
                    async with limit:
                        sends.append((offset, time.perf_counter() - start))
                        chunks = await self._send(group, start + offset if offset > 0 else None)
                turns.answered(chunks)
                out.put(chunks)
            finally:
                turns.done(group)

        try:
            await asyncio.gather(*(one(g) for g in groups))
        finally:
            ticker.cancel()
            lags.sort()
            self.last_round_stats = {
                "client_cpu_s": time.thread_time() - cpu_start,
                "loop_lag_ms_max": lags[-1] * 1000 if lags else 0.0,
                "loop_lag_ms_p99": lags[int(0.99 * (len(lags) - 1))] * 1000 if lags else 0.0,
                **send_spans(sends),
            }
            out.put(_DONE)

    def _groups(
        self, requests: Sequence[GenerationRequest]
    ) -> list[list[tuple[int, GenerationRequest]]]:
        indexed = list(enumerate(requests))
        size = self.prompts_per_request
        if size <= 1 or self.endpoint == "ollama":  # Ollama takes one prompt per request
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
                and item[1].follows is None
                and last[0][1].follows is None
                and last[0][1].sampling == item[1].sampling
            ):
                last.append(item)
            else:
                groups.append([item])
        return groups

    def _body(self, group: list[tuple[int, GenerationRequest]]) -> tuple[str, dict[str, Any]]:
        first = group[0][1]
        s = first.sampling
        if self.endpoint == "ollama":
            return _ollama_body(self._served_model, first)
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
        body.update(self.extra_body)
        if self.eos_logit_bias and (s.ignore_eos or s.min_tokens >= s.max_tokens):
            # Servers without ignore_eos (llama-cpp-python's) still take OpenAI's logit_bias:
            # EOS at -100 never wins, so a fixed-length request runs to its length.
            eos = self._tokenizer.eos_token_id if self._tokenizer else None
            if eos is not None:
                body["logit_bias"] = {str(eos): -100}
        if first.messages is not None or self.endpoint == "chat":
            messages = first.messages or ({"role": "user", "content": first.prompt or ""},)
            body["messages"] = [dict(m) for m in messages]
            body["max_completion_tokens"] = body.pop("max_tokens")
            return "/v1/chat/completions", body
        prompts = [(r.prompt_token_ids and list(r.prompt_token_ids)) or r.prompt for _, r in group]
        body["prompt"] = prompts if len(prompts) > 1 else prompts[0]
        return "/v1/completions", body

    async def _send(
        self, group: list[tuple[int, GenerationRequest]], scheduled: float | None = None
    ) -> list[StreamChunk]:
        """One HTTP request for a group of prompts; its members' final chunks."""
        ollama = self.endpoint == "ollama"
        stream = EventStream([index for index, _ in group], ollama=ollama)
        sent = scheduled if scheduled is not None else time.perf_counter()
        try:
            path, body = self._body(group)
            response = await self._http.request(
                "POST",
                path,
                json.dumps(body).encode(),
                on_event=stream.on_event,
                ndjson=ollama,
                timeout_s=self.request_timeout_s,
            )
            if response.status != 200:
                text = response.body.decode("utf-8", errors="replace")[:300]
                stream.fail(f"HTTP {response.status}: {text}")
        except asyncio.TimeoutError:
            self.timed_out_requests += 1
            stream.fail(f"request timed out after {self.request_timeout_s:.0f} s")
        except OSError as exc:  # refused, reset, closed mid-response, not HTTP
            stream.fail(f"connection failed: {_describe(exc)}")
        except ValueError as exc:  # a request this server's API cannot express
            stream.fail(str(exc))
        chunks = stream.chunks(sent, self._count_tokens)
        return [replace(c, error=self._redact(c.error)) if c.error else c for c in chunks]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-likelihoods through echoed completions, one request per pair, concurrently.

        Raises `ScoringUnsupported` when the server cannot echo log-probabilities.
        """
        if self.endpoint == "ollama":
            raise ScoringUnsupported("Ollama's native API returns no prompt log-probabilities")
        pairs = token_pairs(self.tokenizer, requests, self.name)
        in_flight = self.max_concurrency or 64
        waves = 1 + len(pairs) // in_flight
        results: list[ScoreResult] = self._run(
            self._score_all(pairs, in_flight), timeout=self.request_timeout_s * waves + 30.0
        )
        return results

    async def _score_all(self, pairs: list[TokenPair], in_flight: int) -> list[ScoreResult]:
        limit = asyncio.Semaphore(in_flight)

        async def one(pair: TokenPair) -> ScoreResult:
            body = json.dumps(score_body(self._served_model, pair)).encode()
            async with limit:
                response = await self._http.request(
                    "POST", "/v1/completions", body, timeout_s=self.request_timeout_s
                )
            if response.status != 200:
                text = self._redact(response.body.decode("utf-8", errors="replace")) or ""
                raise unsupported_answer(response.status, text.encode()) or RuntimeError(
                    f"scoring request failed: HTTP {response.status}: {text[:300]}"
                )
            return parse_score(json.loads(response.body), pair)

        return list(await asyncio.gather(*(one(pair) for pair in pairs)))

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text)) if text else 0


def _ollama_body(model: str, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
    """Ollama's native API, which reports the server's own timings in its last line."""
    s = request.sampling
    options: dict[str, Any] = {"num_predict": s.max_tokens, "temperature": s.temperature}
    options["top_p"] = s.top_p
    if s.top_k:
        options["top_k"] = s.top_k
    if s.seed is not None:
        options["seed"] = s.seed
    if s.stop:
        options["stop"] = list(s.stop)
    body: dict[str, Any] = {"model": model, "stream": True, "options": options}
    if request.messages is not None:
        body["messages"] = [dict(m) for m in request.messages]
        return "/api/chat", body
    if request.prompt_token_ids:
        raise ValueError("Ollama's native API takes text prompts, not token ids")
    # raw: the prompt goes to the model as it is, as `/v1/completions` sends it.
    body.update(prompt=request.prompt or "", raw=True)
    return "/api/generate", body


def _new_event_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    """uvloop when it is installed (a cheaper loop: less CPU per packet), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def send_spans(sends: Sequence[tuple[float, float]]) -> dict[str, float]:
    """How many open-loop requests a round sent, and the seconds from the round's start to
    the last one's scheduled and actual send (`load.send_rates` compares their rates)."""
    if not sends:
        return {}
    return {
        "sends": float(len(sends)),
        "scheduled_span_s": max(scheduled for scheduled, _ in sends),
        "send_span_s": max(actual for _, actual in sends),
    }
