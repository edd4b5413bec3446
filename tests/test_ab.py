"""A/B in one test (`llmperf.compare`): the paired interval against scipy, the turn order,
the ratio metrics' specs, and the fixture end to end: on the instrument engine where a verdict
needs a scripted speed (tests/scripted_engine.py), and on the real hf engine with the tiny
model."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from scipy import stats

from pytest_llmperf.cli import main
from pytest_llmperf.measure.metrics import spec_for
from pytest_llmperf.measure.stats import paired_ratio
from pytest_llmperf.measure.turns import order_text, ratio_samples, turn_order
from pytest_llmperf.results.runs import open_run
from tests.instrument_server import InstrumentServer, Script
from tests.scripted_engine import install_instrument

# --- the paired interval -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([100.0, 104.0, 98.0], [120.0, 121.0, 119.0]),
        ([10.0, 11.0, 9.5, 10.2, 10.8], [9.0, 9.8, 8.9, 9.1, 9.9]),
        ([1.0, 2.0, 4.0, 8.0], [1.1, 2.3, 4.1, 8.9]),  # drift between pairs, steady ratio
    ],
)
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_paired_ratio_is_a_t_interval_on_log_ratios(
    a: list[float], b: list[float], confidence: float
) -> None:
    logs = [math.log(y / x) for x, y in zip(a, b, strict=True)]
    n = len(logs)
    mean = sum(logs) / n
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(logs))
    got = paired_ratio(a, b, confidence)
    assert (got.centre, got.low, got.high) == pytest.approx(
        (math.exp(mean), math.exp(low), math.exp(high)), rel=1e-9
    )
    assert got.n == n and got.method == "log-t"


def test_pairing_removes_the_drift_that_unpaired_samples_keep() -> None:
    # Both sides drift 2x over the run; B is 10% faster in every pair.
    a = [100.0, 140.0, 170.0, 200.0]
    b = [110.0, 154.0, 187.0, 220.0]
    paired = paired_ratio(a, b)
    assert paired.exact and paired.centre == pytest.approx(1.1)
    # Unpaired, the 10% would drown in the drift: Welch's test on the logs cannot tell.
    unpaired = stats.ttest_ind([math.log(v) for v in b], [math.log(v) for v in a])
    assert unpaired.pvalue > 0.5


def test_known_paired_values() -> None:
    # Logs of the ratios 1.1, 1.2, 1.0 by hand: mean 0.092544 (e^ = 1.09696), sd 0.091192,
    # se 0.052650, t(0.975, 2) = 4.302653, half-width 0.226534: e^-0.133990, e^0.319078.
    got = paired_ratio([1.0, 1.0, 1.0], [1.1, 1.2, 1.0])
    assert round(got.centre, 4) == 1.0970
    assert (round(got.low, 4), round(got.high, 4)) == (0.8746, 1.3759)


def test_pairs_need_both_sides() -> None:
    with pytest.raises(ValueError, match="pairs need both"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no pair"):
        paired_ratio([0.0], [1.0])


# --- turns and metric names ----------------------------------------------------------------


def test_turns_go_abba_baab() -> None:
    assert order_text(4) == "ABBABAAB"
    assert order_text(8) == "ABBABAAB" * 2
    assert turn_order(3) == [("a", "b"), ("b", "a"), ("b", "a")]
    # Each side goes first in half of every group of four pairs.
    assert sum(first == "a" for first, _ in turn_order(8)) == 4


def test_ratio_metrics_have_the_metrics_direction() -> None:
    speedup, ttft = spec_for("speedup"), spec_for("ratio.ttft_ms.p90")
    assert speedup is not None and speedup.better == "higher"
    assert speedup.defined_in == "pytest_llmperf.measure.turns"
    assert ttft is not None and ttft.better == "lower" and ttft.unit == "x"
    side = spec_for("b.output_tok_per_s")
    assert side is not None and side.unit == "tok/s"
    # Values judged exactly and counts have no ratio; nor does an unknown metric.
    for name in ("ratio.failure_rate", "ratio.requests", "ratio.ttft_ms.count", "ratio.ttft"):
        assert spec_for(name) is None


def test_ratio_samples_are_per_pair_and_speedup_is_throughputs() -> None:
    a = [{"output_tok_per_s": 100.0, "ttft_ms.p90": 10.0, "requests": 4, "failure_rate": 0.0}]
    b = [{"output_tok_per_s": 150.0, "ttft_ms.p90": 5.0, "requests": 4, "failure_rate": 0.0}]
    got = ratio_samples(a * 2, b * 2)
    assert got == {
        "ratio.output_tok_per_s": (1.5, 1.5),
        "ratio.ttft_ms.p90": (0.5, 0.5),
        "speedup": (1.5, 1.5),
    }


# --- end to end on the instrument ----------------------------------------------------------

TEST = """
from pytest_llmperf import Config, SyntheticWorkload

A = Config.make("full", {"speed": 1.0}, engine="scripted")
B = Config.make("B_NAME", {"speed": B_SPEED}, engine="scripted")

