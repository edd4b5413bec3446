"""The harness: runs a round of requests through an engine and times every chunk.

The engine yields, the harness times (see `engines.base`); metric definitions are in
`pytest_llmperf.measure.metrics`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pytest_llmperf.engines.base import (
    Engine,
    EngineTimings,
    GenerationRequest,
    SendsTurns,
    StreamChunk,
)
from pytest_llmperf.engines.turns import chain, failed_before, with_answers
from pytest_llmperf.measure.metrics import RequestRecord, tpot_ms

_MS = 1000.0


@dataclass
class _Progress:
    """What the harness has seen of one request so far."""

    arrival: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    itl_ms: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    finished_at: float | None = None
    error: str | None = None
    text: str | None = None
    engine_timings: EngineTimings | None = None
    output_tokens: int | None = None
    token_count_source: str = "engine"
    server_timings: Mapping[str, float] | None = None

    def add(self, chunk: StreamChunk, now: float) -> None:
        if chunk.received_at is not None:
            now = chunk.received_at
        if chunk.sent_at is not None:
            self.arrival = chunk.sent_at
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.output_tokens is not None:
            self.output_tokens = chunk.output_tokens
        if chunk.token_count_source is not None:
            self.token_count_source = chunk.token_count_source
        k = chunk.token_count if chunk.token_count is not None else len(chunk.token_ids)
        if k:
            if self.first is None:
                self.first = now
            elif self.last is not None:
                # A chunk of k tokens after the first: k gaps of gap / k each.
                gap = (now - self.last) * _MS / k
                self.itl_ms.extend([gap] * k)
            self.last = now
            self.tokens += k
        if chunk.token_times:
            self._add_times(chunk.token_times)
        if chunk.engine_timings is not None:
            self.engine_timings = chunk.engine_timings
        if chunk.server_timings is not None:
            self.server_timings = chunk.server_timings
        if chunk.text is not None:
            self.text = chunk.text
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.finished_at = now
            self.error = chunk.error

    def _add_times(self, times: tuple[float, ...]) -> None:
        """Token events stamped where they were received, handed over in one chunk."""
        previous = times if self.last is None else (self.last, *times)
        self.itl_ms.extend((b - a) * _MS for a, b in itertools.pairwise(previous))
        if self.first is None:
            self.first = times[0]
        self.last = times[-1]
        self.tokens += len(times)


def _record(request: GenerationRequest, progress: _Progress, round_index: int) -> RequestRecord:
    if progress.finish_reason is None:
        progress.finish_reason = "error"
        progress.error = progress.error or "engine ended the stream without finishing this request"
    failed = progress.finish_reason == "error"
    timings = progress.engine_timings
    arrival: float
    first: float | None
    last: float | None
    if timings is not None and timings.first_token is not None:
        arrival = timings.arrival
        first, last = timings.first_token, timings.last_token
        queue = (timings.scheduled - arrival) * _MS if timings.scheduled is not None else None
        source = "engine"
    else:
        arrival, first, last, queue, source = (
            progress.arrival,
            progress.first,
            progress.last,
            None,
            "harness",
        )
    ttft = (first - arrival) * _MS if first is not None and not failed else None
    end = last if last is not None else progress.finished_at
    e2e = (end - arrival) * _MS if end is not None and not failed else None
    tokens = progress.output_tokens if progress.output_tokens is not None else progress.tokens
    return RequestRecord(
        custom_id=request.custom_id,
        round=round_index,
        prompt_tokens=progress.prompt_tokens,
        output_tokens=tokens,
        finish_reason=progress.finish_reason,
        ttft_ms=ttft,
        e2e_ms=e2e,
        tpot_ms=None if failed else tpot_ms(e2e, ttft, tokens),
        queue_ms=queue,
        itl_ms=() if failed else tuple(progress.itl_ms),
        error=progress.error,
        output_text=progress.text,
        timing_source=source,
        token_count_source=progress.token_count_source,
        server_timings=progress.server_timings,
    )


def run_round(
    engine: Engine,
    requests: Sequence[GenerationRequest],
    round_index: int,
    on_record: Callable[[RequestRecord], None] | None = None,
) -> tuple[list[RequestRecord], float]:
    """Send every request at once, time each chunk; returns records and wall seconds.

    A request's record is handed to `on_record` as soon as it finishes, so results
    are written while the round is still running. An exception from the engine ends
    the round: requests still open become failures carrying the exception's text.

    Conversations (requests that `follow` another): an engine that `SendsTurns` sends
    each turn itself once the turn before has been answered; any other engine gets them
    in waves, each wave the next turn of every session, after the wave before has ended
    and the wave's longest think time has passed, its arrival the wave's start.
    """
    start = time.perf_counter()
    progress = [_Progress(arrival=start) for _ in requests]
    records: list[RequestRecord | None] = [None] * len(requests)

    def finish(index: int) -> None:
        record = _record(requests[index], progress[index], round_index)
        records[index] = record
        if on_record is not None:
            on_record(record)

    try:
        if any(r.follows for r in requests) and not isinstance(engine, SendsTurns):
            _waves(engine, requests, progress, records, finish)
        else:
            _stream(engine, requests, range(len(requests)), progress, records, finish)
    except Exception as exc:  # the engine broke: the round's open requests fail
        message = f"{type(exc).__name__}: {exc}"
        for index, record in enumerate(records):
            if record is None:
                progress[index].finish_reason = "error"
                progress[index].error = message
                finish(index)
    duration = time.perf_counter() - start
    for index, record in enumerate(records):
        if record is None:
            finish(index)
    return [r for r in records if r is not None], duration


def _stream(
    engine: Engine,
    batch: Sequence[GenerationRequest],
    indices: Sequence[int],
    progress: list[_Progress],
    records: list[RequestRecord | None],
    finish: Callable[[int], None],
) -> None:
    """Stream `batch` through the engine; its request i is the round's `indices[i]`."""
    for chunk in engine.stream(batch):
        now = time.perf_counter()
        if not 0 <= chunk.index < len(batch):
            continue  # a chunk for no request of this batch
        index = indices[chunk.index]
        if records[index] is not None:
            continue  # a chunk for no open request: ignore, the record is final
        progress[index].add(chunk, now)
        if chunk.finish_reason is not None:
            finish(index)


