"""Scaling over parallel workers (seed 003's table: 1, 2, 4 and 8 requests in flight).

A worker is one request in flight: the engine's `max_num_seqs` (hf, vllm: the batch) or
`max_concurrency` (openai, vllm-server: the client's closed loop), each engine taking the
one it understands. With n workers the workload is n requests, one each, so every point
does the same work per worker.

    efficiency(n) = speedup(n) / n            (1.0: linear scaling)

where speedup(n) = output_tok_per_s(n) / output_tok_per_s(1), one worker's point as A and n
workers' as B (speedup is defined once, in `pytest_llmperf.measure.turns`).

Both are metrics of each labelled measurement (`workers1`, `workers2`, ...), so
thresholds bound them like any other (`efficiency: {min: 0.5}`). Here, as in every `Speedups`
series, the points are measured one after another, not interleaved: drift between them lands
in the ratio, which has no interval (an A/B test in turns, `llmperf.compare`, has both).
"""

from __future__ import annotations

from pytest_llmperf.measure.metrics import AggregateMetrics
from pytest_llmperf.suite.config import ANY_ENGINE, Config

WORKERS = (1, 2, 4, 8, 16)


def workers_config(n: int) -> Config:
    """The configuration with `n` requests in flight, for any engine: the setting an engine
    does not take is noted on the test, not applied."""
    return Config.make(f"workers{n}", {"max_num_seqs": n, "max_concurrency": n}, engines=ANY_ENGINE)


class Speedups:
    """Speedup of each measurement over a base measurement, on one rate metric.

    speedup = rate / rate of the base (1.0 for the base itself), the "Speedup" column of
    a before/after table such as seed 001's (samples/s). Measure the base first: points
    measured before it have no speedup (null). Not interleaved (`measure.turns` defines
    speedup, and says what that costs); `llmperf.compare` measures two points in turns.
    """

    def __init__(self, rate: str = "output_tok_per_s") -> None:
        self.rate = rate
        self.base: float | None = None

    def speedup(self, aggregate: AggregateMetrics, is_base: bool = False) -> float | None:
        value = getattr(aggregate, self.rate, None)
        if value is None:
            value = aggregate.extra.get(self.rate)
        if is_base:
            self.base = float(value) if value else None
        if not self.base or value is None:
            return None
        return float(value) / self.base

    def metrics(
        self, aggregate: AggregateMetrics, is_base: bool = False
    ) -> dict[str, float | None]:
        return {"speedup": self.speedup(aggregate, is_base)}


class ScalingSeries:
    """Speedup over one worker (measure it first) and efficiency for each point."""

    def __init__(self) -> None:
        self._speedups = Speedups("output_tok_per_s")

    def metrics(self, workers: int, aggregate: AggregateMetrics) -> dict[str, float | None]:
        speedup = self._speedups.speedup(aggregate, is_base=workers == 1)
        if speedup is None:
            return {"speedup": None, "efficiency": None}
        return {"speedup": speedup, "efficiency": speedup / workers}
