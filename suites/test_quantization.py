"""Seed 002's quantization trade-offs, measured on llama.cpp: memory, quality and speed of
the same model at F16 (the seed's "FP16" row), Q6_K, Q4_K_M, Q4_K_S and Q3_K_M.

pytest suites/test_quantization.py -m accuracy --engine llamacpp
pytest suites/test_quantization.py -m accuracy --engine llamacpp --model 8b-f16.gguf --gpus 0

Per type, two labelled measurements:
- `@quality`: the hundred one-digit sums (greedy, exact match and token F1; the built-in
  "tiny-trained" knows them all at F16), with `model_bytes`, the GGUF's size (memory).
- `@speed`: one request of 128 prompt tokens generating exactly 128 (`tg_tok_per_s`).
The model is quantized here from F16 with llama.cpp's own `llama_model_quantize`, cached.
K-quants need rows of 256 values: the built-in models' rows are 128 wide, so llama.cpp puts
most of their tensors in its fallback types (its log says which); sizes still shrink with
the type, and a real model gets the real mix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmperf import Config, GenerationTask, SyntheticWorkload, gguf_model
from pytest_llmperf.measure.prefill_decode import tg_metrics

SUMS = Path(__file__).parent / "data" / "sums_generation.jsonl"
TYPES = ("F16", "Q6_K", "Q4_K_M", "Q4_K_S", "Q3_K_M")


@pytest.mark.accuracy
@pytest.mark.parametrize("quantization", TYPES)
def test_quantization(llmperf, quantization):
    if llmperf.session.settings.engine not in ("llamacpp", "llamacpp-server"):
        pytest.skip("GGUF quantization types: run with --engine llamacpp or llamacpp-server")
    model = llmperf.session.settings.model
    model = "tiny-trained" if model == "tiny" else model
    config = Config.make(quantization, {"quantization": quantization})
    task = GenerationTask.load(SUMS, max_tokens=4)
    quality = llmperf.measure(
        config,
        task,
        rounds=1,
        warmup_rounds=1,
        label="quality",
        model=model,
        score=task.score,
        extra_metrics={"model_bytes": gguf_model(model, quantization).stat().st_size},
    )
    assert quality.metrics.failures == 0
    speed = llmperf.measure(
        config,
        SyntheticWorkload(num_requests=1, input_tokens=128, output_tokens=128),
        rounds=3,
        warmup_rounds=1,
        label="speed",
        model=model,
        score=tg_metrics,
    )
    assert all(r.output_tokens == 128 for r in speed.records)
