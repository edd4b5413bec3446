"""Load shapes and service-level objectives for serving benchmarks.

Closed loop (a fixed number of requests in flight) is the `max_concurrency` engine
setting of client engines; a sweep over it is a grid axis. Open loop is `Arrivals`:
requests sent at a rate, with exponential (Poisson process) or constant gaps, whether
or not earlier ones have finished; each request's arrival is its scheduled send time,
so a client that falls behind its schedule shows up as latency, not as a lighter load.

Burstiness (`vllm bench serve --burstiness`): the gaps are gamma-distributed with shape
`burstiness` and scale `1 / (rate * burstiness)`, so their mean stays `1 / rate` while
their coefficient of variation is `1 / sqrt(burstiness)`: 1 is the Poisson process,
below 1 burstier, above 1 more even. Unlike vLLM we do not rescale the drawn gaps to make
the last arrival land at exactly `n / rate`: the gaps stay samples of the gamma, which
is what the tests check.

Ramp-up (`vllm bench serve --ramp-up-strategy`): with `ramp_up`, the rate goes from
`ramp_from_per_s` at the first request to `rate_per_s` at the last, linearly or
exponentially in the request's index (progress p = i / (n - 1): rate = from + (to - from)
* p, or from * (to / from) ** p); the gap after request i is drawn at request i's rate.

A conversation's later turns (`GenerationRequest.follows`) are sent when the turn before
them has been answered, not on a schedule: arrivals are given to the requests that start
a session (every request, in a workload without sessions), so the rate is sessions per
second.

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

Achieved send rate (`send_rates`, open loop only): the requests sent on a schedule after the
first, over the seconds from the round's start to the last one's actual send, beside the same
count over the schedule's own span: the rate asked of the client by this draw of gaps. A
client that falls behind (its loop busy, or its `max_concurrency` full) sends later than
scheduled, and its achieved rate falls short of the asked one; the SLO search
(`suite.slo.search`) stops there, as the server is then not what is measured.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from pytest_llmperf.engines.base import GenerationRequest
from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.suite.arguments import bad, number, one_of, optional_number, whole

CLIENT_LAG_LIMIT_MS = 5.0
CLIENT_BUSY_LIMIT = 0.8


@dataclass(frozen=True)
class Arrivals:
    """Send requests at `rate_per_s` on average instead of all at once (with `ramp_up`: the
    rate reached at the last request); `burstiness` and `ramp_up` as the module says."""

    rate_per_s: float
    distribution: Literal["poisson", "constant"] = "poisson"
    seed: int = 0
    burstiness: float = 1.0
    ramp_up: Literal["linear", "exponential"] | None = None
    ramp_from_per_s: float | None = None

    def __post_init__(self) -> None:
        owner = "Arrivals"
        number(owner, "rate_per_s", self.rate_per_s, positive=True)
        one_of(owner, "distribution", self.distribution, ("poisson", "constant"))
        whole(owner, "seed", self.seed)
        number(owner, "burstiness", self.burstiness, positive=True)
        if self.burstiness != 1.0 and self.distribution != "poisson":
            problem = "a constant schedule has no burstiness: leave it at 1 or use 'poisson'"
            raise bad(owner, "burstiness", self.burstiness, problem)
        if self.ramp_up is None:
            if self.ramp_from_per_s is not None:
                problem = "needs ramp_up='linear' or 'exponential'"
                raise bad(owner, "ramp_from_per_s", self.ramp_from_per_s, problem)
            return
        one_of(owner, "ramp_up", self.ramp_up, ("linear", "exponential"))
        if self.ramp_from_per_s is None:
            raise bad(owner, "ramp_from_per_s", None, "ramp_up needs the rate it starts from")
        # Linear may start from 0 (the first gap is then drawn at the second request's
        # rate); exponential multiplies, so it must start above 0.
        if self.ramp_up == "exponential":
            number(owner, "ramp_from_per_s", self.ramp_from_per_s, positive=True)
        else:
            number(owner, "ramp_from_per_s", self.ramp_from_per_s, minimum=0)

    def rate_at(self, i: int, n: int) -> float:
        """The rate (requests per second) at which the gap after request `i` of `n` is drawn."""
        if self.ramp_up is None or self.ramp_from_per_s is None:
            return self.rate_per_s
        progress = i / (n - 1) if n > 1 else 1.0
        start, end = self.ramp_from_per_s, self.rate_per_s
        if self.ramp_up == "linear":
            return start + (end - start) * progress
        return float(start * (end / start) ** progress)

    def gaps(self, n: int) -> list[float]:
        """The `n - 1` seconds between consecutive arrivals of `n` requests."""
        rng = random.Random(self.seed)
        out = []
        for i in range(n - 1):
            rate = self.rate_at(i, n)
            if rate <= 0:  # a linear ramp from 0: nothing is due yet, take the next rate
                rate = self.rate_at(i + 1, n)
            if self.distribution == "constant":
                out.append(1.0 / rate)
            elif self.burstiness == 1.0:  # the Poisson process, drawn as it always was
                out.append(rng.expovariate(rate))
            else:  # gamma(k, 1/(rate k)): mean 1/rate, coefficient of variation 1/sqrt(k)
                k = self.burstiness
                out.append(rng.gammavariate(k, 1.0 / (rate * k)))
        return out

    def offsets(self, n: int) -> list[float]:
        """Each of `n` requests' send time in seconds after the round starts (the first: 0)."""
        return list(itertools.accumulate(self.gaps(n), initial=0.0)) if n > 0 else []

    def apply(self, requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        """The requests with their send times; only those that start a session get one."""
        starts = [i for i, r in enumerate(requests) if r.follows is None]
        out = list(requests)
        for i, offset in zip(starts, self.offsets(len(starts)), strict=True):
            out[i] = replace(requests[i], send_offset_s=offset)
        return out


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


def send_rates(stats: Sequence[Mapping[str, float]]) -> tuple[float, float] | None:
    """(asked, achieved) requests per second over the rounds sent on a schedule; None when
    no round was (a closed-loop round, a client that does not say)."""
    timed = [s for s in stats if s.get("sends", 0) > 1 and s.get("scheduled_span_s", 0) > 0]
    if not timed:
        return None
    gaps = sum(s["sends"] - 1 for s in timed)
    scheduled = sum(s["scheduled_span_s"] for s in timed)
    sent = sum(max(s["send_span_s"], s["scheduled_span_s"]) for s in timed)
    return gaps / scheduled, gaps / sent
