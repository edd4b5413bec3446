"""What every scoring engine does the same way: tokenize the pairs, sum the tokens.

Context and continuation are tokenized separately with the engine's tokenizer (no
special tokens) and joined as token ids, so every engine scores the same tokens for a
`ScoreRequest` and no engine re-tokenizes across the boundary (a "=" and " 7" merged
into one token would make the continuation's score depend on the tokenizer's whims).
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_llmperf.engines.base import ScoreRequest, ScoreResult, Tokenizer

TokenPair = tuple[list[int], list[int]]


def token_pairs(
    tokenizer: Tokenizer, requests: Sequence[ScoreRequest], engine: str
) -> list[TokenPair]:
    """(context ids, continuation ids) per request; both must be non-empty."""
    pairs = []
    for request in requests:
        context = tokenizer.encode(request.context)
        continuation = tokenizer.encode(request.continuation)
        if not context or not continuation:
            raise ValueError(
                f"{engine} engine: cannot score {request!r}: context and continuation "
                "must both be non-empty"
            )
        pairs.append((context, continuation))
    return pairs


def result_from_tokens(logprobs: Sequence[float], greedy: Sequence[bool]) -> ScoreResult:
    """A continuation's score from its tokens' log-probabilities and whether each was top-1."""
    return ScoreResult(logprob=float(sum(logprobs)), tokens=len(logprobs), greedy=all(greedy))
