"""One table: the servers' Prometheus metric names for each quantity we read.

A quantity is read from the first of its names that the scraped text holds (newer names
first: servers rename metrics between versions), summed over label sets (vLLM labels by
model and engine, `request_success` by finish reason) except where `combine` says "max".
Gauges are read as they are; a counter by its sample `<name>_total` (prometheus_client's
parser adds the suffix where the server leaves it out: TGI's `tgi_request_count`); a histogram
is read as its `_sum` and `_count` samples (seconds, as every server here exports them).
A quantity a server does not export stays missing, and every metric made from it is
null, never zero.

Sources: vLLM's "Production Metrics" page (v0.32 docs; v0 names after the v1 ones),
SGLang's "Production Metrics" reference (`--enable-metrics`), llama.cpp's server README
(`llama-server --metrics`), TGI's metrics reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: gauge: a level now; counter: a running total; histogram: `_sum` and `_count` of one.
Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class Quantity:
    """One thing servers export, under each server's names (first found wins)."""

    name: str
    kind: Kind
    vllm: tuple[str, ...] = ()
    sglang: tuple[str, ...] = ()
    llamacpp: tuple[str, ...] = ()
    tgi: tuple[str, ...] = ()
    #: How label sets of one name combine: a sum (requests on every engine) or the max (a
    #: usage share, where summing over engines would pass 1).
    combine: Literal["sum", "max"] = "sum"

    def names(self) -> tuple[str, ...]:
        """Every server's names, in the order they are tried."""
        return self.vllm + self.sglang + self.llamacpp + self.tgi


QUANTITIES: tuple[Quantity, ...] = (
    # Share of the KV cache in use, 0 to 1 (vLLM's "_perc" is a fraction too).
    Quantity(
        "kv_cache_usage",
        "gauge",
        vllm=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        sglang=("sglang:token_usage",),
        llamacpp=("llamacpp:kv_cache_usage_ratio",),
        combine="max",
    ),
    Quantity(
        "running",
        "gauge",
        vllm=("vllm:num_requests_running",),
        sglang=("sglang:num_running_reqs",),
        llamacpp=("llamacpp:requests_processing",),
        tgi=("tgi_batch_current_size",),
    ),
    Quantity(
        "waiting",
        "gauge",
        vllm=("vllm:num_requests_waiting",),
        sglang=("sglang:num_queue_reqs",),
        llamacpp=("llamacpp:requests_deferred",),
        tgi=("tgi_queue_size",),
    ),
    Quantity("preemptions", "counter", vllm=("vllm:num_preemptions_total",)),
    # Prefix cache, in tokens: hits among the prompt tokens looked up. SGLang counts the
    # cached tokens among all prompt tokens.
    Quantity(
        "prefix_cache_hits",
        "counter",
        vllm=("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
        sglang=("sglang:cached_tokens_total",),
    ),
    Quantity(
        "prefix_cache_queries",
        "counter",
        vllm=("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
        sglang=("sglang:prompt_tokens_total",),
    ),
    Quantity(
        "spec_accepted_tokens",
        "counter",
        vllm=("vllm:spec_decode_num_accepted_tokens_total",),
    ),
    Quantity(
        "spec_draft_tokens",
        "counter",
        vllm=("vllm:spec_decode_num_draft_tokens_total",),
    ),
    # SGLang exports its acceptance only as a gauge (no counters to take a delta of).
    Quantity("spec_accept_rate", "gauge", sglang=("sglang:spec_accept_rate",)),
    # Requests the server finished (vLLM: successful ones, every finish reason).
    Quantity(
        "requests",
        "counter",
        vllm=("vllm:request_success_total",),
        sglang=("sglang:num_requests_total",),
        tgi=("tgi_request_count_total",),
    ),
    Quantity(
        "ttft_s",
        "histogram",
        vllm=("vllm:time_to_first_token_seconds",),
        sglang=("sglang:time_to_first_token_seconds",),
    ),
    # Per request (e2e - ttft) / (n - 1) where the server has it; older vLLM and SGLang
    # observe each inter-token gap, whose mean is the same over tokens, not requests.
    Quantity(
        "tpot_s",
        "histogram",
        vllm=(
            "vllm:request_time_per_output_token_seconds",
            "vllm:time_per_output_token_seconds",
        ),
        sglang=("sglang:time_per_output_token_seconds",),
        tgi=("tgi_request_mean_time_per_token_duration",),
    ),
)

QUANTITY = {q.name: q for q in QUANTITIES}


def server_kind(sample_names: set[str]) -> str | None:
    """Which server's names the scraped text holds ("vllm", "sglang", "llamacpp", "tgi")."""
    for prefix, kind in (("vllm:", "vllm"), ("sglang:", "sglang"), ("llamacpp:", "llamacpp")):
        if any(name.startswith(prefix) for name in sample_names):
            return kind
    return "tgi" if any(name.startswith("tgi_") for name in sample_names) else None
