"""Numbers the tool knows are bad: what no bound and no baseline is ever made of.

A measurement can be recorded and still not describe the engine. `unreliable(flat)` says,
per metric, why a value cannot be trusted:

    nothing measured      `requests` is 0 and no question was scored: every metric is a
                          placeholder.
    every request failed  `failures` equals `requests`: throughput 0, latencies of no
                          request, a failure rate of 1. Reason enough to fail the test;
                          no reason to write `failure_rate: {max: 1.25}`, a bound that
                          can never fail.
    client-bound          `client_bound` is 1 (`pytest_llmperf.suite.load`): the load
                          client, not the server, may have been the bottleneck, so every
                          metric that times something (a time or a rate, or a ratio
                          computed from one) may describe the client.
    zero latency          a latency the harness takes (ttft_ms, tpot_ms, itl_ms, e2e_ms:
                          mean, percentiles or max; a min of 0 is one gap in a packet) of
                          0 ms or less: the tokens were not timed one by one (a server that
                          sends a whole answer in one packet gives a TPOT of 0). As a bound,
                          `{max: 0}` fails every later run; as a baseline, 0 makes any value
                          a regression.

Null values are not assessed: a metric that was not measured has no value to bound or
judge. Keys missing from `flat` are no evidence either way, so a partial set of metrics
(a hand-edited baseline) is judged on what it holds.

Who reads it: `--llmperf-update-thresholds` writes no bound from an unreliable value and
says which (`thresholds.update`); a comparison (`--llmperf-compare`, `llmperf compare`)
does not judge a metric that is unreliable on either side, verdict `unreliable` with the
reason (`results.compare`); each test record keeps its reasons (`TestRecord.unreliable`),
and the terminal summary prints them.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_llmperf.measure.metrics import spec_for

#: The key that stands for every metric of a measurement.
EVERY_METRIC = "*"

#: Units of metrics that time something: a client that could not keep up distorts them.
_TIMED_UNITS = frozenset({"ms", "s", "tok/s", "req/s", "q/s", "tok/J"})
#: Ratios computed from timings (bandwidth use, speedups, goodput).
_FROM_TIMINGS = frozenset({"mbu", "speedup", "efficiency", "goodput_fraction"})
#: The client's self-check: the evidence of a client-bound round, not its victims.
_SELF_CHECK = frozenset({"client_cpu_ms_per_1k_tok", "loop_lag_ms_max", "client_bound"})
#: Latencies the harness stamps per token, which can only be positive when timed.
_HARNESS_LATENCIES = frozenset({"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"})
#: Their statistics that 0 makes meaningless. Not `min`: two token events that share a
#: packet give one gap of 0 in a stream timed well enough.
_CENTRAL_STATS = frozenset({"mean", "p50", "p90", "p95", "p99", "max"})


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _whole(flat: Mapping[str, object]) -> str | None:
    """Why no metric of the measurement can be trusted, or None."""
    requests, failures = _number(flat.get("requests")), _number(flat.get("failures"))
    scored = _number(flat.get("questions_per_s"))
    if requests == 0 and not (scored and scored > 0):
        return "nothing was measured (no request, no scored question)"
    if requests and failures is not None and failures >= requests:
        return f"every request failed ({failures:.0f} of {requests:.0f})"
    return None


def timed(metric: str) -> bool:
    """Whether `metric` times something, so that a client-bound round may distort it."""
    spec = spec_for(metric)
    if spec is None or spec.kind in ("count", "flag") or metric in _SELF_CHECK:
        return False
    return spec.unit in _TIMED_UNITS or spec.name in _FROM_TIMINGS


def unreliable(flat: Mapping[str, object]) -> dict[str, str]:
    """Why each untrustworthy metric of one measurement (flat names, as thresholds name
    them) cannot be trusted; `EVERY_METRIC` when none can. Empty when all can."""
    whole = _whole(flat)
    if whole is not None:
        return {EVERY_METRIC: whole}
    reasons: dict[str, str] = {}
    client_bound = _number(flat.get("client_bound"))
    for metric, value in flat.items():
        number = _number(value)
        if number is None:
            continue
        base, _, stat = metric.partition(".")
        if base in _HARNESS_LATENCIES and stat in _CENTRAL_STATS and number <= 0:
            reasons[metric] = f"{number:g} ms: the tokens were not timed one by one"
        elif client_bound and timed(metric):
            reasons[metric] = (
                "client-bound: the load client, not the server, may have been the bottleneck"
            )
    return reasons


def reason_for(reasons: Mapping[str, str], metric: str) -> str | None:
    """The reason `metric` is unreliable, from `unreliable`'s answer, or None."""
    return reasons.get(metric) or reasons.get(EVERY_METRIC)
