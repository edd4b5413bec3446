"""Seed 004's speedup claims as A/B tests (issue 26): each option against the setting it
replaces, measured in turns in one test (`llmperf.compare`: ABBA, B/A of every metric paired
by turn), its bound `speedup: {min: ...}` in `thresholds/<hardware>/hf.yaml`, the seed's
claimed figure in its docstring.

pytest suites/test_hf_speedups.py                                   # CPU, tiny model
pytest suites/test_hf_speedups.py --model /tmp/llama1b --gpus 0     # a GPU, a 1B Llama

`speedup` is B's output tokens per second over A's (the geometric mean of the per-pair
ratios, with its 95% interval). On the CPU the bounds are written from measured noise
(`--llmperf-update-thresholds`), so they say "not slower than this machine measured", not the
seed's figure; the options a CPU cannot show (bf16's tensor cores, Flash Attention 2, the
compile transformers does only on a GPU) skip there, saying why. hf only: on other engines
these tests skip. Tier `smoke`: the KV cache and the batching pairs (and the batching's
"same results" check), whose speedups stand well clear of a shared CPU's noise, small enough
for CI; the others are `longform`, the tier the nightly GPU run measures on its model.
"""

from __future__ import annotations

import importlib.util

import pytest

from pytest_llmperf import Config, SyntheticWorkload
from pytest_llmperf.engines.base import GenerationRequest, SamplingParams

#: Short prompts, short outputs: seconds a round on two CPU cores with the tiny model. On a
#: GPU a 1B model's round of these is mostly kernel launches (BENCHMARKS.md, "Seed 004's
#: speedups"): the H100 bounds were measured on it; a larger GPU workload is still to measure.
WORK = SyntheticWorkload(num_requests=8, input_tokens=32, output_tokens=16)
ROUNDS = 10


def side(name: str, settings: dict[str, object], engine: str | None = None) -> Config:
    """One side of a pair; a run on another engine than hf skips the pair."""
    if engine is not None:
        return Config.make(name, settings, engine=engine)
    return Config.make(name, settings, engines=["hf"])


def needs_gpu(llmperf, why: str) -> None:
    if not llmperf.session.gpus:
        pytest.skip(f"no GPU in this run: {why}")


@pytest.mark.longform
def test_bf16_over_float32(llmperf):
    """Seed 004: bfloat16 weights, "~2x faster inference, ~50% less memory"."""
    needs_gpu(llmperf, "bf16's speedup comes from a GPU's bf16 tensor cores (a CPU emulates it)")
    result = llmperf.compare(
        side("float32", {"dtype": "float32"}),
        side("bf16", {"dtype": "bfloat16"}),
        WORK,
        rounds=ROUNDS,
    )
    assert result.a.failures == result.b.failures == 0


@pytest.mark.longform
def test_sdpa_over_eager(llmperf):
    """transformers' sdpa attention against its eager one: the seed names no figure for sdpa
    (its attention claim is Flash Attention 2's, "2-4x faster attention computation")."""
    result = llmperf.compare(
        side("eager", {"attn_implementation": "eager"}),
        side("sdpa", {"attn_implementation": "sdpa"}),
        WORK,
        rounds=ROUNDS,
    )
    assert result.a.failures == result.b.failures == 0


@pytest.mark.longform
def test_flash_attention_2_over_sdpa(llmperf):
    """Seed 004: Flash Attention 2, "2-4x faster attention computation"."""
    needs_gpu(llmperf, "Flash Attention 2 runs on CUDA only")
    if importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash_attention_2 unavailable: the flash_attn package is not installed")
    result = llmperf.compare(
        side("sdpa", {"attn_implementation": "sdpa", "dtype": "bfloat16"}),
        side("fa2", {"attn_implementation": "flash_attention_2", "dtype": "bfloat16"}),
        WORK,
        rounds=ROUNDS,
    )
    assert result.a.failures == result.b.failures == 0


@pytest.mark.longform
def test_compile_over_eager_mode(llmperf):
    """Seed 004: torch.compile, "10-30% additional speedup after warmup" (its warm-up round
    compiles; a static cache, which is what transformers compiles)."""
    needs_gpu(llmperf, "transformers compiles the decode forward only on a GPU")
    result = llmperf.compare(
        side("static", {"cache_implementation": "static", "compile": False}),
        side("static_compiled", {"cache_implementation": "static", "compile": True}),
        WORK,
        rounds=ROUNDS,
    )
    assert result.b.failures == 0


