"""Server metrics: what the server's own Prometheus endpoint said during a test.

Read from the server's `/metrics` (`scrape.Scraper`) once when the measured rounds start,
every `--llmperf-metrics-interval` seconds (default 0.5) while they run, and once when they
end; the names each server exports are mapped to ours in `names.QUANTITIES`. For managed
servers (`vllm-server`; `llamacpp-server` when it runs llama-server, not llama-cpp-python's
server, which has none) the endpoint is the server's own; for
`--engine openai`, the one `--llmperf-metrics-url` names (none: no server metrics). A
metric the server does not export (or an endpoint that never answered) is null, never 0.
Gauges are levels at each read, so a level held for less than an interval may be missed
(rounds of a second or less need a shorter interval); counters and histograms are taken as
the difference between the last read and the first (a counter that went down, a restarted
server, is null):
    server_kv_cache_usage_peak   highest share of the KV cache in use (0 to 1) in any read.
    server_kv_cache_usage_mean   its mean over the reads.
    server_running_peak, server_running_mean
                                 the requests the server was running (its batch).
    server_waiting_peak, server_waiting_mean
                                 the requests queued for a place in the batch.
    server_preemptions           requests the scheduler preempted during the rounds.
    server_prefix_cache_hit_rate prompt tokens found in the prefix cache / prompt tokens
                                 looked up, over the rounds (null when none were looked
                                 up: caching off, or a server that does not count them).
    server_spec_acceptance_rate  draft tokens accepted / draft tokens proposed by
                                 speculative decoding over the rounds; SGLang's own
                                 acceptance gauge, averaged over the reads, where it
                                 exports no counters.
    server_requests              requests the server finished during the rounds: beside
                                 `requests` (ours), a cross-check that every request we
                                 count reached it (a managed server that pytest-xdist
                                 workers share counts every worker's: the summary notes
                                 it, and compares nothing).
    server_ttft_ms_mean          the server's mean time to first token over the rounds,
                                 from its histogram: delta sum / delta count, in ms. The
                                 server starts the clock when it receives the request and
                                 stops it when the token leaves its engine, so it is below
                                 our `ttft_ms.mean` by the network and HTTP layers.
    server_tpot_ms_mean          the same for its time per output token histogram (vLLM:
                                 per request, (e2e - ttft) / (n - 1), as ours; TGI: the
                                 request's mean time per token).
The reads themselves are kept, one line each, in the run's `server_metrics[-gwN].jsonl`
(test id, seconds since the first read, wall clock, each quantity), and plotted in the
HTML report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pytest_llmperf.measure.server.scrape import Sample

#: (name, unit, better, kind) of each metric above, for `measure.metrics.SPECS`. Levels and
#: rates are shown rather than judged by default; a thresholds file may bound any of them.
SPEC_ROWS: tuple[tuple[str, str, Literal["higher", "lower"], Literal["scalar", "count"]], ...] = (
    ("server_kv_cache_usage_peak", "ratio", "lower", "scalar"),
    ("server_kv_cache_usage_mean", "ratio", "lower", "scalar"),
    ("server_running_peak", "requests", "higher", "scalar"),
    ("server_running_mean", "requests", "higher", "scalar"),
    ("server_waiting_peak", "requests", "lower", "scalar"),
    ("server_waiting_mean", "requests", "lower", "scalar"),
    ("server_preemptions", "count", "lower", "count"),
    ("server_prefix_cache_hit_rate", "ratio", "higher", "scalar"),
    ("server_spec_acceptance_rate", "ratio", "higher", "scalar"),
    ("server_requests", "count", "higher", "count"),
    ("server_ttft_ms_mean", "ms", "lower", "scalar"),
    ("server_tpot_ms_mean", "ms", "lower", "scalar"),
)

NULL_SERVER_METRICS: dict[str, float | None] = {row[0]: None for row in SPEC_ROWS}


def _levels(samples: Sequence[Sample], name: str) -> list[float]:
    return [s.values[name] for s in samples if name in s.values]


def _delta(samples: Sequence[Sample], name: str) -> float | None:
    """Last minus first read of a counter; None when missing or reset (went down)."""
    levels = _levels(samples, name)
    if len(levels) < 2 or levels[-1] < levels[0]:
        return None
    return levels[-1] - levels[0]


def _ratio(top: float | None, bottom: float | None, scale: float = 1.0) -> float | None:
    if top is None or bottom is None or bottom <= 0:
        return None
    return top / bottom * scale


def server_metrics(samples: Sequence[Sample]) -> dict[str, float | None]:
    """The test's server metrics (module docstring) from its reads, in order."""
    metrics = dict(NULL_SERVER_METRICS)
    for name in ("kv_cache_usage", "running", "waiting"):
        levels = _levels(samples, name)
        if levels:
            metrics[f"server_{name}_peak"] = max(levels)
            metrics[f"server_{name}_mean"] = sum(levels) / len(levels)
    metrics["server_preemptions"] = _delta(samples, "preemptions")
    metrics["server_requests"] = _delta(samples, "requests")
    metrics["server_prefix_cache_hit_rate"] = _ratio(
        _delta(samples, "prefix_cache_hits"), _delta(samples, "prefix_cache_queries")
    )
    acceptance = _ratio(
        _delta(samples, "spec_accepted_tokens"), _delta(samples, "spec_draft_tokens")
    )
    gauge = _levels(samples, "spec_accept_rate")
    if acceptance is None and gauge:
        acceptance = sum(gauge) / len(gauge)
    metrics["server_spec_acceptance_rate"] = acceptance
    for name in ("ttft", "tpot"):
        metrics[f"server_{name}_ms_mean"] = _ratio(
            _delta(samples, f"{name}_s_sum"), _delta(samples, f"{name}_s_count"), 1000.0
        )
    return metrics
