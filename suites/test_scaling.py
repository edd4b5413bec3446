"""Parallel workers (seed 003): throughput with 1, 2, 4, 8 and 16 requests in flight, with
speedup over one worker and efficiency (speedup / workers) as metrics thresholds check.

Two forms:
- `test_parallel_workers` (smoke): the series, its points measured one after another, not
  interleaved (`pytest_llmperf.measure.turns` defines speedup): drift between them lands in
  the speedup, which has no interval.
- `test_workers_over_one[N]` (longform): each worker count as an A/B test against one
  worker (`llmperf.compare`), the same N requests on both sides, their rounds in turns
  (ABBA): `speedup` is B/A of output throughput with its paired interval. Seed 003's figures
  (llama.cpp, Qwen2-1.5B Q4_K_M on an Apple M1 Pro, 128 prompt + 4096 output tokens a
  worker, overall t/s against one worker): 2 workers 1.13x, 4 workers 1.84x, 8 workers
  2.12x; 16 is its "Maximum Throughput, 16+ workers" scenario, not measured there.
(4 and 8 are the seed's "Interactive API" and "Batch Processing".)

pytest suites/test_scaling.py -m smoke                   # hf: the batch
pytest suites/test_scaling.py -m smoke --engine vllm     # vLLM's max_num_seqs
pytest suites/test_scaling.py -m smoke --engine openai --base-url URL   # client concurrency
pytest suites/test_scaling.py -m longform                # the A/B tests against one worker

Seed 003 ran 128 prompt tokens and 4096 output tokens per worker on a 1.5B model; the
CPU keeps the shape (long outputs after short prompts) at a CPU-sized 64 + 64.
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


@pytest.mark.longform
@pytest.mark.parametrize("workers", WORKERS[1:])
def test_workers_over_one(llmperf, workers):
    result = llmperf.compare(
        workers_config(1),
        workers_config(workers),
        SyntheticWorkload(num_requests=workers, input_tokens=64, output_tokens=64),
        rounds=3,
        warmup_rounds=1,
    )
    assert result.a.failures == result.b.failures == 0
    assert result.speedup is not None
