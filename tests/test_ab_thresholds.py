"""Bounds for A/B tests: `--llmperf-update-thresholds` and `llmperf calibrate` write an A/B
test's `speedup` (its headline, B/A of throughput) from its per-pair samples, on the real hf
engine with the tiny model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pytest_llmperf.cli import main
from pytest_llmperf.results.runs import open_run
from pytest_llmperf.thresholds.update import Observed

KEY = "test_hf_ab.py::test_batching"
SOURCE = """
from pytest_llmperf import Config, SyntheticWorkload

ONE, FOUR = Config.make("one", {"max_num_seqs": 1}), Config.make("four", {"max_num_seqs": 4})

def test_batching(llmperf):
    llmperf.compare(ONE, FOUR, SyntheticWorkload(num_requests=4, input_tokens=8, output_tokens=8),
                    rounds=3)
"""


def entry(path: Path) -> dict[str, dict[str, float]]:
    tests: dict[str, dict[str, dict[str, float]]] = yaml.safe_load(path.read_text())["tests"]
    return tests[KEY]


def test_update_and_calibrate_write_an_a_b_tests_speedup(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_hf_ab=SOURCE)
    args = ("-p", "no:randomly", "--engine", "hf")
    pytester.runpytest(*args, "--llmperf-update-thresholds").assert_outcomes(passed=1)
    (first,) = open_run("latest", pytester.path / "results").tests
    file = pytester.path / "thresholds" / "cpu" / "hf.yaml"
    # One bound, the headline's: not each side's metrics, not every ratio.
    bound = entry(file)
    assert list(bound) == ["speedup"]
    assert (bound["speedup"]["runs"], bound["speedup"]["rounds"]) == (1, 3)  # 3 pairs
    assert "max" not in bound["speedup"]
    measured = first.metric("speedup") or 0
    assert measured > 1.2  # four requests batched against one at a time
    assert 0 < bound["speedup"]["min"] < measured
    # Its samples are the pairs'; the same record without `ab` gets the usual defaults.
    assert Observed.of([first]).runs["speedup"] == [list(first.samples_of("speedup"))]
    assert Observed.of([replace(first, ab=None)]).defaults is None
    # The next run is judged on it (on its pairs), and meets it or cannot tell.
    pytester.runpytest(*args).assert_outcomes(passed=1)
    (second,) = open_run("latest", pytester.path / "results").tests
    (checked,) = second.thresholds.checked
    assert checked.metric == "speedup" and checked.how == "samples"
    assert checked.outcome in ("met", "inconclusive")
    # Calibrating over both runs writes it from their drift, in a file of its own.
    folder = pytester.path / "calibrated"
    results = str(pytester.path / "results")
    code = main(
        ["calibrate", "latest:2", "--results-dir", results, "--thresholds-dir", str(folder)]
    )
    assert code == 0 and f"{KEY} (2 runs)" in capsys.readouterr().out
    calibrated = entry(folder / "cpu" / "hf.yaml")
    assert list(calibrated) == ["speedup"] and calibrated["speedup"]["runs"] == 2
