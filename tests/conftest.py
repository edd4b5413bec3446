"""Shared helpers for the plugin's own tests: they drive pytest as users do (pytester)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.models.names import trained_model_path
from tests.cpu_vllm_server import cpu_vllm_server

# A benchmark test module as a user would write it, small enough for seconds on a CPU.
SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_llmperf import Grid, SyntheticWorkload, grid_params

    GRID = Grid.product({"max_num_seqs": [1, 4]}, base={"max_model_len": 256})

    @pytest.mark.smoke
    @pytest.mark.parametrize("config", grid_params(GRID))
    def test_decode(llmperf, config):
        result = llmperf.measure(
            config, SyntheticWorkload(num_requests=4, input_tokens=16, output_tokens=8),
            rounds=2, warmup_rounds=1,
        )
        assert result.metrics.requests == 8

    @pytest.mark.smoke
    def test_latency(llmperf):
        llmperf.measure(workload=SyntheticWorkload(num_requests=1, input_tokens=8,
                                                   output_tokens=8), rounds=2)
    """
)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester folder holding the small suite above."""
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def only_run(pytester: pytest.Pytester) -> Path:
    """The single run folder under results/."""
    runs = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def read_summary(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((only_run(pytester) / "summary.json").read_text())
    return data


@pytest.fixture(scope="session")
def trained_vllm_server() -> Iterator[str]:
    """vLLM's OpenAI server (CPU build) on tiny-trained, float32, on loopback: started once
    per session (about 50 s) for every test that asks a real server about the sums."""
    with cpu_vllm_server(trained_model_path(), max_model_len=256, dtype="float32") as url:
        yield url
