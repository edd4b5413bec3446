"""Seed 004's transformers options on a GPU (issue 25), through the `hf` engine: bf16, each
attention implementation (eager, sdpa, flash_attention_2 where flash_attn is installed), a
static cache that transformers compiles against its default dynamic cache, and batched
generate at 1, 8 and 32 requests; 128-token prompts, exactly 256 new tokens each (the shape
of issue 11's bandwidth bound).

python bench/build_random_llama.py --shape llama-3.2-1b --out /tmp/llama1b
pytest suites/test_hf_options.py --engine hf --model /tmp/llama1b --gpus 0

Compiled configurations run first (their warm-up round compiles, tens of seconds a shape).
An uncompiled `generate` is bound by its per-step Python (about 70 ms a step for a 1B Llama
on an H100: 18 s a round), so those take one measured round after the warm-up. Where
flash_attn is not installed its configurations skip, saying so (transformers would refuse
them; the engine would fall back to sdpa and measure sdpa twice). GPU only, hf only (other
engines skip these tests); tier `longform` (256 new tokens a request), so the nightly GPU run
measures transformers' options too, on its model.
"""

from __future__ import annotations

import importlib.util

import pytest

from pytest_llmperf import Config, Grid, SyntheticWorkload, grid_params

MODES = {
    "static_compile": {"cache_implementation": "static", "compile": True},
    "dynamic": {"cache_implementation": "dynamic", "compile": False},
}
GRID = Grid.of(
    [
        Config.make(
            f"{attn}_{mode}_batch{batch}",
            {"dtype": "bfloat16", "attn_implementation": attn, **settings, "max_num_seqs": batch},
        )
        for mode, settings in MODES.items()
        for attn in ("sdpa", "eager", "flash_attention_2")
        for batch in (1, 8, 32)
    ],
    engines=["hf"],
)


@pytest.mark.longform
@pytest.mark.gpu(1)
@pytest.mark.parametrize("config", grid_params(GRID))
def test_hf_options(llmperf, config):
    settings = dict(config.engine_settings)
    if settings["attn_implementation"] == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            pytest.skip("flash_attention_2 unavailable: the flash_attn package is not installed")
    batch = settings["max_num_seqs"]
    result = llmperf.measure(
        config,
        SyntheticWorkload(num_requests=batch, input_tokens=128, output_tokens=256),
        rounds=3 if settings["compile"] else 1,
        warmup_rounds=1,
    )
    assert result.metrics.failures == 0
    assert all(r.output_tokens == 256 for r in result.records)
    assert result.engine_info.details["compiled"] is settings["compile"]
