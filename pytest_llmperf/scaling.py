"""Scaling over parallel workers (seed 003's table: 1, 2, 4 and 8 requests in flight).

A worker is one request in flight: the engine's `max_num_seqs` (hf, vllm: the batch) or
`max_concurrency` (openai, vllm-server: the client's closed loop), each engine taking the
one it understands. With n workers the workload is n requests, one each, so every point
does the same work per worker.

    speedup(n)    = output_tok_per_s(n) / output_tok_per_s(1)
    efficiency(n) = speedup(n) / n            (1.0: linear scaling)

Both are metrics of each labelled measurement (`workers1`, `workers2`, ...), so
thresholds bound them like any other (`efficiency: {min: 0.5}`).
"""

from __future__ import annotations

from pytest_llmperf.grid import Config
from pytest_llmperf.metrics import AggregateMetrics, MetricSpec, register_metric

register_metric(MetricSpec("speedup", "x", "higher"))
register_metric(MetricSpec("efficiency", "ratio", "higher"))

WORKERS = (1, 2, 4, 8)


def workers_config(n: int) -> Config:
    """The configuration with `n` requests in flight, for any engine."""
    return Config.make(f"workers{n}", {"max_num_seqs": n, "max_concurrency": n})


class ScalingSeries:
    """Collects the one-worker throughput, then gives each point its speedup."""

    def __init__(self) -> None:
        self.base_tok_per_s: float | None = None

    def metrics(self, workers: int, aggregate: AggregateMetrics) -> dict[str, float | None]:
        tok_per_s = aggregate.output_tok_per_s
        if workers == 1:
            self.base_tok_per_s = tok_per_s or None
        if not self.base_tok_per_s or tok_per_s is None:
            return {"speedup": None, "efficiency": None}
        speedup = tok_per_s / self.base_tok_per_s
        return {"speedup": speedup, "efficiency": speedup / workers}
