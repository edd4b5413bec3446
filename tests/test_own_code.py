"""Your own code under the plugin: `llmperf.time`, `time_turns`, `record` through the same
records, verdicts, summary, exports and `llmperf compare` as engine measurements, and the
fixtures `llmperf_model` and `llmperf_engine`, as a user's test file uses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.cli import main
from tests.conftest import only_run, read_summary

CONFTEST = """
from pytest_llmperf.measure.metrics import MetricSpec

def pytest_llmperf_metrics(config):
    return [MetricSpec("jobs_per_s", "jobs/s", "higher"), MetricSpec("queue_s", "s", "lower")]
"""

TIMED = """
import asyncio, time
import pytest

def test_sleep(llmperf):
    timing = llmperf.time(time.sleep, 0.01, rounds=4, count={"jobs": 2})
    assert timing.rounds == 4 and timing.result is None
    assert 0.01 <= timing.metrics["call_s"] < 0.5
    assert timing.metrics["jobs_per_s"] == pytest.approx(2 / timing.metrics["call_s"])

def test_async_with_setup(llmperf):
    seen = []
    def setup():
        seen.append("setup")
        return (0.005,), {"result": len(seen)}
    async def job(delay, result):
        await asyncio.sleep(delay)
        return result
    timing = llmperf.time(job, setup=setup, rounds=3, warmup_rounds=1, label="async")
    assert seen == ["setup"] * 4 and timing.result == 4
    assert timing.metrics["call_s"] >= 0.005

def test_turns_and_record(llmperf):
    order = []
    turns = llmperf.time_turns(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")},
        rounds=4, warmup_rounds=0,
    )
    assert "".join(order) == "abbaabba"
    speedup = [b / a for a, b in zip(turns["a"].samples["call_s"], turns["b"].samples["call_s"])]
    recorded = llmperf.record({"queue_s": 0.5}, samples={"speedup": speedup}, label="ratio")
    assert recorded.metrics["speedup"] == pytest.approx(sum(speedup) / 4)
"""


@pytest.fixture
def own(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_timed=TIMED)
    return pytester


def test_timed_code_is_recorded_summarised_and_exported(own: pytest.Pytester) -> None:
    result = own.runpytest()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*llmperf summary*",
            "your code*metrics*thresholds*",
            "test_timed.py::test_sleep *call_s 0.0* ±*; jobs_per_s * ±*none*",
            "test_timed.py::test_async_with_setup@async *call_s*",
            "test_timed.py::test_turns_and_record@a *call_s*",
            "test_timed.py::test_turns_and_record@ratio *queue_s 0.5; speedup*",
        ]
    )
    tests = {t["threshold_key"]: t for t in read_summary(own)["tests"]}
    sleep = tests["test_timed.py::test_sleep"]
    assert sleep["engine"] == "own" and sleep["evidence"]["passed"]
    assert len(sleep["samples"]["call_s"]) == 4 and len(sleep["samples"]["jobs_per_s"]) == 4
    assert sleep["declared_metrics"] == {
        "jobs_per_s": {"unit": "jobs/s", "better": "higher", "kind": "scalar"}
    }
    assert tests["test_timed.py::test_turns_and_record@ratio"]["samples"]["speedup"]
    exported = json.loads(
        (only_run(own) / "github-benchmark" / "bigger_is_better.json").read_text()
    )
    jobs = [e for e in exported if e["name"] == "test_timed.py::test_sleep jobs_per_s"]
    assert jobs and jobs[0]["unit"] == "jobs/s"


def test_a_bound_on_timed_code_fails_the_test_and_compare_judges_it(
    own: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    own.runpytest("-k", "sleep").assert_outcomes(passed=1)
    base = only_run(own)
    own.makefile(
        ".yaml",
        **{
            "thresholds/cpu/own": """
            schema: 1
            tests:
              "test_timed.py::test_sleep":
                call_s: {max: 0.001}
                jobs_per_s: {min: 1}
            """
        },
    )
    tolerance = "--llmperf-tolerance=jobs_per_s:10%"  # declared metrics have no default
    result = own.runpytest("-k", "sleep", f"--llmperf-compare={base}", tolerance)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*thresholds missed for test_timed.py::test_sleep*", "*call_s*"])
    runs = sorted(p for p in (own.path / "results").iterdir() if p != base)
    record = _read(runs[-1] / "summary.json")["tests"][0]
    verdicts = {c["metric"]: c["outcome"] for c in record["thresholds"]["checked"]}
    assert verdicts == {"call_s": "missed", "jobs_per_s": "met"}
    assert {c["metric"] for c in record["baseline"]["judged"]} >= {"call_s", "jobs_per_s"}
    # Another process (the CLI) knows the declared metric from the run's records alone.
    from pytest_llmperf.measure.declared import declare_metrics

    declare_metrics((), "test", replace=True)
    assert main(["compare", str(base), str(runs[-1])]) in (0, 1)
    out = capsys.readouterr().out
    assert "jobs_per_s" in out and "call_s" in out


def test_auto_rounds_go_through_the_gate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_auto="""
        def test_auto(llmperf):
            llmperf.time(sum, range(1000), rounds="auto", warmup_rounds=0)
        """
    )
    pytester.makefile(
        ".yaml",
        **{
            "thresholds/cpu/own": 'schema: 1\ntests:\n  "test_auto.py::test_auto":\n'
            "    call_s: {max: 10}\n"
        },
    )
    pytester.runpytest().assert_outcomes(passed=1)
    record = read_summary(pytester)["tests"][0]
    assert record["stop"]["reason"] == "decided" and record["stop"]["rounds"] == 3


def test_failures_of_timed_code_are_the_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        from pytest_llmperf.measure.metrics import MetricSpec

        def boom():
            raise ValueError("no GPU memory for the batch")

        def test_raises(llmperf):
            llmperf.time(boom)

        def test_unknown_count(llmperf):
            llmperf.time(len, "abc", count={"widgets": 3})

        def test_no_rounds(llmperf):
            llmperf.record(samples={"speedup": []})

        def test_bad_rounds(llmperf):
            llmperf.time(len, "abc", rounds=0)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "*ValueError: no GPU memory for the batch*",
            "*count: counted item 'widgets' gives unknown metric 'widgets_per_s'*declare it*",
            "*no evidence for test_bad.py::test_no_rounds: 0 rounds measured*",
            "*time(): rounds=0: must be at least 1*",
        ]
    )


def test_a_declared_metric_named_like_a_built_in_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        from pytest_llmperf.measure.metrics import MetricSpec

        def pytest_llmperf_metrics(config):
            return [MetricSpec("ttft_ms", "ms", "lower")]
        """
    )
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*conftest.py: pytest_llmperf_metrics: metric 'ttft_ms' is a built-in metric*"]
    )


