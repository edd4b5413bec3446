"""Metric definitions: every number pytest-llmperf reports is defined here, once.

Clock: every timestamp is `time.perf_counter()` in the test process, taken when a
chunk of tokens reaches the harness (the engine syncs the device before yielding).
Times are relative to a request's *arrival*: the moment the harness hands it to
the engine. In a batch run every request of a round arrives when the round starts,
so queueing behind earlier batches counts, as it would for a user.

Per request (one `RequestRecord`):
    queue_ms       scheduled - arrival, where the engine reports when it scheduled
                   the request (null otherwise).
    ttft_ms        time to first token = first_token - arrival.
    e2e_ms         end-to-end latency = last_token - arrival (for a request that
                   produced no token: finish - arrival).
    tpot_ms        time per output token = (e2e_ms - ttft_ms) / (output_tokens - 1),
                   null when output_tokens < 2. This is the definition vLLM, SGLang
                   and MLPerf use: it excludes the first token, whose cost is the
                   prefill, so that TPOT measures decoding alone.
    itl_ms         inter-token latencies: the gaps between consecutive chunks of one
                   request; a chunk carrying k > 1 tokens contributes k gaps of
                   gap / k each, so that every output token after the first has one.
    prompt_tokens  prompt length in the engine's own tokens.
    output_tokens  output length in the engine's own tokens (never re-tokenised).
    finish_reason  "stop" (EOS or stop string), "length" (hit max_tokens) or "error".
    server_timings the server's own timings of the request when it reports them
                   (Ollama's native API: prompt_eval_ms, eval_ms, load_ms, total_ms,
                   prompt_eval_count, eval_count), beside ours, never instead of them.

Per test (one `AggregateMetrics`, over the measured rounds only; warm-up rounds are run
and discarded):
    requests            requests measured (all rounds).
    failures            requests that ended with an error.
    failure_rate        failures / requests.
    duration_s          sum of the measured rounds' wall times.
    output_tok_per_s    sum of output tokens / duration_s.
    total_tok_per_s     sum of (prompt + output) tokens / duration_s.
    requests_per_s      successful requests / duration_s.
    length_stop_fraction  share of successful requests whose finish_reason is
                   "length": the truncation rate of a workload with free lengths.
    server_prefill_ms_p50  median of the server's prompt_eval_ms (requests with
                   server timings only; absent otherwise).
    server_decode_tok_per_s  sum of the server's eval_count / sum of its eval_ms,
                   in tokens per second: the decode speed the server itself reports.
    ttft_ms, tpot_ms, itl_ms, e2e_ms, queue_ms
                        distributions (see `Distribution`) over successful requests.
    graph_build_s  seconds the engine spent building decode graphs (compile and CUDA
                   graph capture) during the test, warm-up included; not part of any
                   duration above when the warm-up round built them (hf on CUDA only).
    model_bytes    the size in bytes of the model's weights file (a GGUF file's size): the
                   memory column of a quantization table, passed by the test as an extra
                   metric (`suites/test_quantization.py`).

Metrics computed elsewhere are defined in that module's docstring: bandwidth utilisation (`mbu`,
`weights_bound_tok_per_s`) in `pytest_llmperf.measure.bandwidth`, prompt and generation speeds
(`pp_tok_per_s`, `tg_tok_per_s`) in `pytest_llmperf.measure.prefill_decode`, GPU telemetry in
`pytest_llmperf.hardware.telemetry`, the server's own metrics (`server_*`) in
`pytest_llmperf.measure.server.summary`, goodput and the load client's self-check in
`pytest_llmperf.suite.load`, accuracy in `pytest_llmperf.suite.accuracy`, scaling efficiency in
`pytest_llmperf.suite.scaling`, an A/B test's (`a.*`, `b.*`, `ratio.*`, `speedup`) in
`pytest_llmperf.measure.turns`, output coverage in `pytest_llmperf.suite.workload_stats`,
a conversation's per-turn TTFT (`first_turn_ttft_ms_p50`, `last_turn_ttft_ms_p50`) in
`pytest_llmperf.suite.conversation`, and the highest load under an SLO
(`max_rate_under_slo_req_per_s`) in `pytest_llmperf.suite.slo.search`.
`SPECS` (`pytest_llmperf.measure.specs`) lists every metric once, with its unit, direction,
kind and defining module; thresholds, `llmperf compare`, reports and exports read it:
nothing else defines one.

Distributions report count, mean, p50, p90, p95, p99, min and max. Percentiles use
linear interpolation between closest ranks (numpy's default), so p50 of [1, 2] is 1.5.
Thresholds address a distribution's statistic with a dot: `ttft_ms.p90`.

Samples and intervals: each measured round is one sample of every per-test metric above,
computed over that round alone (`pytest_llmperf.measure.samples`); the headline value is
computed over all rounds at once and shown with the 95% interval of the samples as a share
of it (`6,193 tok/s ±2.1%`). For a positive metric (throughput, latency) the interval is a t
interval on the logs of the samples, mapped back: a benchmark affords 3 to 10 rounds, timing
noise is multiplicative and skewed to the right, which logs make near-symmetric, and the t
quantile with n - 1 degrees of freedom pays for so few samples (a bootstrap's percentile
interval of 3 values covers the truth in 74% of trials at a stated 95%). A metric that can be
0 or negative gets a t interval on the values; a proportion over questions, a Wilson
interval; samples that do not vary, none; a ratio B/A of an A/B test (`speedup`), the
geometric mean of its pairs' ratios with a paired t interval on their logs. Verdicts on those
samples correct for the several metrics of a test by Holm's procedure and, for rounds until
decided, spend the error rate over the looks; `pytest_llmperf.measure.stats` says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# The table of metrics lives in `measure.specs`; these names stay importable from here, the
# path the README gives extenders (`pytest_llmperf.measure.metrics.MetricSpec`).
from pytest_llmperf.measure.specs import AB_PREFIXES as AB_PREFIXES
from pytest_llmperf.measure.specs import DECLARED as DECLARED
from pytest_llmperf.measure.specs import DISTRIBUTION_STATS as DISTRIBUTION_STATS
from pytest_llmperf.measure.specs import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from pytest_llmperf.measure.specs import EXACT as EXACT
from pytest_llmperf.measure.specs import SPECS as SPECS
from pytest_llmperf.measure.specs import Direction as Direction
from pytest_llmperf.measure.specs import Kind as Kind
from pytest_llmperf.measure.specs import MetricSpec as MetricSpec
from pytest_llmperf.measure.specs import installed_metric_specs as installed_metric_specs
from pytest_llmperf.measure.specs import metric_hint as metric_hint
from pytest_llmperf.measure.specs import metric_names as metric_names
from pytest_llmperf.measure.specs import metric_specs as metric_specs
from pytest_llmperf.measure.specs import spec_for as spec_for

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile of already sorted values (numpy's default)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(sorted_values[lo])
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


@dataclass(frozen=True)
class Distribution:
    """Summary of one latency over many samples. Empty when there are no samples."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        data = sorted(values)
        if not data:
            return cls(0, None, None, None, None, None, None, None)
        return cls(
            count=len(data),
            mean=math.fsum(data) / len(data),
            p50=percentile(data, 50),
            p90=percentile(data, 90),
            p95=percentile(data, 95),
            p99=percentile(data, 99),
            min=data[0],
            max=data[-1],
        )

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass(frozen=True)
class RequestRecord:
    """One measured request (see the module docstring for each field's definition)."""

    custom_id: str
    round: int
    prompt_tokens: int | None
    output_tokens: int
    finish_reason: str
    ttft_ms: float | None
    e2e_ms: float | None
    tpot_ms: float | None
    queue_ms: float | None
    itl_ms: tuple[float, ...] = ()
    error: str | None = None
    output_text: str | None = None
    timing_source: str = "harness"
    token_count_source: str = "engine"
    server_timings: Mapping[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["itl_ms"] = list(self.itl_ms)
        data["server_timings"] = dict(self.server_timings) if self.server_timings else None
        return data


def server_timing_metrics(records: Sequence[RequestRecord]) -> dict[str, float | None]:
    """`server_prefill_ms_p50` and `server_decode_tok_per_s`; empty without server timings."""
    timed = [r.server_timings for r in records if r.error is None and r.server_timings]
    if not timed:
        return {}
    prefill = sorted(t["prompt_eval_ms"] for t in timed if "prompt_eval_ms" in t)
    eval_ms = math.fsum(t.get("eval_ms", 0.0) for t in timed)
    eval_tokens = math.fsum(t.get("eval_count", 0.0) for t in timed)
    return {
        "server_prefill_ms_p50": percentile(prefill, 50) if prefill else None,
        "server_decode_tok_per_s": eval_tokens / eval_ms * 1000 if eval_ms > 0 else None,
    }


def tpot_ms(e2e_ms: float | None, ttft: float | None, output_tokens: int) -> float | None:
    """(e2e - ttft) / (n_out - 1); null below two output tokens."""
    if e2e_ms is None or ttft is None or output_tokens < 2:
        return None
    return (e2e_ms - ttft) / (output_tokens - 1)


@dataclass(frozen=True)
class AggregateMetrics:
    """Per-test aggregate over the measured rounds."""

    requests: int
    failures: int
    failure_rate: float | None
    duration_s: float
    output_tok_per_s: float
    total_tok_per_s: float
    requests_per_s: float
    length_stop_fraction: float | None
    ttft_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution
    e2e_ms: Distribution
    queue_ms: Distribution
    extra: Mapping[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_records(
        cls, records: Sequence[RequestRecord], round_durations_s: Sequence[float]
    ) -> AggregateMetrics:
        ok = [r for r in records if r.error is None]
        duration = math.fsum(round_durations_s)
        out_tokens = sum(r.output_tokens for r in ok)
        prompt_tokens = sum(r.prompt_tokens or 0 for r in ok)
        per_s = (lambda n: n / duration) if duration > 0 else (lambda n: 0.0)
        return cls(
            requests=len(records),
            failures=len(records) - len(ok),
            failure_rate=(len(records) - len(ok)) / len(records) if records else None,
            duration_s=duration,
            output_tok_per_s=per_s(out_tokens),
            total_tok_per_s=per_s(out_tokens + prompt_tokens),
            requests_per_s=per_s(len(ok)),
            length_stop_fraction=(
                sum(r.finish_reason == "length" for r in ok) / len(ok) if ok else None
            ),
            ttft_ms=Distribution.of(r.ttft_ms for r in ok if r.ttft_ms is not None),
            tpot_ms=Distribution.of(r.tpot_ms for r in ok if r.tpot_ms is not None),
            itl_ms=Distribution.of(gap for r in ok for gap in r.itl_ms),
            e2e_ms=Distribution.of(r.e2e_ms for r in ok if r.e2e_ms is not None),
            queue_ms=Distribution.of(r.queue_ms for r in ok if r.queue_ms is not None),
        )

    def with_extra(self, **values: float | None) -> AggregateMetrics:
        """A copy with more scalar metrics (accuracy, samples/s, ...)."""
        merged = {**self.extra, **values}
        return AggregateMetrics(**{**self.__dict__, "extra": merged})

    def as_dict(self) -> dict[str, Any]:
        """Nested form, as written to JSON: distributions as objects."""
        data: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if key == "extra":
                continue
            data[key] = value.as_dict() if isinstance(value, Distribution) else value
        data.update(self.extra)
        return data


def flatten(metrics: Mapping[str, Any]) -> dict[str, float | int | None]:
    """`{"ttft_ms": {"p90": 3.0}}` -> `{"ttft_ms.p90": 3.0}` (thresholds' addresses)."""
    flat: dict[str, float | int | None] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            for stat, number in value.items():
                flat[f"{key}.{stat}"] = number
        else:
            flat[key] = value
    return flat
