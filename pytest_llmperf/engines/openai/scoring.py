"""Log-likelihood scoring over an OpenAI-compatible `/v1/completions` endpoint.

The legacy completions API scores a prompt when asked to `echo` it with `logprobs`:
the response's `logprobs.token_logprobs` then starts with one entry per prompt token
(the first is null: nothing precedes it) and `top_logprobs` with the most likely
token(s) at each position. Each pair goes out as one token-id prompt (context +
continuation, tokenized as every engine tokenizes them, `engines.scoring`), with
`max_tokens: 1` (some servers refuse 0; the generated token is ignored) and
`logprobs: 1`, as lm-evaluation-harness asks. A continuation token is greedy when its
log-probability is not below the best at its position (within 1e-6, the precision
servers print).

vLLM's server supports this. Servers that do not (OpenAI's current models, llama.cpp's
server, Ollama) either refuse `echo` or return no prompt log-probabilities: both raise
`ScoringUnsupported`, which makes the harness skip the test with the server's answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pytest_llmperf.engines.base import ScoreResult, ScoringUnsupported
from pytest_llmperf.engines.scoring import TokenPair, result_from_tokens

#: Tolerance of the greedy check: servers print log-probabilities as float32 decimals.
GREEDY_TOLERANCE = 1e-6


def score_body(model: str, pair: TokenPair) -> dict[str, Any]:
    context, continuation = pair
    return {
        "model": model,
        "prompt": [*context, *continuation],
        "max_tokens": 1,
        "temperature": 0.0,
        "echo": True,
        "logprobs": 1,
    }


def unsupported_answer(status: int, body: bytes) -> ScoringUnsupported | None:
    """A refusal that means "this server cannot echo log-probabilities", else None."""
    text = body.decode("utf-8", errors="replace")
    if 400 <= status < 500 and ("echo" in text or "logprobs" in text or status == 404):
        return ScoringUnsupported(
            f"the server refused an echo+logprobs request: HTTP {status}: {text[:300]}"
        )
    return None


def parse_score(answer: Mapping[str, Any], pair: TokenPair) -> ScoreResult:
    """The continuation's score from one echoed completion."""
    context, continuation = pair
    try:
        logprobs = answer["choices"][0]["logprobs"]
        token_logprobs = logprobs["token_logprobs"]
        top_logprobs = logprobs.get("top_logprobs") or []
    except (KeyError, IndexError, TypeError):
        raise ScoringUnsupported(
            "the server's completion carries no `logprobs.token_logprobs`: "
            f"it does not score prompts (answer began {json.dumps(answer)[:200]})"
        ) from None
    end = len(context) + len(continuation)
    if not isinstance(token_logprobs, list) or len(token_logprobs) < end:
        raise ScoringUnsupported(
            f"the server returned {len(token_logprobs or [])} log-probabilities for a prompt of "
            f"{end} tokens: it does not echo the prompt's log-probabilities"
        )
    picked = token_logprobs[len(context) : end]
    tops = top_logprobs[len(context) : end] if len(top_logprobs) >= end else [None] * len(picked)
    if any(not isinstance(value, (int, float)) for value in picked):
        raise ValueError(f"non-numeric log-probabilities from the server: {picked!r}")
    greedy = [
        isinstance(top, dict) and bool(top) and value >= max(top.values()) - GREEDY_TOLERANCE
        for value, top in zip(picked, tops, strict=True)
    ]
    return result_from_tokens([float(v) for v in picked], greedy)