@pytest.mark.longform
def test_static_over_dynamic_cache(llmperf):
    """transformers' static KV cache against its default dynamic one (uncompiled): the seed
    names no figure; its KV-cache claim is the next test's."""
    result = llmperf.compare(
        side("dynamic", {"cache_implementation": "dynamic", "compile": False}),
        side("static", {"cache_implementation": "static", "compile": False}),
        WORK,
        rounds=ROUNDS,
    )
    assert result.a.failures == result.b.failures == 0


@pytest.mark.smoke
def test_kv_cache_over_none(llmperf):
    """Seed 004: `use_cache=True` in generate, "20-50% faster generation"."""
    result = llmperf.compare(
        side("no_cache", {"generate_args": {"use_cache": False}}),
        side("cache", {"generate_args": {"use_cache": True}}),
        WORK,
        rounds=ROUNDS,
    )
    assert result.a.failures == result.b.failures == 0


ONE = side("one_at_a_time", {"max_num_seqs": 1})
BATCHED = side("batched8", {"max_num_seqs": 8})


@pytest.mark.smoke
def test_batched_over_one_at_a_time(llmperf):
    """Seed 004: batched generation, "2-8x faster depending on batch size" (8 here, the
    seed's ViQuAD batch)."""
    result = llmperf.compare(ONE, BATCHED, WORK, rounds=ROUNDS)
    assert result.a.failures == result.b.failures == 0


@pytest.mark.smoke
def test_batched_generation_gives_the_same_results(llmperf, llmperf_engine):
    """Seed 004: batching must not change the answers ("Incorrect results ... ensure
    use_batching=True is used consistently"): greedy outputs of eight prompts, one at a time
    and batched, token for token on a CPU (on a GPU, see below). The prompts are of one
    length: padding a batch's shorter prompts changes a model's numerics slightly, which is
    transformers' behaviour, not ours."""
    prompts = [f"question {i}: what is {i} plus {i + 1}?" for i in range(10, 18)]
    sampling = SamplingParams.fixed_length(12)
    outputs = {}
    for config in (ONE, BATCHED):
        engine = llmperf_engine(config)
        lengths = {len(engine.tokenizer.encode(p)) for p in prompts}
        assert len(lengths) == 1, f"the prompts must be of one length, got {lengths}"
        requests = [GenerationRequest(f"q{i}", sampling, prompt=p) for i, p in enumerate(prompts)]
        tokens: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
        for chunk in engine.stream(requests):
            tokens[chunk.index].extend(chunk.token_ids)
        outputs[config.name] = tokens
    one, batched = outputs[ONE.name], outputs[BATCHED.name]
    assert all(len(t) == 12 for t in one.values())
    if not llmperf.session.gpus:
        assert one == batched  # a CPU computes each row alike whatever the batch
        return
    # A GPU's matrix kernels are chosen by shape, so a batch of 8 sums in another order than
    # a batch of 1 and a near-tie between two tokens can fall the other way (with random
    # weights near-ties are common). A batching fault (a wrong mask, positions, a row's
    # cache) changes every row from its first tokens; numerics change a few rows late.
    agree = {i: _common_prefix(one[i], batched[i]) for i in one}
    assert all(n >= 2 for n in agree.values()), f"tokens agreeing from the start: {agree}"
    assert sum(n == 12 for n in agree.values()) >= len(agree) // 2, agree


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.longform
def test_hf_fast_over_hf(llmperf):
    """Our reference decoder (`hf-fast`: on CUDA a captured, compiled step) against
    transformers' own generate, at batch 1: what these weights can do over what transformers
    does with them (the seed's "vLLM integration: even faster generation" asks the same)."""
    result = llmperf.compare(
        side("hf", {"max_num_seqs": 1}),
        side("hf_fast", {"max_num_seqs": 1}, engine="hf-fast"),
        SyntheticWorkload(num_requests=2, input_tokens=32, output_tokens=16),
        rounds=ROUNDS,
    )
    assert result.a.failures == result.b.failures == 0
