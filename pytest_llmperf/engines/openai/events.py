"""What a server's streamed events say about each request, turned into final chunks.

`EventStream` reads one HTTP request's events as the client receives them (OpenAI's
server-sent events, or Ollama's native JSON lines), each with the time its packet
arrived, and hands over one final `StreamChunk` per prompt of the request when it ends:
its text, the arrival time of each of its token events (`token_times`), its token count
from the server's usage report or the tokenizer, or the reason it failed. See the
`openai` engine's module docstring for what counts as a token event.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pytest_llmperf.engines.base import FinishReason, StreamChunk

#: The C scanner behind `json.loads`, called directly: one event is one JSON value, and
#: this skips `loads`'s encoding detection and wrapper calls (a third of its cost here).
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


class EventStream:
    """What the events of one request said, member by member (one per prompt sent)."""

    def __init__(self, members: list[int], ollama: bool = False) -> None:
        self.members = members
        self.ollama = ollama
        self.server_timings: dict[str, float] | None = None
        self.open = set(range(len(members)))
        self.times: list[list[float]] = [[] for _ in members]
        self.texts: list[list[str]] = [[] for _ in members]
        self.finished: dict[int, tuple[str, float]] = {}
        self.usage: dict[str, Any] = {}
        self.failure: tuple[str, float] | None = None

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = (reason, time.perf_counter())

    def on_event(self, data: bytes, at: float) -> bool:
        """One event's data; True stops the stream (an error, in band or malformed)."""
        if data == b"[DONE]":
            return False  # read on to the end of the response: the connection is reused
        try:
            text = data.decode()
            event, end = _scan_json(text, 0)
            if end != len(text) and text[end:].strip():
                raise ValueError("trailing data")
            if not isinstance(event, dict):
                raise ValueError("not an object")
            if "error" in event:
                message = json.dumps(event["error"])[:300]
                self.failure = (f"server error in the stream: {message}", at)
                return True
            if self.ollama:
                self._ollama_event(event, at)
                return False
            if event.get("usage"):
                self.usage = event["usage"]
            for choice in event.get("choices") or ():
                self._choice(choice, at)
        except (StopIteration, ValueError, TypeError, AttributeError):
            # Not JSON (StopIteration is the scanner's "no value here"), or not shaped
            # like an OpenAI event.
            self.failure = (f"malformed event from the server: {data[:200]!r}", at)
            return True
        return False

    def _ollama_event(self, event: dict[str, Any], at: float) -> None:
        """A line of Ollama's native stream: text until `done`, then its own statistics."""
        if 0 not in self.open:
            return
        message = event.get("message")
        piece = message.get("content") if isinstance(message, dict) else event.get("response")
        done = bool(event.get("done"))
        if piece:
            self.texts[0].append(piece)
        if piece or (piece is not None and not done):
            self.times[0].append(at)
        if not done:
            return
        self.open.discard(0)
        self.finished[0] = (str(event.get("done_reason") or "stop"), at)
        if "eval_count" in event:
            self.usage = {
                "completion_tokens": event["eval_count"],
                "prompt_tokens": event.get("prompt_eval_count"),
            }
        timings = {
            f"{name}_ms": float(event[f"{name}_duration"]) / 1e6
            for name in ("prompt_eval", "eval", "load", "total")
            if isinstance(event.get(f"{name}_duration"), (int, float))
        }
        for name in ("prompt_eval_count", "eval_count"):
            if isinstance(event.get(name), (int, float)):
                timings[name] = float(event[name])
        self.server_timings = timings or None

    def _choice(self, choice: dict[str, Any], at: float) -> None:
        member = choice.get("index", 0)
        if member not in self.open:
            return
        finish = choice.get("finish_reason")
        if "text" in choice:
            piece = choice["text"]
            token = bool(piece) or (piece is not None and not finish)
        else:
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            token = bool(piece) or (piece is not None and not finish and "role" not in delta)
        if piece:
            self.texts[member].append(piece)
        if token:
            self.times[member].append(at)
        if finish:
            # Usage comes in a later event: the chunk is made when the stream ends.
            self.open.discard(member)
            self.finished[member] = (str(finish), at)

    def chunks(self, sent: float, count_tokens: Any) -> list[StreamChunk]:
        out = []
        single = len(self.members) == 1
        for member, index in enumerate(self.members):
            text = "".join(self.texts[member])
            times = tuple(self.times[member])
            if member not in self.finished:
                reason, at = self.failure or ("stream ended before the request finished", 0.0)
                at = at or time.perf_counter()
                out.append(
                    StreamChunk(index, (), "error", error=reason, sent_at=sent, received_at=at)
                )
                continue
            finish, at = self.finished[member]
            # The server's usage covers the whole request, so it is one request's count
            # only when the request carried one prompt; otherwise count with the tokenizer.
            if single and self.usage.get("completion_tokens") is not None:
                count, source = int(self.usage["completion_tokens"]), "usage"
                prompt = self.usage.get("prompt_tokens")
            else:
                count, source, prompt = count_tokens(text), "tokenizer", None
            reason_out: FinishReason = "length" if finish == "length" else "stop"
            out.append(
                StreamChunk(
                    index,
                    (),
                    reason_out,
                    text=text,
                    sent_at=sent,
                    received_at=at,
                    token_count=0,
                    token_times=times,
                    prompt_tokens=prompt,
                    output_tokens=count,
                    token_count_source=source,
                    server_timings=self.server_timings if single else None,
                )
            )
        return out
