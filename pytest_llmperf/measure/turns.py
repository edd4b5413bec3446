"""A/B in turns: two sides measured in one test, their rounds taking turns (`llmperf.compare`).

Order. After each side's warm-up, pair i runs one turn of each side, in the order ABBA BAAB
ABBA BAAB ... (groups of two pairs; `turn_order`): a drift that is linear in time over a group
lands equally on both sides, and each side goes first in half of the pairs. A turn is one
round of the workload when both engines stay loaded ("interleaved"), or a block of rounds
after the side's engine was loaded and warmed up again when they cannot ("blocks": the record
says which).

Metrics of an A/B test (one definition each; units and directions in `metrics.SPECS`):
    a.<metric>, b.<metric>
                  each side's metrics over its measured rounds, as `measure.metrics` defines
                  them (`a.output_tok_per_s`, `b.ttft_ms.p90`), with per-round samples.
    ratio.<metric>
                  B/A of a metric: the geometric mean of the pairs' ratios, each pair's
                  ratio taken between the metric over B's turn and over A's turn, with the
                  paired interval of `measure.stats.paired_ratio`. Its direction is the
                  metric's: `ratio.ttft_ms.p90` below 1 is better, `ratio.output_tok_per_s`
                  above 1. Counts, flags and metrics judged as values (failure_rate) have no
                  ratio.
    speedup       how many times faster B is than A: B/A of a throughput, the one
                  definition for every test that reports it. Here (`llmperf.compare`):
                  ratio.output_tok_per_s, paired by turn, with an interval
                  (`speedup: {min: 1.1}`: B faster by at least 10%, with confidence). Own code
                  timed in turns (`llmperf.time_turns`, then `llmperf.record`): A's seconds
                  over B's, round by round, also paired. A series measured point after point
                  against a base measured first (`suite.scaling.Speedups`, `ScalingSeries`:
                  seeds 001 and 003): each point's throughput (output_tok_per_s, or the rate
                  the series names, e.g. seed 001's requests_per_s) over the base's, not
                  interleaved: drift between the points lands in it, and it has no interval
                  (judged as a value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pytest_llmperf.measure.metrics import AggregateMetrics, RequestRecord, flatten, spec_for
from pytest_llmperf.measure.samples import Number, Samples, collect
from pytest_llmperf.measure.stats import pair_ratios

Side = Literal["a", "b"]
#: How the turns ran: both engines loaded (a turn is a round), or swapped (a turn is a block).
Mode = Literal["interleaved", "blocks"]
SIDES: tuple[Side, Side] = ("a", "b")
RATIO = "ratio"
#: The ratio that `speedup` names.
SPEEDUP_OF = "output_tok_per_s"


def turn_order(pairs: int) -> list[tuple[Side, Side]]:
    """The order of each pair's two turns: ABBA BAAB ABBA ... as pairs (a, b), (b, a), ..."""
    order: list[tuple[Side, Side]] = []
    for i in range(pairs):
        a_first = (i % 2 == 0) == ((i // 2) % 2 == 0)
        order.append(("a", "b") if a_first else ("b", "a"))
    return order


def order_text(pairs: int) -> str:
    """`ABBABAAB` for four pairs: what the record keeps."""
    return "".join(x + y for x, y in turn_order(pairs)).upper()


def turn_metrics(records: Sequence[RequestRecord], durations: Sequence[float]) -> dict[str, Any]:
    """One turn's flat harness metrics (over its rounds at once)."""
    return flatten(AggregateMetrics.from_records(records, durations).as_dict())


def has_ratio(name: str) -> bool:
    """A metric whose B/A is a metric: positive ratio-scale ones, not counts, flags or those
    judged as values."""
    spec = spec_for(f"{RATIO}.{name}")
    return spec is not None


def ratio_samples(
    a_turns: Sequence[Mapping[str, Number | None]], b_turns: Sequence[Mapping[str, Number | None]]
) -> Samples:
    """Each pair's B/A of every metric that has a ratio (`ratio.<metric>`), and `speedup`;
    null for a pair where either side had no positive value."""
    per_pair: list[dict[str, Number | None]] = []
    for a, b in zip(a_turns, b_turns, strict=True):
        pair: dict[str, Number | None] = {}
        for name, value in a.items():
            other = b.get(name)
            if not has_ratio(name) or not _positive(value) or not _positive(other):
                continue
            assert value is not None and other is not None
            pair[f"{RATIO}.{name}"] = pair_ratios([value], [other])[0]
        pair["speedup"] = pair.get(f"{RATIO}.{SPEEDUP_OF}")
        per_pair.append(pair)
    return collect(per_pair)


def geometric_means(samples: Samples) -> dict[str, float | None]:
    """Each ratio's headline: the geometric mean of its pairs (the paired interval's centre)."""
    means: dict[str, float | None] = {}
    for name, values in samples.items():
        logs = [math.log(v) for v in values if v is not None and v > 0]
        means[name] = math.exp(math.fsum(logs) / len(logs)) if logs else None
    return means


def nest(flat: Mapping[str, Number | None], prefix: str) -> dict[str, Any]:
    """Flat metrics (`ttft_ms.p90`) nested as records keep them, names prefixed
    (`{"a.ttft_ms": {"p90": ...}}`)."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        base, dot, stat = name.partition(".")
        if dot:
            nested.setdefault(f"{prefix}.{base}", {})[stat] = value
        else:
            nested[f"{prefix}.{base}"] = value
    return nested


def prefixed(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}.{name}": value for name, value in values.items()}


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
