"""GPU hand-over: ten configurations alternate on one GPU without memory surviving between them.

The problem seed 000 hit: GPU memory kept from one configuration made the next run out of
memory. Each test checks that every hand-over so far left the GPUs at their baseline.
"""

from __future__ import annotations

import pytest

from pytest_llmperf import SyntheticWorkload, grid_params
from pytest_llmperf.engines.isolated.parent import RELEASE_SLACK_BYTES


@pytest.mark.smoke
@pytest.mark.gpu(1)
@pytest.mark.parametrize("config", grid_params("grids/gpu_handover.yaml"))
def test_alternating_configurations(llmperf, config):
    hungry = config.name.startswith("hungry")
    workload = SyntheticWorkload(
        num_requests=64 if hungry else 1, input_tokens=1024 if hungry else 64, output_tokens=32
    )
    result = llmperf.measure(config, workload, rounds=1, warmup_rounds=0)
    assert result.metrics.failures == 0
    for handover in llmperf.session.handovers:
        baseline, after = handover["baseline_bytes"] or {}, handover["after_bytes"] or {}
        for gpu, used in after.items():
            assert used <= baseline.get(gpu, 0) + RELEASE_SLACK_BYTES, handover
