"""Decode speed on a GPU (issue 11): batch 1 against the weights-only bandwidth bound, and
batch 32, with 128-token prompts and exactly 256 new tokens each.

python bench/build_random_llama.py --shape llama-3.2-1b --out /tmp/llama1b
pytest suites/test_decode_speed.py -m smoke --model /tmp/llama1b --gpus 0 --engine hf-fast

Reports `mbu` and `weights_bound_tok_per_s` (`pytest_llmperf.measure.bandwidth`) beside output
tok/s; the warm-up round builds what the engine compiles (hf-fast's CUDA graphs, reported as
`graph_build_s`; hf's compiled decode step with a static cache), outside the measured rounds.
Any engine; GPU only (skipped on a CPU run).
"""

from __future__ import annotations

import pytest

from pytest_llmperf import Config, SyntheticWorkload


@pytest.mark.smoke
@pytest.mark.gpu(1)
@pytest.mark.parametrize("batch", [1, 32])
def test_decode_speed(llmperf, batch):
    result = llmperf.measure(
        Config.make(f"batch{batch}", {"max_num_seqs": batch}),
        SyntheticWorkload(num_requests=batch, input_tokens=128, output_tokens=256),
        rounds=3,
        warmup_rounds=1,
    )
    assert result.metrics.failures == 0
    assert all(r.output_tokens == 256 for r in result.records)