def test_model_and_engine_fixtures_in_a_users_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixtures="""
        from pytest_llmperf import Config, SyntheticWorkload

        SMALL = Config.make("small", {"max_num_seqs": 2})

        def test_model(llmperf_model):
            assert (llmperf_model.path / "config.json").is_file()
            tokenizer = llmperf_model.tokenizer()
            assert tokenizer("hello")["input_ids"]

        def test_engine_is_shared(llmperf_engine, llmperf):
            engine = llmperf_engine(SMALL)
            assert engine.tokenizer.encode("hello")
            llmperf.measure(SMALL, SyntheticWorkload(num_requests=1, input_tokens=4,
                                                     output_tokens=2), rounds=1)
            assert llmperf_engine(SMALL) is engine
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)
    record = read_summary(pytester)["tests"][0]
    assert record["engine_load_s"] is None  # started by llmperf_engine, reused by measure


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_fixtures_under_xdist_too(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makepyfile(
        test_xdist="""
        import pytest

        def test_model(llmperf_model):
            assert llmperf_model.path.is_dir()

        @pytest.mark.gpu(allow_cpu=True)
        def test_gpus(llmperf_gpus, llmperf):
            llmperf.time(sum, range(100), rounds=2, warmup_rounds=0)

        def test_gpus_skip_on_cpu(llmperf_gpus):
            pass
        """
    )
    result = pytester.runpytest(*workers, "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*llmperf_gpus: this run has no GPUs*allow_cpu=True*"])
    assert len(read_summary(pytester)["tests"]) == 1


def test_a_child_process_left_alive_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_leak="""
        import subprocess, sys
        import pytest

        KEPT = []

        @pytest.mark.gpu(allow_cpu=True)
        def test_leaves_a_child(llmperf_gpus):
            KEPT.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))

        @pytest.mark.gpu(allow_cpu=True)
        def test_waits_for_its_child(llmperf_gpus):
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def test_the_child_was_ended():
            assert KEPT[0].wait(timeout=10) is not None
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_child*",
            "*test_leak.py::test_leaves_a_child left behind:*",
            "*process left alive: pid * (*python* -c import time; time.sleep(60)); ended*",
        ]
    )


def _read(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))
