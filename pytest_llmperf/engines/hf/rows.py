"""One request's decode state and what each new token does to it, for both hf engines.

However a batch decodes (transformers' `generate` for `hf`, our own loop for `hf-fast`),
each new token of a row goes through `advance`, which applies the engine contract's
semantics (`engines.base`): EOS ends a request, unless `ignore_eos` or `min_tokens` hold it
(the decoders mask EOS while they do), and is not output; a stop string ends it with the
text cut before the string; `max_tokens` ends it with "length".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_llmperf.engines.base import SamplingParams, StreamChunk


@dataclass
class Row:
    """One request's decode state (mutable: it changes every step)."""

    index: int  # position in the `stream()` call, reported in every chunk
    prompt_ids: list[int]
    sampling: SamplingParams
    seed: int
    output: list[int] = field(default_factory=list)
    finished: bool = False
    #: hf-fast's per-row sampling generator (a torch.Generator), made when it decodes.
    generator: Any = None

    def eos_allowed(self) -> bool:
        return not self.sampling.ignore_eos and len(self.output) >= self.sampling.min_tokens

    @property
    def eos_held_for(self) -> int:
        """How many tokens this row makes before EOS may end it."""
        return self.sampling.max_tokens if self.sampling.ignore_eos else self.sampling.min_tokens


def advance(
    row: Row,
    token: int,
    eos_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
) -> StreamChunk:
    """Apply one new token to `row`; the chunk to yield for it."""
    prompt_tokens = len(row.prompt_ids)
    if token in eos_ids and row.eos_allowed():
        # EOS ends the request but is not output: an empty final chunk.
        row.finished = True
        return StreamChunk(
            row.index,
            (),
            finish_reason="stop",
            prompt_tokens=prompt_tokens,
            text=decode(row.output),
        )
    row.output.append(token)
    if row.sampling.stop:
        text = decode(row.output)
        found = (text.find(s) for s in row.sampling.stop if s)
        cut = min((i for i in found if i >= 0), default=-1)
        if cut >= 0:
            # Like vLLM: the tokens stay, the text ends before the stop string.
            row.finished = True
            return StreamChunk(
                row.index,
                (token,),
                finish_reason="stop",
                prompt_tokens=prompt_tokens,
                text=text[:cut],
            )
    if len(row.output) >= row.sampling.max_tokens:
        row.finished = True
        return StreamChunk(
            row.index,
            (token,),
            finish_reason="length",
            prompt_tokens=prompt_tokens,
            text=decode(row.output),
        )
    return StreamChunk(row.index, (token,), prompt_tokens=prompt_tokens)
