"""Issue 28 item 3: the highest load under an SLO (`llmperf.max_load_under_slo`,
`suite.slo.search`), against the instrument server with a scripted capacity (the rate it
allows is known exactly), a client that cannot keep up, and bad input. The real vLLM CPU
server's search is in `test_vllm_server.py` (it shares that module's server)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from pytest_llmperf import SLO
from pytest_llmperf.errors import ArgumentError
from pytest_llmperf.suite.slo.search import SearchPlan, SearchStep, judge_goodput, search
from tests.instrument_server import InstrumentServer, Script
from tests.suite_run import make_project, run_project

#: The scripted server: 4 places, each request 10 tokens 10 ms apart (0.1 s): 40 req/s.
CAPACITY, TOKENS, GAP_S = 4, 10, 0.01
#: Requests per round, and the SLO: TTFT within 60 ms (the first token is due at 10 ms, so a
#: request may wait 50 ms for a place), met by 90% of requests.
REQUESTS, TTFT_MS, GOODPUT = 20, 60.0, 0.9
START, STEP = 16.0, 4.0


def share_met(
    rate: float, service_s: float = TOKENS * GAP_S, first_s: float = GAP_S, n: int = REQUESTS
) -> float:
    """The share of `n` requests sent every 1/rate s that the script answers within the SLO:
    each waits for the first of the `CAPACITY` places to free, then its first token."""
    free = [0.0] * CAPACITY
    met = 0
    for k in range(n):
        arrive = k / rate
        place = min(range(CAPACITY), key=free.__getitem__)
        start = max(arrive, free[place])
        free[place] = start + service_s
        met += (start - arrive + first_s) * 1000 <= TTFT_MS
    return met / n


def allowed_rate(service_s: float = TOKENS * GAP_S, first_s: float = GAP_S) -> float:
    """The highest rate (to 0.01 req/s) at which the script meets the SLO: 45.71 req/s as
    written (each request 0.1 s); less as it ran (a sleep wakes a little late)."""
    rate = 1.0
    while share_met(rate + 0.01, service_s, first_s) >= GOODPUT:
        rate += 0.01
    return rate


def step(rate: float, decision: str, phase: str = "sweep") -> SearchStep:
    return SearchStep(
        rate, phase, decision, 2, (), None, None, None, None,  # type: ignore[arg-type]
        None, None, False, None, None, None, None,
    )  # fmt: skip


def test_the_sweep_doubles_then_bisection_brackets_within_a_step() -> None:
    plan = SearchPlan(SLO(ttft_ms=100), start_rate_per_s=1, step_per_s=0.5, max_rate_per_s=100)
    asked: list[tuple[float, str]] = []

    def measure(rate: float, phase: str) -> SearchStep:
        asked.append((rate, phase))
        decision = "pass" if rate <= 5.3 else ("inconclusive" if 5.8 < rate < 7 else "fail")
        return step(rate, decision, phase)

    result = search(plan, measure)  # type: ignore[arg-type]
    assert asked == [
        (1, "sweep"), (2, "sweep"), (4, "sweep"), (8, "sweep"),
        (6, "bisect"), (5, "bisect"), (5.5, "bisect"),
    ]  # fmt: skip
    assert result.max_rate_per_s == 5 and result.stopped == "bracketed"
    assert result.inconclusive == [6]
    assert result.note == (
        "the SLO is met at 5 req/s and fails at 5.5 req/s (step 0.5 req/s, goodput >= 0.9); "
        "inconclusive (counted as failing) at 6 req/s"
    )


def test_the_search_stops_at_the_max_rate_and_when_nothing_passes() -> None:
    plan = SearchPlan(SLO(e2e_ms=100), start_rate_per_s=3, max_rate_per_s=10)
    capped = search(plan, lambda rate, phase: step(rate, "pass", phase))
    assert [s.rate_per_s for s in capped.steps] == [3, 6, 10]
    assert capped.stopped == "max_rate" and capped.max_rate_per_s == 10
    assert "the SLO held up to max_rate_per_s=10" in capped.note
    nothing = search(plan, lambda rate, phase: step(rate, "fail", phase))
    assert [s.rate_per_s for s in nothing.steps] == [3, 1.5, 0.75]  # bisects down from 0..3
    assert nothing.max_rate_per_s is None and nothing.stopped == "no_pass"
    assert nothing.note == "no step met the SLO (lowest measured 0.75 req/s)"


def test_a_step_is_judged_on_its_rounds_with_an_interval() -> None:
    plan = SearchPlan(SLO(ttft_ms=50), goodput=0.9, min_rounds=2, max_rounds=5)
    assert judge_goodput([1.0, 1.0], plan, 0.05).decision == "pass"  # no spread: exact
    assert judge_goodput([0.25, 0.3, 0.25], plan, 0.05).decision == "fail"
    straddling = judge_goodput([0.95, 0.85], plan, 0.05)
    assert straddling.decision == "inconclusive"
    assert straddling.verdict is not None
    assert straddling.verdict.estimate.low < 0.9 < straddling.verdict.estimate.high
    assert judge_goodput([0.97, 0.96, 0.98, 0.97], plan, 0.05).decision == "pass"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"slo": SLO()}, "slo=SLO(ttft_ms=None, tpot_ms=None, e2e_ms=None): has no bound"),
        ({"step_per_s": 0}, "step_per_s=0: must be a positive number"),
        ({"start_rate_per_s": -1}, "start_rate_per_s=-1: must be a positive number"),
        ({"goodput": 1.5}, "goodput=1.5: must be a number from 0 to 1"),
        ({"goodput": 0}, "goodput=0: must be above 0"),
        ({"max_rate_per_s": 2, "start_rate_per_s": 4}, "max_rate_per_s=2: is below start_"),
        ({"min_rounds": 3, "max_rounds": 2}, "max_rounds=2: is below min_rounds=3"),
        ({"distribution": "gamma"}, "distribution='gamma': must be one of 'poisson', 'const"),
    ],
)
def test_bad_plans_are_usage_errors_naming_the_argument(kwargs: dict, says: str) -> None:
    arguments = {"slo": SLO(ttft_ms=100), **kwargs}
    with pytest.raises(ArgumentError) as caught:
        SearchPlan(**arguments)
    assert f"test_slo_search.py: line {caught.traceback[0].lineno + 1}: " in str(caught.value)
    assert f"max_load_under_slo(): {says}" in str(caught.value)


SUITE = f"""
from pytest_llmperf import SLO, Config, SyntheticWorkload

