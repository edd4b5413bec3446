"""Model bandwidth utilisation (MBU): how much of the card's memory bandwidth decoding uses.

Decoding a token reads every weight once per step (shared by the batch) and, for each
sequence in the batch, its keys and values so far. Per test, from the measured records:

    steps_per_s     = 1000 / tpot_ms.p50         one decode step per output token of a
                                                 request (TPOT is the step time it sees)
    seqs_per_step   = output_tok_per_s / steps_per_s    the batch a step served, on average
    context         = mean over requests of prompt_tokens + output_tokens / 2
    bytes_per_step  = weight_bytes + seqs_per_step * context * kv_bytes_per_token
    mbu             = bytes_per_step * steps_per_s / peak_bytes_per_s

`weight_bytes` and `kv_bytes_per_token` are the engine's (`hf` and `hf-fast` report them);
`peak_bytes_per_s` is the card's: NVML's maximum memory clock x bus width x 2 (double
data rate) / 8, summed over the test's GPUs (an H100 SXM's HBM3: 2,619 MHz x 5,120 bits
-> 3.35 TB/s). `mbu` is null without a GPU, without NVML, or for an engine that does not
report its bytes. It is an estimate of the decode phase: output_tok_per_s includes the
prefill's time, so a long prompt lowers it; compare runs of the same workload.

`weights_bound_tok_per_s` = peak_bytes_per_s / weight_bytes is the batch-1 ceiling: one
step cannot be faster than reading the weights once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.measure.metrics import AggregateMetrics, RequestRecord


def peak_bandwidth(physical: Sequence[int]) -> float | None:
    """The GPUs' summed peak memory bandwidth in bytes/s, from NVML; None without it."""
    if not physical:
        return None
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]

        pynvml.nvmlInit()
        total = 0.0
        for index in physical:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
            bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
            total += clock_mhz * 1e6 * bus_bits * 2 / 8
        return total or None
    except Exception:
        return None


def bandwidth_metrics(
    metrics: AggregateMetrics,
    records: Sequence[RequestRecord],
    details: Mapping[str, Any],
    peak_bytes_per_s: float | None,
) -> dict[str, float | None]:
    """`mbu` and `weights_bound_tok_per_s` (see the module docstring)."""
    weights = details.get("weight_bytes")
    kv_per_token = details.get("kv_bytes_per_token")
    tpot = metrics.tpot_ms.p50 if metrics.tpot_ms.count else None
    ok = [r for r in records if r.error is None]
    if not (peak_bytes_per_s and weights and kv_per_token and tpot and ok):
        return {"mbu": None, "weights_bound_tok_per_s": None}
    steps_per_s = 1000.0 / tpot
    seqs_per_step = metrics.output_tok_per_s / steps_per_s
    context = sum((r.prompt_tokens or 0) + r.output_tokens / 2 for r in ok) / len(ok)
    bytes_per_step = weights + seqs_per_step * context * kv_per_token
    return {
        "mbu": bytes_per_step * steps_per_s / peak_bytes_per_s,
        "weights_bound_tok_per_s": peak_bytes_per_s / weights,
    }
