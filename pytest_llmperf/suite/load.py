"""Load shapes and service-level objectives for serving benchmarks.

Closed loop (a fixed number of requests in flight) is the `max_concurrency` engine
setting of client engines; a sweep over it is a grid axis. Open loop is `Arrivals`:
requests sent at a rate, with exponential (Poisson process) or constant gaps, whether
or not earlier ones have finished; each request's arrival is its scheduled send time,
so a client that falls behind its schedule shows up as latency, not as a lighter load.

Goodput (`SLO`): the share of requests that succeeded *and* met every bound given,
`goodput_fraction`, and those requests per second, `goodput_req_per_s` (DistServe's
definition). A bound left as None is not checked.

Client self-check (client engines only): the load generator's own cost and health.

    client_cpu_ms_per_1k_tok  CPU time of the client's event-loop thread per 1,000 output
                              tokens received.
    loop_lag_ms_max           the longest a 5 ms timer on the client's loop fired late:
                              how long an arriving event could wait before being stamped.
    client_bound              1 when the client, not the server, may have been the
                              bottleneck (loop lag p99 over 5 ms, or the loop thread busy
                              more than 80% of the round), else 0.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from pytest_llmperf.engines.base import GenerationRequest
from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.suite.arguments import number, one_of, optional_number, whole

CLIENT_LAG_LIMIT_MS = 5.0
CLIENT_BUSY_LIMIT = 0.8


@dataclass(frozen=True)
class Arrivals:
    """Send requests at `rate_per_s` on average instead of all at once."""

    rate_per_s: float
    distribution: Literal["poisson", "constant"] = "poisson"
    seed: int = 0

    def __post_init__(self) -> None:
        number("Arrivals", "rate_per_s", self.rate_per_s, positive=True)
        one_of("Arrivals", "distribution", self.distribution, ("poisson", "constant"))
        whole("Arrivals", "seed", self.seed)

    def offsets(self, n: int) -> list[float]:
        rng = random.Random(self.seed)
        t, out = 0.0, []
        for _ in range(n):
            out.append(t)
            gap = (
                rng.expovariate(self.rate_per_s)
                if self.distribution == "poisson"
                else (1.0 / self.rate_per_s)
            )
            t += gap
        return out

    def apply(self, requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        return [
            replace(r, send_offset_s=o)
            for r, o in zip(requests, self.offsets(len(requests)), strict=True)
        ]


@dataclass(frozen=True)
class SLO:
    """Per-request bounds for goodput; None leaves a bound unchecked."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            optional_number("SLO", name, getattr(self, name), positive=True)

    def met(self, record: RequestRecord) -> bool:
        if record.error is not None:
            return False
        for bound, value in (
            (self.ttft_ms, record.ttft_ms),
            (self.tpot_ms, record.tpot_ms),
            (self.e2e_ms, record.e2e_ms),
        ):
            if bound is not None and (value is None or value > bound):
                return False
        return True

    def goodput(
        self, records: Sequence[RequestRecord], duration_s: float
    ) -> dict[str, float | None]:
        if not records:
            return {"goodput_fraction": None, "goodput_req_per_s": None}
        good = sum(self.met(r) for r in records)
        return {
            "goodput_fraction": good / len(records),
            "goodput_req_per_s": good / duration_s if duration_s > 0 else None,
        }


def client_check(
    stats: Sequence[dict[str, float]], durations_s: Sequence[float], output_tokens: int
) -> dict[str, float | None]:
    """Aggregate per-round client statistics into the self-check metrics."""
    if not stats:
        return {}
    cpu_s = sum(s["client_cpu_s"] for s in stats)
    lag_max = max(s["loop_lag_ms_max"] for s in stats)
    lag_p99 = max(s["loop_lag_ms_p99"] for s in stats)
    busy = cpu_s / sum(durations_s) if sum(durations_s) > 0 else 0.0
    return {
        "client_cpu_ms_per_1k_tok": cpu_s * 1e6 / output_tokens if output_tokens else None,
        "loop_lag_ms_max": lag_max,
        "client_bound": float(lag_p99 > CLIENT_LAG_LIMIT_MS or busy > CLIENT_BUSY_LIMIT),
    }
