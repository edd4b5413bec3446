"""Parallel workers (seed 003): throughput with 1, 2, 4, 8 and 16 requests in flight, with
speedup over one worker and efficiency (speedup / workers) as metrics thresholds check.
The points are measured one after another, not interleaved (`pytest_llmperf.measure.turns`
defines speedup): drift between them lands in the speedup, which has no interval.
(16 is the seed's "Maximum Throughput, 16+ workers" scenario; 4 and 8 its "Interactive
API" and "Batch Processing".)

pytest suites/test_scaling.py -m smoke                   # hf: the batch
pytest suites/test_scaling.py -m smoke --engine vllm     # vLLM's max_num_seqs
pytest suites/test_scaling.py -m smoke --engine openai --base-url URL   # client concurrency

Seed 003 ran 128 prompt tokens and 4096 output tokens per worker on a 1.5B model; the
smoke tier keeps the shape (long outputs after short prompts) at a CPU-sized 64 + 64.
"""

from __future__ import annotations

import pytest

from pytest_llmperf import ScalingSeries, SyntheticWorkload, workers_config
from pytest_llmperf.suite.scaling import WORKERS


@pytest.mark.smoke
def test_parallel_workers(llmperf):
    series = ScalingSeries()
    for workers in WORKERS:
        result = llmperf.measure(
            workers_config(workers),
            SyntheticWorkload(num_requests=workers, input_tokens=64, output_tokens=64),
            rounds=3,
            warmup_rounds=1,
            label=f"workers{workers}",
            derived=lambda metrics, n=workers: series.metrics(n, metrics),
        )
        assert result.metrics.failures == 0
        assert result.metrics.extra["efficiency"] is not None