def _waves(
    engine: Engine,
    requests: Sequence[GenerationRequest],
    progress: list[_Progress],
    records: list[RequestRecord | None],
    finish: Callable[[int], None],
) -> None:
    """Conversations on an engine that runs a batch at once: turn k of every session in
    wave k, with the answers of the waves before in its history."""
    by_id = {r.custom_id: r for r in requests}
    chains = [chain(r, by_id) for r in requests]
    answered: dict[str, str | None] = {}  # custom_id -> its answer's text (None: not given)
    for depth in range(max(len(c) for c in chains) + 1):
        wave = [i for i, c in enumerate(chains) if len(c) == depth]
        think = max((requests[i].think_time_s for i in wave), default=0.0) if depth else 0.0
        if think > 0:
            time.sleep(think)
        batch, indices = [], []
        for i in wave:
            failed = next((cid for cid in chains[i] if cid not in answered), None)
            if failed is not None:
                progress[i].finish_reason = "error"
                progress[i].error = failed_before(failed)
                finish(i)
                continue
            texts = {cid: t for cid, t in answered.items() if t is not None}
            batch.append(with_answers(requests[i], chains[i], texts))
            indices.append(i)
        now = time.perf_counter()
        for i in indices:
            progress[i].arrival = now
        if batch:
            _stream(engine, batch, indices, progress, records, finish)
        for i in indices:
            record = records[i]
            if record is not None and record.error is None:
                answered[requests[i].custom_id] = record.output_text
