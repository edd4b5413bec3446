"""The hf engine's CUDA-graph decode path gives the eager loop's tokens (GPU only)."""

from __future__ import annotations

import pytest
import torch

from pytest_llmperf.engines.base import EngineConfig, GenerationRequest, SamplingParams
from pytest_llmperf.engines.hf import HFEngine
from pytest_llmperf.engines.hf_graph import bucket

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPTS = ("The cache keeps every sequence", "Explain a batch.", "hello world, it's 42", "a")


def run(settings: dict[str, object], requests: list[GenerationRequest]) -> dict[int, list[int]]:
    engine = HFEngine(EngineConfig.make("hf", "tiny", {"dtype": "float32", **settings}, [0]))
    engine.start()
    try:
        out: dict[int, list[int]] = {i: [] for i in range(len(requests))}
        for chunk in engine.stream(requests):
            assert chunk.error is None, chunk.error
            out[chunk.index] += list(chunk.token_ids)
        return out
    finally:
        engine.close()


def test_bucket_is_the_next_power_of_two() -> None:
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 32, 33)] == [1, 2, 4, 8, 8, 16, 32, 64]


@pytest.mark.parametrize("compile_step", [False, True])
def test_graph_decoding_equals_eager_decoding(compile_step: bool) -> None:
    """Left padding (prompts of different lengths), batches padded to their bucket (3 -> 4
    rows, then 2 -> 2), fixed lengths, a free length that may stop at EOS and a minimum
    length (EOS held by the logit bias for the steps in flight): same tokens."""
    requests = [
        GenerationRequest(p, SamplingParams.fixed_length(32), prompt=p) for p in PROMPTS[:3]
    ] + [
        GenerationRequest("free", SamplingParams(max_tokens=24), prompt=PROMPTS[3]),
        GenerationRequest("min", SamplingParams(max_tokens=24, min_tokens=12), prompt="b"),
    ]
    eager = run({"cuda_graphs": False, "max_num_seqs": 3}, requests)
    graph = run({"compile": compile_step, "max_num_seqs": 3}, requests)
    assert graph == eager
    assert all(len(graph[i]) == 32 for i in range(3))