WORK = SyntheticWorkload(num_requests={REQUESTS}, input_tokens=4, output_tokens={TOKENS})


def test_capacity(llmperf):
    found = llmperf.max_load_under_slo(
        workload=WORK, slo=SLO(ttft_ms={TTFT_MS}), goodput={GOODPUT}, start_rate_per_s={START},
        step_per_s={STEP}, max_rate_per_s=200, min_rounds=2, max_rounds=5, warmup_rounds=0,
        distribution="constant",
    )
    print("FOUND", found.max_rate_per_s, found.note)


def test_client_bound(llmperf):
    one_at_a_time = Config.make("one", {{"max_concurrency": 1}})
    found = llmperf.max_load_under_slo(
        one_at_a_time, SyntheticWorkload(num_requests=6, input_tokens=4, output_tokens={TOKENS}),
        SLO(e2e_ms=5000), start_rate_per_s=20, max_rate_per_s=20, warmup_rounds=0,
        distribution="constant", label="client",
    )
    raise AssertionError("not reached: its bound on a search that found nothing is missed")


def test_no_bound(llmperf):
    llmperf.max_load_under_slo(workload=WORK, slo=SLO())


def test_no_step(llmperf):
    llmperf.max_load_under_slo(workload=WORK, slo=SLO(ttft_ms=50), step_per_s=0)
"""


#: Thresholds check the search's answer and the chosen step's metrics like any test's: met
#: here; missed where the search found no rate (null: "not measured").
THRESHOLDS = """schema: 1
tests:
  "test_suite.py::test_capacity":
    max_rate_under_slo_req_per_s: {min: 30}
    ttft_ms.p90: {max: 500}
  "test_suite.py::test_client_bound@client":
    max_rate_under_slo_req_per_s: {min: 1}
