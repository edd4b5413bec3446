"""Prompt processing and token generation speed, measured apart (llama-bench's pp and tg).

llama-bench reports `pp<N>` (a prompt of N tokens processed, tokens per second) and
`tg<N>` (N tokens generated, tokens per second) as separate tests; seed 003 quotes both.
Here, per measured request:

    pp_tok_per_s = prompt_tokens / ttft             (a request that generates one token:
                                                     its time to first token is the prefill)
    tg_tok_per_s = (output_tokens - 1) / (e2e - ttft) = 1000 / tpot_ms

and the test's value is the median over its requests (a round's single request is one
sample; the median keeps one slow round from moving it). TTFT includes the engine's
scheduling and the first sampling step, as llama-bench's pp includes its batch set-up.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from pytest_llmperf.measure.metrics import RequestRecord


def pp_metrics(records: Sequence[RequestRecord]) -> dict[str, float | None]:
    speeds = [
        r.prompt_tokens / (r.ttft_ms / 1000.0)
        for r in records
        if r.error is None and r.prompt_tokens and r.ttft_ms
    ]
    return {"pp_tok_per_s": statistics.median(speeds) if speeds else None}


def tg_metrics(records: Sequence[RequestRecord]) -> dict[str, float | None]:
    speeds = [
        1000.0 / r.tpot_ms for r in records if r.error is None and r.tpot_ms and r.output_tokens > 1
    ]
    return {"tg_tok_per_s": statistics.median(speeds) if speeds else None}
