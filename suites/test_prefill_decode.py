"""Prompt processing (pp) and token generation (tg) speed apart, as llama-bench reports them
(seed 003's "Single Request Performance" rows: pp of 128 prompt tokens, tg of long outputs).

pytest suites/test_prefill_decode.py -m smoke [--engine vllm] [--model PATH --gpus 0]

The smoke tier keeps pp128 and scales tg4096 down to tg128. Definitions in
`pytest_llmperf.measure.prefill_decode`.
"""

from __future__ import annotations

import pytest

from pytest_llmperf import SyntheticWorkload
from pytest_llmperf.measure.prefill_decode import pp_metrics, tg_metrics


@pytest.mark.smoke
def test_prompt_processing(llmperf):
    """pp128: one request of 128 prompt tokens and one output token, five times."""
    result = llmperf.measure(
        workload=SyntheticWorkload(num_requests=1, input_tokens=128, output_tokens=1),
        rounds=5,
        warmup_rounds=1,
        score=pp_metrics,
    )
    assert result.metrics.extra["pp_tok_per_s"] is not None


@pytest.mark.smoke
def test_token_generation(llmperf):
    """tg128: one request of one prompt token generating exactly 128 tokens, three times."""
    result = llmperf.measure(
        workload=SyntheticWorkload(num_requests=1, input_tokens=1, output_tokens=128),
        rounds=3,
        warmup_rounds=1,
        score=tg_metrics,
    )
    assert result.metrics.extra["tg_tok_per_s"] is not None