"""


def test_the_search_finds_the_rate_a_scripted_capacity_allows(tmp_path: Path) -> None:
    """One run of four tests: the search on a server of known capacity, a client held to one
    request at a time, and two bad calls."""
    from pytest_llmperf.report.html import render_report
    from pytest_llmperf.results.runs import open_run

    project = make_project(tmp_path, SUITE)
    (project / "thresholds" / "cpu").mkdir(parents=True)
    (project / "thresholds" / "cpu" / "openai.yaml").write_text(THRESHOLDS)
    script = Script(delays_s=[GAP_S] * TOKENS, capacity=CAPACITY)
    with InstrumentServer(script) as server:
        args = ("--engine", "openai", "--base-url", server.base_url, "-rA")
        out = run_project(project, *args, "--llmperf-thresholds-dir", "thresholds")
        took, held = list(server.took_s), list(server.held_s)  # each request, as it ran
    assert "3 failed, 1 passed" in out.stdout, out.stdout[-4000:]
    # Bad input: the test's line, the call, the argument, the problem.
    assert "test_suite.py: line 27: max_load_under_slo(): slo=SLO(" in out.stdout
    assert "has no bound: give ttft_ms, tpot_ms or e2e_ms" in out.stdout
    assert "line 31: max_load_under_slo(): step_per_s=0: must be a positive number" in out.stdout

    run = open_run("latest", project / "results")
    tests = {t.key.split("::")[-1]: t for t in run.tests}
    capacity = tests["test_capacity"]
    search_record = capacity.slo_search or {}
    first_s = statistics.median(first for first, _ in took)
    service_s = statistics.median(held)  # its whole answer: a little over the 0.1 s script
    assert TOKENS * GAP_S <= service_s < 1.2 * TOKENS * GAP_S, service_s
    allowed = allowed_rate(service_s, first_s)  # 45.71 req/s at exactly 0.1 s a request
    found = capacity.metric("max_rate_under_slo_req_per_s")
    assert found is not None and found == search_record["max_rate_per_s"]
    # Within one search step below the rate the script allows as it ran; 5% of slack either
    # way for wake-ups that vary from request to request (the median hides them).
    slack = 0.05 * allowed
    assert allowed - STEP - slack <= found <= allowed + slack, (found, allowed, service_s)
    steps = search_record["steps"]
    rates = [s["rate_per_s"] for s in steps]
    assert rates[:3] == [START, 2 * START, 4 * START]  # the sweep, then bisection
    assert [s["phase"] for s in steps[3:]] == ["bisect"] * (len(steps) - 3)
    assert search_record["stopped"] == "bracketed"
    chosen = steps[search_record["chosen"]]
    assert chosen["decision"] == "pass" and chosen["rate_per_s"] == found
    above = [s for s in steps if s["rate_per_s"] > found]
    assert above and all(s["decision"] in ("fail", "inconclusive") for s in above)
    assert min(s["rate_per_s"] for s in above) - found <= STEP
    for s in steps:  # each step decided on its rounds, with its interval where they vary
        assert 2 <= s["rounds"] <= 5 and len(s["goodput_samples"]) == s["rounds"]
        assert s["asked_send_rate_per_s"] == pytest.approx(s["rate_per_s"], rel=1e-6)
        if s["decision"] == "pass":
            assert s["goodput_low"] >= GOODPUT
        if s["decision"] == "fail":
            assert s["goodput_centre"] < GOODPUT
    # The test's metrics are the chosen step's, with its per-round samples.
    assert capacity.metric("goodput_fraction") is not None
    assert capacity.metric("goodput_fraction") >= GOODPUT  # type: ignore[operator]
    assert capacity.metric("ttft_ms.p90") == pytest.approx(chosen["ttft_ms_p90"])
    assert capacity.metric("output_tok_per_s") == pytest.approx(chosen["output_tok_per_s"])
    assert len(capacity.samples_of("goodput_fraction")) == chosen["rounds"]
    assert f"FOUND {found}" in out.stdout
    checked = {c.metric: c for c in capacity.thresholds.checked}
    assert checked["max_rate_under_slo_req_per_s"].outcome == "met"
    # Judged on the chosen step's rounds (2 to 5: met, or inconclusive on 2 wide ones).
    assert checked["ttft_ms.p90"].how == "samples" and checked["ttft_ms.p90"].outcome != "missed"

    client = tests["test_client_bound@client"]
    (first,) = (client.slo_search or {})["steps"]
    assert first["decision"] == "client_bound" and first["rounds"] == 1
    assert first["achieved_send_rate_per_s"] < 0.9 * first["asked_send_rate_per_s"]
    assert client.metrics_flat["max_rate_under_slo_req_per_s"] is None
    (missed,) = client.thresholds.checked
    assert missed.outcome == "missed" and missed.measured is None
    assert "thresholds missed for test_suite.py::test_client_bound@client" in out.stdout
    assert "stopped client-bound at 20 req/s: the client sent" in out.stdout
    assert "the load generator, not the server, was the bottleneck there" in out.stdout

    # The report: the Pareto figure and each search's table of steps.
    report = render_report([run])
    assert "SLO search: output tok/s per user vs per server" in report
    assert '<h2 id="slo-search">SLO searches</h2>' in report
    assert report.count("(chosen)</td>") == 1
    assert f"max_rate_under_slo_req_per_s = {found:g}" in report
    lines = [json.loads(x) for x in (run.path / "requests.jsonl").read_text().splitlines()]
    assert {x.get("slo_step_rate_per_s") for x in lines if "capacity" in x["test_id"]} == set(rates)
