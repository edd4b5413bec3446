"""Samples: every per-test metric measured once per round, so that a test knows its noise.

A test's headline metrics are computed over all its measured rounds at once
(`AggregateMetrics.from_records`: total tokens over total time, percentiles over every
request). Its samples are the same metrics computed over each measured round alone: round
k's `output_tok_per_s` is its output tokens over its wall time, its `ttft_ms.p90` the p90 of
its requests' TTFTs. The spread of a metric's samples is what its interval and verdicts rest
on (`measure.stats`); the headline stays the figure the test reports, with the interval of its
samples beside it (`6,193 tok/s ±2.1%`).

A metric a round did not produce (no successful request, a percentile of no values) is null
for that round; metrics computed only over the whole test (telemetry over the measured
rounds, metrics derived from other metrics) have no samples and are judged as single values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pytest_llmperf.measure.metrics import AggregateMetrics, RequestRecord, flatten

Number = float | int
#: metric -> one value per measured round (None where the round had none).
Samples = dict[str, tuple[Number | None, ...]]


def round_records(records: Sequence[RequestRecord], rounds: int) -> list[list[RequestRecord]]:
    """The measured rounds' records apart: `RequestRecord.round` numbers them from 0."""
    split: list[list[RequestRecord]] = [[] for _ in range(rounds)]
    for record in records:
        if 0 <= record.round < rounds:
            split[record.round].append(record)
    return split


def harness_rounds(
    records: Sequence[RequestRecord], durations: Sequence[float]
) -> list[dict[str, Number | None]]:
    """Each measured round's harness metrics, flat (`ttft_ms.p90`), as the whole test's are."""
    split = round_records(records, len(durations))
    return [
        flatten(AggregateMetrics.from_records(part, [seconds]).as_dict())
        for part, seconds in zip(split, durations, strict=True)
    ]


def collect(per_round: Sequence[Mapping[str, Number | None]]) -> Samples:
    """Per-round flat metrics -> metric -> the rounds' values; only finite numbers are
    kept (flags and NaN become null), and a metric no round measured is left out."""
    names: dict[str, None] = {}
    for flat in per_round:
        names.update(dict.fromkeys(flat))

    def value(flat: Mapping[str, Number | None], name: str) -> Number | None:
        v = flat.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return v

    samples: Samples = {}
    for name in names:
        values = tuple(value(flat, name) for flat in per_round)
        if any(v is not None for v in values):
            samples[name] = values
    return samples
