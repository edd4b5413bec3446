"""Smoke tier: throughput and latency of the run's engine, in minutes on any machine.

pytest suites/ -m smoke                     # the built-in tiny model on hf
pytest suites/ -m smoke --engine hf --model /models/llama-3.2-1b --gpus 0
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmperf import DatasetWorkload, SyntheticWorkload, grid_params

DATA = Path(__file__).parent / "data"


@pytest.mark.smoke
@pytest.mark.parametrize("config", grid_params("grids/smoke.yaml"))
def test_decode_throughput(llmperf, config):
    """Sixteen requests of 64 prompt tokens, exactly 32 output tokens each."""
    result = llmperf.measure(
        config,
        SyntheticWorkload(num_requests=16, input_tokens=64, output_tokens=32),
        rounds=3,
        warmup_rounds=1,
    )
    assert result.metrics.failures == 0
    assert all(r.output_tokens == 32 for r in result.records)


@pytest.mark.smoke
def test_single_request_latency(llmperf):
    """One request at a time: time to first token and time per output token."""
    result = llmperf.measure(
        workload=SyntheticWorkload(num_requests=1, input_tokens=128, output_tokens=64),
        rounds=5,
        warmup_rounds=1,
    )
    # One TTFT per measured request: 5 rounds, or as many as --llmperf-rounds says.
    assert result.metrics.ttft_ms.count == result.metrics.requests >= 1


@pytest.mark.smoke
def test_dataset_prompts(llmperf):
    """Prompts and chat messages from a JSONL dataset (`--llmperf-dataset` to use yours)."""
    path = llmperf.session.settings.dataset or DATA / "smoke_prompts.jsonl"
    result = llmperf.measure(workload=DatasetWorkload(path), rounds=2, warmup_rounds=1)
    assert result.metrics.failures == 0
