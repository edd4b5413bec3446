"""A conversation's turns, sent one after another (`GenerationRequest.follows`).

Turn k of a session carries the whole conversation so far as `messages`: the user's turns
and, between them, assistant contents that the workload wrote (text of the length the
earlier answers were asked for), so that the request is complete before anything runs.
When the earlier turns have been answered, their real answers replace those stand-ins, in
order, so that a server's prefix cache sees the history it really produced. A turn whose
earlier turn failed is not sent: it fails too, saying which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from pytest_llmperf.engines.base import GenerationRequest


def chain(request: GenerationRequest, by_id: Mapping[str, GenerationRequest]) -> list[str]:
    """The custom_ids of the turns before `request` in its session, oldest first (only those
    in this batch: a limit may have cut a session short)."""
    out: list[str] = []
    seen = {request.custom_id}
    parent = request.follows
    while parent is not None and parent in by_id and parent not in seen:
        out.append(parent)
        seen.add(parent)
        parent = by_id[parent].follows
    out.reverse()
    return out


def with_answers(
    request: GenerationRequest, earlier: Sequence[str], answers: Mapping[str, str]
) -> GenerationRequest:
    """`request` with its history's assistant contents replaced by the answers given to the
    `earlier` turns (oldest first), where an answer is known."""
    if request.messages is None:
        return request
    texts = iter([answers.get(cid) for cid in earlier])
    messages = []
    for message in request.messages:
        if message.get("role") == "assistant":
            answer = next(texts, None)
            if answer is not None:
                message = {**message, "content": answer}
        messages.append(message)
    return replace(request, messages=tuple(messages))


def depths(requests: Sequence[GenerationRequest]) -> list[int]:
    """Each request's turn index within this batch (0: sent at once; k: after k turns)."""
    by_id = {r.custom_id: r for r in requests}
    return [len(chain(r, by_id)) for r in requests]


def failed_before(earlier: str) -> str:
    return f"not sent: the turn before it ({earlier!r}) failed"