def test_ab(llmperf):
    result = llmperf.compare(
        A, B, SyntheticWorkload(num_requests=2, input_tokens=4, output_tokens=10),
        rounds=ROUNDS, warmup_rounds=1, SWAP
    )
    print("SPEEDUP", result.speedup.centre, result.mode, result.order)
"""
KEY = "test_ab.py::test_ab"


def run_ab(
    pytester: pytest.Pytester,
    *args: str,
    b_speed: float = 0.5,
    rounds: str = "4",
    swap: str = "swap=None",
) -> pytest.RunResult:
    source = TEST.replace("B_SPEED", str(b_speed)).replace("ROUNDS", rounds)
    source = source.replace("B_NAME", "slow" if b_speed != 1 else "twin").replace("SWAP", swap)
    pytester.makepyfile(test_ab=source)
    return pytester.runpytest("--engine", "scripted", "-p", "no:randomly", "-s", *args)


def bounds(pytester: pytest.Pytester, text: str) -> None:
    folder = pytester.path / "thresholds" / "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scripted.yaml").write_text(f'schema: 1\ntests:\n  "{KEY}":\n{text}')


def latest(pytester: pytest.Pytester) -> dict:  # type: ignore[type-arg]
    (test,) = open_run("latest", pytester.path / "results").tests
    return json.loads(json.dumps(test.as_record()))


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    install_instrument(pytester)
    # 2.5 ms a token: a sleep's own overhead (tens of microseconds) stays small beside it.
    monkeypatch.setenv("LLMPERF_RATE", "400")
    return pytester


def test_a_b_test_records_both_sides_and_the_paired_ratios(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    bounds(project, "    speedup: {min: 0.3}\n    ratio.e2e_ms.p50: {min: 1.5}\n")
    result = run_ab(project)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["A/B test_ab.py::test_ab: interleaved, 4 pairs (ABBABAAB): speedup 0.*x [[]0.*, 0.*]"]
    )
    record = latest(project)
    ab = record["ab"]
    assert (ab["mode"], ab["order"], ab["pairs"]) == ("interleaved", "ABBABAAB", 4)
    assert ab["a"]["config"] == "full" and ab["b"]["config"] == "slow"
    assert ab["b"]["engine_config"]["settings"] == {"speed": 0.5}
    assert ab["a"]["rounds"] == ab["b"]["rounds"] == 4
    samples = record["samples"]
    assert len(samples["a.output_tok_per_s"]) == len(samples["b.output_tok_per_s"]) == 4
    assert len(samples["speedup"]) == 4
    # B runs at half the rate: every pair says so, and the headline is their geometric mean.
    assert all(0.4 < s < 0.6 for s in samples["speedup"]), samples["speedup"]
    flat = record["metrics_flat"]
    assert flat["speedup"] == pytest.approx(
        math.exp(sum(math.log(s) for s in samples["speedup"]) / 4)
    )
    assert flat["b.output_tok_per_s"] < flat["a.output_tok_per_s"]
    checked = {c["metric"]: c for c in record["thresholds"]["checked"]}
    assert {m: c["outcome"] for m, c in checked.items()} == {
        "speedup": "met",
        "ratio.e2e_ms.p50": "met",
    }
    assert checked["speedup"]["how"] == "samples" and checked["speedup"]["low"] > 0.3
    # Every measured request is in the run's requests, with its side.
    requests = (project.path / "results").glob("*/requests.jsonl")
    sides = [json.loads(line)["side"] for line in next(requests).read_text().splitlines()]
    assert sides.count("a") == sides.count("b") == 8
    # The report's A/B view: both sides and each ratio with its interval.
    out = tmp_path / "report.html"
    (run,) = (project.path / "results").glob("2*")
    assert main(["report", str(run), "-o", str(out)]) == 0
    view = out.read_text().split('<h2 id="ab">A/B tests</h2>')[1].split("<h2")[0]
    assert "A: config &#x27;full&#x27; on scripted (speed=1.0), cpu" in view
    assert "B: config &#x27;slow&#x27; on scripted (speed=0.5), cpu" in view
    rows = re.findall(r"<tr><td>(.*?)</td>.*?<td class='num'>([^<]*)</td></tr>", view)
    ratios = dict(rows)
    assert re.fullmatch(r"0\.\d+x \[0\.\d+, 0\.\d+\]", ratios["output_tok_per_s"])
    assert re.fullmatch(r"(1\.9|2\.\d)\d*x \[.*\]", ratios["e2e_ms.p90"])


def test_compare_takes_runs_of_two_machines_and_says_so(
    project: pytest.Pytester, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_ab(project, rounds="2").assert_outcomes(passed=1)
    (run,) = (project.path / "results").glob("2*")
    other = tmp_path / run.name.replace("2026", "2027")
    shutil.copytree(run, other)
    summary = json.loads((other / "summary.json").read_text())
    summary["machine"].update(hostname="big", cpu="AMD EPYC 9654", cpu_count=192)
    (other / "summary.json").write_text(json.dumps(summary))
    assert main(["compare", str(run), str(other)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: the runs were made on different hardware (cpu: " in out
    assert " vs AMD EPYC 9654; cpus: " in out and " vs 192)" in out
    assert "test_ab.py::test_ab" in out  # compared all the same


def test_a_speedup_bound_b_misses_fails_the_test(project: pytest.Pytester) -> None:
    bounds(project, "    speedup: {min: 0.9}\n")
    result = run_ab(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*thresholds missed for test_ab.py::test_ab*", "*speedup*MISS*"])
    assert latest(project)["thresholds"]["checked"][0]["outcome"] == "missed"


def test_auto_rounds_stop_once_the_ratio_is_decided(project: pytest.Pytester) -> None:
    bounds(project, "    speedup: {max: 0.8}\n")
    run_ab(project, rounds='"auto"').assert_outcomes(passed=1)
    record = latest(project)
    assert record["stop"]["reason"] == "decided" and record["stop"]["rounds"] == 3
    assert record["ab"]["pairs"] == 3 and record["ab"]["order"] == "ABBABA"


def test_swapped_engines_run_blocks_and_say_so(project: pytest.Pytester) -> None:
    run_ab(project, b_speed=1.0, rounds="2", swap="swap=True, block_rounds=2").assert_outcomes(
        passed=1
    )
    ab = latest(project)["ab"]
    assert (ab["mode"], ab["order"], ab["turn_rounds"]) == ("blocks", "ABBA", 2)
    # ABBA: A loads, B loads and keeps its engine for its second turn, A loads again.
    assert len(ab["a"]["loads_s"]) == 2 and len(ab["b"]["loads_s"]) == 1
    assert ab["a"]["rounds"] == ab["b"]["rounds"] == 4


def test_bad_sides_are_usage_errors_naming_the_argument(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        from pytest_llmperf import SyntheticWorkload

        def test_bad(llmperf):
            llmperf.compare("fast", "slow", SyntheticWorkload(num_requests=1))
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_bad.py: line 4: compare(): a='fast': must be a Config*"])


def test_two_server_urls_are_a_and_b(pytester: pytest.Pytester) -> None:
    # Two deployments of one model: B sends each token 10 ms later than A.
    with (
        InstrumentServer(Script(delays_s=[0.01] * 6)) as fast,
        InstrumentServer(Script(delays_s=[0.02] * 6)) as slow,
    ):
        pytester.makepyfile(
            test_urls=f"""
            from pytest_llmperf import SyntheticWorkload

            def test_urls(llmperf):
                work = SyntheticWorkload(num_requests=2, input_tokens=4, output_tokens=6)
                llmperf.compare("{fast.base_url}", "{slow.base_url}", work, rounds=3)
            """
        )
        args = ["--engine", "openai", "--base-url", fast.base_url, "-p", "no:randomly"]
        pytester.runpytest(*args).assert_outcomes(passed=1)
    (test,) = open_run("latest", pytester.path / "results").tests
    assert test.ab is not None
    assert test.ab["a"]["engine_config"]["settings"]["base_url"] == fast.base_url
    assert test.ab["b"]["engine_config"]["settings"]["base_url"] == slow.base_url
    assert test.ab["b"]["config"] == slow.base_url and test.ab["b"]["engine"] == "openai"
    assert 0.4 < (test.metric("speedup") or 0) < 0.7  # 60 ms against 120 ms a request


# --- end to end on the real engine ---------------------------------------------------------


def test_hf_configurations_and_an_engine_instance_as_sides(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_hf_ab="""
        from pytest_llmperf import Config, SyntheticWorkload
        from pytest_llmperf.engines.hf.engine import HFEngine

        ONE, FOUR = Config.make("one", {"max_num_seqs": 1}), Config.make("four", {"max_num_seqs": 4})
        WORK = SyntheticWorkload(num_requests=4, input_tokens=8, output_tokens=8)

        def test_batching(llmperf):
            result = llmperf.compare(ONE, FOUR, WORK, rounds=3, label="batching")
            assert result.mode == "interleaved" and result.order == "ABBABA"
            assert result.a.requests == result.b.requests == 12

        def test_instance(llmperf):
            twin = HFEngine(llmperf.engine_config())
            result = llmperf.compare(Config.make("default", {}), twin, WORK, rounds=2)
            assert result.speedup is not None
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)
    tests = {t.key: t for t in open_run("latest", pytester.path / "results").tests}
    batching = tests["test_hf_ab.py::test_batching@batching"]
    assert batching.ab is not None and batching.ab["b"]["engine_config"]["settings"] == {
        "max_num_seqs": 4
    }
    # Four requests batched against one at a time: B is faster, and its TTFT shorter.
    assert (batching.metric("speedup") or 0) > 1.2
    assert len(batching.samples_of("ratio.ttft_ms.p50")) == 3
    instance = tests["test_hf_ab.py::test_instance"].ab
    assert instance is not None and instance["b"]["given"] == "HFEngine"
    assert instance["b"]["engine"] == "hf" and instance["b"]["engine_info"]["device"] == "cpu"
