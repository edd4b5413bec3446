"""Your own code as an A/B test (`llmperf.compare_functions`): one record with each side's
metrics, the ratios with their paired intervals and `speedup`, judged by `own.yaml` and
bounded by `--llmperf-update-thresholds`."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from pytest_llmperf.results.runs import open_run

KEY = "test_own_ab.py::test_ab"
SOURCE = """
import time

def slow():
    time.sleep(0.04)

def fast():
    time.sleep(0.01)

def test_ab(llmperf):
    result = llmperf.compare_functions(slow, fast, rounds=4, count={"questions": 2})
    print("SPEEDUP", result.speedup.centre, result.order, result.b.metrics["call_s"])
"""


def bound(pytester: pytest.Pytester, text: str) -> None:
    folder = pytester.path / "thresholds" / "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "own.yaml").write_text(f'schema: 1\ntests:\n  "{KEY}":\n    {text}\n')


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_own_ab=SOURCE)
    return pytester.runpytest("-p", "no:randomly", "-s", *args)


def test_two_functions_are_one_a_b_record_judged_on_its_speedup(
    pytester: pytest.Pytester,
) -> None:
    bound(pytester, "speedup: {min: 1.5}")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*SPEEDUP * ABBAABBA *", f"A/B {KEY}: interleaved, 4 pairs (ABBAABBA): speedup *x [[]*]"]
    )
    (test,) = open_run("latest", pytester.path / "results").tests
    record = json.loads(json.dumps(test.as_record()))
    assert record["engine"] == "own" and record["threshold_key"] == KEY
    ab = record["ab"]
    assert (ab["mode"], ab["order"], ab["pairs"]) == ("interleaved", "ABBAABBA", 4)
    assert ab["a"]["given"].endswith("slow") and ab["b"]["given"].endswith("fast")
    samples = record["samples"]
    assert len(samples["a.call_s"]) == len(samples["b.call_s"]) == len(samples["speedup"]) == 4
    # speedup is A's seconds over B's, pair by pair; its headline their geometric mean.
    pairs = [a / b for a, b in zip(samples["a.call_s"], samples["b.call_s"], strict=True)]
    assert samples["speedup"] == pytest.approx(pairs)
    assert all(s > 1.5 for s in pairs), pairs  # 40 ms against 10 ms a call
    flat = record["metrics_flat"]
    assert flat["speedup"] == pytest.approx(math.exp(sum(map(math.log, pairs)) / 4))
    assert flat["ratio.call_s"] == pytest.approx(1 / flat["speedup"])
    assert flat["ratio.questions_per_s"] == pytest.approx(flat["speedup"])
    assert flat["a.questions_per_s"] < flat["b.questions_per_s"]
    (checked,) = record["thresholds"]["checked"]
    assert (checked["metric"], checked["how"], checked["outcome"]) == ("speedup", "samples", "met")


def test_a_speedup_bound_b_misses_fails_and_an_update_bounds_the_speedup(
    pytester: pytest.Pytester,
) -> None:
    bound(pytester, "speedup: {min: 20}")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*thresholds missed for {KEY}*", "*speedup*MISS*"])
    # An entry without bounds gets the A/B test's headline: its speedup, from the pairs.
    (pytester.path / "thresholds" / "cpu" / "own.yaml").unlink()
    run(pytester, "--llmperf-update-thresholds").assert_outcomes(passed=1)
    written = yaml.safe_load((pytester.path / "thresholds" / "cpu" / "own.yaml").read_text())
    entry = written["tests"][KEY]
    assert list(entry) == ["speedup"] and entry["speedup"]["rounds"] == 4
    assert 1 < entry["speedup"]["min"] < 4


def test_bad_arguments_name_the_call(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        def test_bad(llmperf):
            llmperf.compare_functions(print, "fast")
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*compare_functions(): b='fast': must be a function*"])


def test_auto_rounds_measure_pairs_until_the_speedup_is_decided(pytester: pytest.Pytester) -> None:
    bound(pytester, "speedup: {min: 1.5}")
    pytester.makepyfile(test_own_ab=SOURCE.replace("rounds=4", 'rounds="auto"'))
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)
    (test,) = open_run("latest", pytester.path / "results").tests
    assert test.stop is not None and test.stop.reason == "decided"
    assert test.ab is not None and test.ab["pairs"] == test.stop.rounds >= 3
    assert len(test.samples_of("speedup")) == test.stop.rounds
