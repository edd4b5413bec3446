"""Seed 000's vLLM sweep: five engine configurations trading context, batch and output length.

The full-size grid (`grids/vllm_seed000.yaml`) is the seed's table as run on GPUs; the
smoke tier runs scaled-down counterparts (`grids/vllm_seed000_cpu.yaml`) on any machine.
These are vLLM engine settings, so both tests run only with `--engine vllm`.

pytest suites/test_vllm_sweep.py --engine vllm -m smoke                  # CPU build, tiny model
pytest suites/test_vllm_sweep.py --engine vllm -m longform --model /models/falcon-10b --gpus 0,1
"""

from __future__ import annotations

import pytest

from pytest_llmperf import Config, SyntheticWorkload, grid_params

PROMPT_TOKENS = 64


def _measure_batch(llmperf, config: Config) -> None:
    """Two full batches of requests, each producing exactly the config's max_new_tokens."""
    if llmperf.session.settings.engine != "vllm":
        pytest.skip("vLLM engine settings: run with --engine vllm")
    max_num_seqs = dict(config.engine_settings)["max_num_seqs"]
    max_new_tokens = dict(config.workload_settings)["max_new_tokens"]
    result = llmperf.measure(
        config,
        SyntheticWorkload(
            num_requests=2 * max_num_seqs,
            input_tokens=PROMPT_TOKENS,
            output_tokens=max_new_tokens,
        ),
        rounds=2,
        warmup_rounds=1,
    )
    assert result.metrics.failures == 0
    assert result.metrics.requests == 2 * 2 * max_num_seqs
    assert all(r.output_tokens == max_new_tokens for r in result.records)


# Full size is the longform tier: hundreds to a thousand output tokens per request on a
# 10B-class model (the seed's table), far past the smoke tier's minutes-anywhere promise.
@pytest.mark.longform
@pytest.mark.gpu(1)
@pytest.mark.parametrize("config", grid_params("grids/vllm_seed000.yaml"))
def test_sweep(llmperf, config):
    """The seed's configurations at full size (tp2_len1536_batch4 needs two GPUs)."""
    _measure_batch(llmperf, config)


@pytest.mark.smoke
@pytest.mark.parametrize("config", grid_params("grids/vllm_seed000_cpu.yaml"))
def test_sweep_cpu(llmperf, config):
    """The same sweep scaled down for the CPU build and the built-in tiny model."""
    _measure_batch(llmperf, config)
