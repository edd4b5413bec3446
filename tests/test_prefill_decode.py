"""pp and tg speeds (llama-bench's two numbers) from request records."""

from __future__ import annotations

import pytest

from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.measure.prefill_decode import pp_metrics, tg_metrics


def record(prompt: int, out: int, ttft: float | None, tpot: float | None, error: str | None = None):
    return RequestRecord("r", 0, prompt, out, "length", ttft, None, tpot, None, error=error)


def test_pp_is_prompt_tokens_over_ttft_median_of_requests() -> None:
    records = [record(128, 1, 2.0, None), record(128, 1, 4.0, None), record(128, 1, 1.0, None)]
    assert pp_metrics(records) == {"pp_tok_per_s": pytest.approx(128 / 0.002)}
    assert pp_metrics([record(128, 0, None, None, "boom")]) == {"pp_tok_per_s": None}


def test_tg_is_one_over_tpot_median_and_needs_two_tokens() -> None:
    records = [record(1, 128, 1.0, 2.0), record(1, 128, 1.0, 4.0), record(1, 128, 1.0, 1.0)]
    assert tg_metrics(records) == {"tg_tok_per_s": pytest.approx(500.0)}
    assert tg_metrics([record(1, 1, 1.0, None)]) == {"tg_tok_per_s": None}
