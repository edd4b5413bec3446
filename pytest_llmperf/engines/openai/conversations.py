"""The client's side of conversations: each later turn waits on the client's event loop for
the turn before it, then goes with the real answers in its history (`engines.turns`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from pytest_llmperf.engines.base import GenerationRequest, StreamChunk
from pytest_llmperf.engines.turns import chain, failed_before, with_answers


class ClientTurns:
    """The conversations of one batch: which turn waits for which, and the answers so far
    (`engines.turns`). Lives on the client's event loop only."""

    def __init__(self, requests: Sequence[GenerationRequest]) -> None:
        self.requests = requests
        self.by_id = {r.custom_id: r for r in requests}
        waited = {r.follows for r in requests if r.follows is not None}
        self.finished = {cid: asyncio.Event() for cid in waited if cid in self.by_id}
        self.answers: dict[str, str | None] = {}  # custom_id -> text, for answered turns

    def follows(self, request: GenerationRequest) -> bool:
        return request.follows is not None and request.follows in self.finished

    async def ready(
        self, index: int, request: GenerationRequest
    ) -> GenerationRequest | StreamChunk:
        """The turn to send once the turn before it was answered and the think time passed
        (its history holding the real answers), or its failure when an earlier turn failed."""
        assert request.follows is not None
        await self.finished[request.follows].wait()
        earlier = chain(request, self.by_id)
        failed = next((cid for cid in earlier if cid not in self.answers), None)
        if failed is not None:
            now = time.perf_counter()
            reason = failed_before(failed)
            return StreamChunk(index, (), "error", error=reason, sent_at=now, received_at=now)
        if request.think_time_s > 0:
            await asyncio.sleep(request.think_time_s)
        texts = {cid: t for cid, t in self.answers.items() if t is not None}
        return with_answers(request, earlier, texts)

    def answered(self, chunks: Sequence[StreamChunk]) -> None:
        for chunk in chunks:
            if chunk.finish_reason != "error":
                self.answers[self.requests[chunk.index].custom_id] = chunk.text

    def done(self, group: Sequence[tuple[int, GenerationRequest]]) -> None:
        """The group's requests ended (answered, failed or cancelled): their next turns go."""
        for _, request in group:
            event = self.finished.get(request.custom_id)
            if event is not None:
                event.set()
