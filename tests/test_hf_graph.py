"""The hf-fast engine's CUDA-graph decode path gives its eager loop's tokens (GPU only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pytest_llmperf.engines.base import EngineConfig, GenerationRequest, SamplingParams
from pytest_llmperf.engines.hf.fast import HFFastEngine
from pytest_llmperf.engines.hf.graph import bucket
from pytest_llmperf.models.names import tiny_model_path

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPTS = ("The cache keeps every sequence", "Explain a batch.", "hello world, it's 42", "a")


def run(
    settings: dict[str, object], requests: list[GenerationRequest], model: str = "tiny"
) -> dict[int, list[int]]:
    engine = HFFastEngine(
        EngineConfig.make("hf-fast", model, {"dtype": "float32", **settings}, [0])
    )
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


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama with grouped KV heads (4 query heads per KV head) and the tiny
    model's tokenizer: the fused step's grouped attention path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("gqa")
    tiny = tiny_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, out / name)
    base = LlamaConfig.from_pretrained(tiny)
    config = LlamaConfig(
        vocab_size=base.vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        pad_token_id=base.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.mark.parametrize("fuse", [False, True])
def test_a_gqa_model_decodes_the_same_on_both_paths(gqa_model: Path, fuse: bool) -> None:
    requests = [
        GenerationRequest(p, SamplingParams.fixed_length(24), prompt=p) for p in PROMPTS[:3]
    ]
    eager = run({"cuda_graphs": False, "max_num_seqs": 4}, requests, str(gqa_model))
    graph = run({"fuse_projections": fuse, "max_num_seqs": 4}, requests, str(gqa_model))
    assert graph == eager
    assert all(len(graph[i]) == 24 for i in range(3))


@pytest.mark.parametrize("which", ["tiny", "gqa"])
def test_batch_one_decodes_through_the_triton_kernels(gqa_model: Path, which: str) -> None:
    """One request at a time takes `triton_decode`'s step (the engine says so in its
    details): the eager loop's tokens, and the compiled step's with the kernels off."""
    model = "tiny" if which == "tiny" else str(gqa_model)
    requests = [GenerationRequest(p, SamplingParams.fixed_length(40), prompt=p) for p in PROMPTS]
    engine = HFFastEngine(
        EngineConfig.make("hf-fast", model, {"dtype": "float32", "max_num_seqs": 1}, [0])
    )
    try:
        assert engine.start().details["decode_path"].endswith("+triton_batch1")
    finally:
        engine.close()
    eager = run({"cuda_graphs": False, "max_num_seqs": 1}, requests, model)
    kernels = run({"max_num_seqs": 1}, requests, model)
    compiled = run({"max_num_seqs": 1, "triton_kernels": False}, requests, model)
    assert kernels == eager == compiled
    assert all(len(kernels[i]) == 40 for i in range(len(PROMPTS)))
