"""Metric definitions: percentiles, TPOT, distributions, per-test aggregates, and the one
table of metric specs (built in, or added by installed packages through an entry point)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.hardware import telemetry
from pytest_llmperf.measure.metrics import (
    SPECS,
    AggregateMetrics,
    Distribution,
    MetricSpec,
    RequestRecord,
    flatten,
    metric_names,
    percentile,
    spec_for,
    tpot_ms,
)
from pytest_llmperf.results.changes import compare_metrics
from pytest_llmperf.results.tolerances import parse_tolerances


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


# --- the metric table ------------------------------------------------------------------


def test_every_importer_sees_every_metric_spec() -> None:
    """`llmperf compare` imports neither the telemetry nor the bandwidth module, yet judges
    their metrics: the specs come from the one table, not from what was imported."""
    code = """if True:
        import json, sys
        import pytest_llmperf.cli, pytest_llmperf.results.compare
        from pytest_llmperf.measure.metrics import spec_for
        names = ["mbu", "energy_j", "peak_gpu_mem_bytes", "output_tok_per_j", "accuracy"]
        print(json.dumps({
            "specs": {n: spec_for(n) and [spec_for(n).better, spec_for(n).unit] for n in names},
            "imported": [m for m in ("pytest_llmperf.hardware.telemetry",
                                     "pytest_llmperf.measure.bandwidth") if m in sys.modules],
        }))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["imported"] == []
    assert seen["specs"] == {
        "mbu": ["higher", "ratio"],
        "energy_j": ["lower", "J"],
        "peak_gpu_mem_bytes": ["lower", "bytes"],
        "output_tok_per_j": ["higher", "tok/J"],
        "accuracy": ["higher", "ratio"],
    }


def test_the_table_has_kinds_and_one_entry_per_metric() -> None:
    names = [spec.name for spec in SPECS]
    assert len(names) == len(set(names))
    kinds = {spec.name: spec.kind for spec in SPECS}
    assert kinds["ttft_ms"] == "distribution" and kinds["requests"] == "count"
    assert kinds["client_bound"] == "flag" and kinds["energy_j"] == "scalar"
    count = spec_for("tpot_ms.count")
    assert count is not None and count.kind == "count" and count.better == "higher"
    # The telemetry module's own list of what it reports is exactly the table's.
    from_telemetry = [s.name for s in SPECS if s.defined_in == telemetry.__name__]
    assert from_telemetry == list(telemetry.NULL_TELEMETRY)


def _definition_lines(module: str) -> list[str]:
    """The docstring lines of `module` that begin, indented, with a name: where metrics are
    defined ("    ttft_ms        time to first token = ...")."""
    doc = importlib.import_module(module).__doc__ or ""
    return [line.strip() for line in doc.splitlines() if re.match(r"\s+\w", line)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_each_metric_is_defined_once_where_its_spec_says(spec: MetricSpec) -> None:
    assert spec.defined_in is not None
    doc = importlib.import_module(spec.defined_in).__doc__ or ""
    assert re.search(rf"\b{spec.name}\b", doc), f"{spec.name} not in {spec.defined_in}"
    # No other defining module writes a definition of it (an indented line starting with it).
    starts = re.compile(rf"{spec.name}\b(?!\.)")
    elsewhere = [
        module
        for module in {s.defined_in for s in SPECS} - {spec.defined_in}
        if module and any(starts.match(line) for line in _definition_lines(module))
    ]
    assert elsewhere == []


def test_third_party_metrics_come_from_an_entry_point(
    installed_metrics: Callable[[str], None],
) -> None:
    assert spec_for("rouge_l") is None
    installed_metrics(
        'SPECS = [MetricSpec("rouge_l", "ratio", "higher", defined_in="my_metrics"),'
        ' MetricSpec("judge_ms", "ms", "lower", "distribution")]'
    )
    rouge = spec_for("rouge_l")
    assert rouge is not None and rouge.better == "higher" and rouge.defined_in == "my_metrics"
    assert spec_for("judge_ms.p90") is not None and "judge_ms.p90" in metric_names()
    # Judged by compare like a built-in metric.
    tolerances = parse_tolerances(["rouge_l:-0.01"])
    (change,) = compare_metrics("t", {"rouge_l": 0.5}, {"rouge_l": 0.4}, tolerances)
    assert change.verdict == "regressed"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('SPECS = [MetricSpec("ttft_ms", "ms", "higher")]', "metric 'ttft_ms' is already defined"),
        ("SPECS = ['rouge_l']", "expected a MetricSpec, got 'rouge_l'"),
        ("SPECS = None", "expected a sequence of MetricSpec"),
        ("raise ImportError('no scorer here')", "cannot load it: no scorer here"),
    ],
)
def test_a_bad_metrics_entry_point_is_a_usage_error_naming_it(
    installed_metrics: Callable[[str], None], source: str, message: str
) -> None:
    installed_metrics(source)
    with pytest.raises(LLMPerfUsageError) as info:
        spec_for("output_tok_per_s")
    text = str(info.value)
    assert "entry point 'mine' (my_metrics:SPECS) of group 'pytest_llmperf.metrics'" in text
    assert message in text
