"""Scaling over parallel workers: speedup and efficiency, and a batching path that stops
scaling caught by the efficiency bound."""

from __future__ import annotations

import pytest

from pytest_llmperf.measure.metrics import AggregateMetrics
from pytest_llmperf.suite.scaling import ScalingSeries, Speedups
from tests.suite_run import run_suite


def aggregate(tok_per_s: float) -> AggregateMetrics:
    metrics = AggregateMetrics.from_records([], [1.0])
    return AggregateMetrics(**{**metrics.__dict__, "output_tok_per_s": tok_per_s})


def test_speedup_and_efficiency_are_relative_to_one_worker() -> None:
    series = ScalingSeries()
    assert series.metrics(1, aggregate(100.0)) == {"speedup": 1.0, "efficiency": 1.0}
    assert series.metrics(2, aggregate(180.0)) == pytest.approx({"speedup": 1.8, "efficiency": 0.9})
    assert series.metrics(8, aggregate(400.0)) == pytest.approx({"speedup": 4.0, "efficiency": 0.5})
    assert ScalingSeries().metrics(2, aggregate(1.0)) == {"speedup": None, "efficiency": None}


#: The hf engine made to run one request at a time whatever its batch setting: n workers
#: then take n times as long, and efficiency falls to about 1/n.
SERIAL_BATCHES = """
from pytest_llmperf.engines.hf.engine import HFEngine

_start = HFEngine.start

def start(self):
    info = _start(self)
    self._max_num_seqs = 1
    return info

HFEngine.start = start
"""


def test_the_scaling_suite_reports_efficiency_and_catches_a_serial_engine(tmp_path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "serial").mkdir()
    good = run_suite(tmp_path / "good", "-m", "smoke", target="suites/test_scaling.py")
    assert good.out.returncode == 0, good.output
    by_label = {t["threshold_key"].split("@")[1]: t for t in good.summary()["tests"]}
    assert sorted(by_label, key=len) == [
        "workers1",
        "workers2",
        "workers4",
        "workers8",
        "workers16",
    ]
    for label in ("workers2", "workers4", "workers8", "workers16"):
        checked = {v["metric"] for v in by_label[label]["thresholds"]["checked"]}
        assert "efficiency" in checked and by_label[label]["metrics"]["efficiency"] > 0.3
    assert by_label["workers1"]["metrics"]["efficiency"] == 1.0
    serial = run_suite(
        tmp_path / "serial", "-m", "smoke", target="suites/test_scaling.py", conftest=SERIAL_BATCHES
    )
    assert serial.out.returncode == 1, serial.output
    # One at a time, n workers are 1/n as efficient: from 4 workers on (0.25) below the
    # bound of 0.3, whatever the timings' own bounds say.
    missed = serial.out.stdout.split("thresholds missed for suites/test_scaling.py::", 1)
    assert len(missed) == 2, serial.output
    assert missed[1].startswith("test_parallel_workers@workers"), serial.output
    assert "efficiency" in missed[1].split("thresholds from", 1)[0]


def test_speedups_are_over_the_base_row_on_the_named_rate() -> None:
    rows = Speedups(rate="requests_per_s")
    base = AggregateMetrics(**{**aggregate(1.0).__dict__, "requests_per_s": 50.0})
    faster = AggregateMetrics(**{**aggregate(1.0).__dict__, "requests_per_s": 125.0})
    assert Speedups().metrics(faster) == {"speedup": None}  # no base measured yet
    assert rows.metrics(base, is_base=True) == {"speedup": 1.0}
    assert rows.metrics(faster) == {"speedup": 2.5}
