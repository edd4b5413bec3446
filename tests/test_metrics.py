"""Metric definitions: percentiles, TPOT, distributions and per-test aggregates."""

from __future__ import annotations

import pytest

from pytest_llmperf.measure.metrics import (
    AggregateMetrics,
    Distribution,
    RequestRecord,
    flatten,
    metric_names,
    percentile,
    spec_for,
    tpot_ms,
)


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_distribution_of_values_and_of_nothing() -> None:
    d = Distribution.of([4.0, 1.0, 3.0, 2.0])
    assert (d.count, d.mean, d.p50, d.min, d.max) == (4, 2.5, 2.5, 1.0, 4.0)
    empty = Distribution.of([])
    assert empty.count == 0 and empty.p90 is None


def test_tpot_excludes_the_first_token() -> None:
    assert tpot_ms(e2e_ms=110.0, ttft=10.0, output_tokens=11) == 10.0
    assert tpot_ms(e2e_ms=10.0, ttft=10.0, output_tokens=1) is None


def record(
    cid: str, out: int, ttft: float, e2e: float, finish: str = "length", error: str | None = None
) -> RequestRecord:
    return RequestRecord(
        custom_id=cid,
        round=0,
        prompt_tokens=10,
        output_tokens=out,
        finish_reason=finish,
        ttft_ms=ttft,
        e2e_ms=e2e,
        tpot_ms=tpot_ms(e2e, ttft, out),
        queue_ms=None,
        itl_ms=(1.0,) * max(out - 1, 0),
        error=error,
    )


def test_per_test_aggregates() -> None:
    records = [
        record("a", 10, 5.0, 50.0),
        record("b", 10, 15.0, 60.0, finish="stop"),
        record("c", 0, 0.0, 0.0, finish="error", error="boom"),
    ]
    m = AggregateMetrics.from_records(records, round_durations_s=[0.5, 0.5])
    assert m.requests == 3 and m.failures == 1
    assert m.failure_rate == pytest.approx(1 / 3)
    assert m.output_tok_per_s == 20.0  # 20 tokens over 1 s; failed requests count nothing
    assert m.total_tok_per_s == 40.0
    assert m.requests_per_s == 2.0
    assert m.length_stop_fraction == 0.5
    assert m.ttft_ms.count == 2 and m.ttft_ms.p50 == 10.0
    assert m.itl_ms.count == 18
    flat = flatten(m.as_dict())
    assert flat["ttft_ms.p90"] == m.ttft_ms.p90
    assert flat["output_tok_per_s"] == 20.0


def test_metric_names_and_specs() -> None:
    names = metric_names()
    assert "ttft_ms.p90" in names and "output_tok_per_s" in names and "ttft_ms" not in names
    spec = spec_for("ttft_ms.p99")
    assert spec is not None and spec.better == "lower"
    assert spec_for("output_tok_per_s").better == "higher"  # type: ignore[union-attr]
    assert spec_for("ttft_ms") is None and spec_for("output_tok_per_s.p50") is None
