"""bench/gate_power.py, the gate's power benchmark: its statistics against scipy and known
cases, its schedule, and a short run of the real thing (hf engine, tiny model, the shipped
smoke tests) that must catch a large slowdown and keep its counts straight."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
from scipy import stats

from bench.gate_power import TESTS, main, schedule
from bench.gate_report import (
    ArmSpec,
    binomial_cdf,
    clopper_pearson,
    drift,
    percentile,
)
from pytest_llmperf.results.runs import read_run

COUNTS = [(0, 1), (1, 1), (0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (0, 100), (2, 100)]
COUNTS += [(50, 100), (3, 300), (47, 50), (50, 50), (0, 50)]


@pytest.mark.parametrize(("failures", "trials"), COUNTS)
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_clopper_pearson_is_scipys_beta_interval(
    failures: int, trials: int, confidence: float
) -> None:
    tail = (1 - confidence) / 2
    low = 0.0 if failures == 0 else stats.beta.ppf(tail, failures, trials - failures + 1)
    high = 1.0 if failures == trials else stats.beta.ppf(1 - tail, failures + 1, trials - failures)
    got = clopper_pearson(failures, trials, confidence)
    assert got == pytest.approx((low, high), abs=1e-9)


def test_clopper_pearson_known_values() -> None:
    # 0 of 100: the "rule of three" upper bound is about 3/n; the exact one is 3.62%.
    assert clopper_pearson(0, 100)[1] == pytest.approx(0.036217, abs=1e-6)
    # 2 of 100, the 2% on 100 trials: the interval still reaches 7%.
    low, high = clopper_pearson(2, 100)
    assert (round(low, 4), round(high, 4)) == (0.0024, 0.0704)


@pytest.mark.parametrize(("failures", "trials"), [(-1, 10), (11, 10), (0, 0)])
def test_clopper_pearson_refuses_what_is_no_count(failures: int, trials: int) -> None:
    with pytest.raises(ValueError, match="not a binomial count"):
        clopper_pearson(failures, trials)


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 10, 0.1), (3, 10, 0.5), (7, 20, 0.33), (99, 100, 0.99)]
)
def test_binomial_cdf_is_scipys(k: int, n: int, p: float) -> None:
    assert binomial_cdf(k, n, p) == pytest.approx(stats.binom.cdf(k, n, p), rel=1e-12)


def test_percentile_interpolates_like_numpy() -> None:
    numpy = pytest.importorskip("numpy")
    values = [3.0, 1.0, 7.5, 2.0, 10.0, 4.0]
    for q in (0, 10, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))
    assert percentile([], 50) is None


def _arm(name: str, trials: int) -> ArmSpec:
    return ArmSpec(name, "baseline", 0.0, trials)


def test_schedule_takes_turns_abba_with_equal_counts() -> None:
    order = [arm.name for arm in schedule([_arm("A", 4), _arm("B", 4)])]
    assert order == ["A", "B", "B", "A", "A", "B", "B", "A"]


def test_schedule_gives_every_arm_the_same_mean_place() -> None:
    arms = [_arm("U", 100), _arm("S20", 50), _arm("S10", 50), _arm("T", 100), _arm("T30", 50)]
    order = [arm.name for arm in schedule(arms)]
    assert {name: order.count(name) for name in order} == {a.name: a.trials for a in arms}
    places = {a.name: statistics.fmean(i for i, n in enumerate(order) if n == a.name) for a in arms}
    middle = (len(order) - 1) / 2
    assert all(abs(place - middle) < 2 for place in places.values()), places
    # Stopped at any point (the budget), each arm has done about its share of its trials.
    for stop in (35, 117, 300):
        done = order[:stop]
        for arm in arms:
            assert abs(done.count(arm.name) / arm.trials - stop / len(order)) < 0.03


def _runs(levels: list[float], noise: float, rounds: int, seed: int) -> list[dict]:
    """Baseline runs around `levels` (logs), each with `rounds` rounds of log noise `noise`."""
    rng = random.Random(seed)
    return [
        {
            "t::x": {
                "output_tok_per_s": [math.exp(level + rng.gauss(0, noise)) for _ in range(rounds)]
            }
        }
        for level in levels
    ]


def test_drift_between_successive_runs_is_the_drift_put_in() -> None:
    rng = random.Random(1)
    levels = [math.log(1000) + rng.gauss(0, 0.05) for _ in range(400)]
    found = drift(_runs(levels, noise=0.03, rounds=3, seed=2))["x"]["output_tok_per_s"]
    assert found["runs"] == 400
    assert found["drift_sd"] == pytest.approx(0.05, rel=0.15)
    assert found["within_run_sd"] == pytest.approx(0.03, rel=0.15)
    # No drift: the rounds' own noise is not counted as drift.
    still = drift(_runs([math.log(1000)] * 400, noise=0.03, rounds=3, seed=3))["x"]
    assert still["output_tok_per_s"]["drift_sd"] < 0.01


def test_one_disturbed_run_is_not_drift() -> None:
    rng = random.Random(4)
    levels = [math.log(6000) + rng.gauss(0, 0.05) for _ in range(33)]
    levels[0] = math.log(80)  # another process held the cores for the first baseline run
    found = drift(_runs(levels, noise=0.03, rounds=3, seed=5))["x"]["output_tok_per_s"]
    assert found["drift_sd"] < 0.1, found


def test_short_run_catches_a_large_slowdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 unchanged and 3 at 80% slower against a fresh baseline, 1 against the thresholds
    alone; the tests' own rounds (3 and 5). One block: a baseline process, a trial process."""
    out = tmp_path / "gate.json"
    code = main(
        [
            "--trials-unchanged=3",
            "--slowdowns=0.8",
            "--trials-slow=3",
            "--threshold-trials-unchanged=1",
            "--threshold-trials-slow=0",
            "--rounds=fixed",
            "--block=7",
            "--minutes=60",  # a budget the short run never reaches, loaded or not
            f"--work={tmp_path / 'work'}",
            f"--json={out}",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    arms = {arm["name"]: arm for arm in report["arms"]}
    assert list(arms) == [
        "baseline, unchanged",
        "baseline, 80% slower",
        "thresholds, unchanged",
        "thresholds, unchanged, fresh process",
    ]
    assert report["finished_all"] is True
    for arm in arms.values():
        counts = [arm[k] for k in ("trials", "failures", "inconclusive", "errors")]
        assert all(isinstance(c, int) for c in counts), arm
        assert arm["errors"] == 0, arm
        assert 0 <= arm["failures"] + arm["inconclusive"] <= arm["trials"] == arm["planned"]
        failures, trials = arm["failures"], arm["trials"]
        low, high = arm["ci95"]
        assert low == pytest.approx(
            0.0 if failures == 0 else stats.beta.ppf(0.025, failures, trials - failures + 1)
        )
        assert high == pytest.approx(
            1.0 if failures == trials else stats.beta.ppf(0.975, failures + 1, trials - failures)
        )
        assert arm["rate"] == failures / trials
    assert arms["baseline, unchanged"]["trials"] == 3
    assert arms["thresholds, unchanged, fresh process"]["trials"] == 1
    slow = arms["baseline, 80% slower"]
    # Time to a verdict is reported (how it compares between arms is the bench's to measure).
    for arm in (slow, arms["baseline, unchanged"]):
        assert arm["seconds_to_verdict"]["p50"] > 0, arm

    # Every trial ran both tests, each with its own record, at the tests' own rounds.
    trials = [t for t in report["trials"] if t["arm"] != "thresholds, unchanged, fresh process"]
    assert sorted(t["trial"] for t in trials) == list(range(7))
    for trial in trials:
        assert [r["test"] for r in trial["tests"]] == list(TESTS)
        assert [(r["rounds"], r["stop"]) for r in trial["tests"]] == [(3, "fixed"), (5, "fixed")]

    # The records say what each arm was judged against: the block's baseline run, or none.
    block = Path(report["work"]) / "block000"
    base = read_run(next((block / "baseline" / "results").iterdir()))
    run = read_run(next((block / "trials" / "results").iterdir()))
    arm_of = {t["trial"]: t["arm"] for t in trials}
    steps = [
        json.loads(line) for line in (block / "trials" / "steps.jsonl").read_text().splitlines()
    ]
    assert len(run.tests) == len(steps) == 14
    for step, record in zip(steps, run.tests, strict=True):
        assert record.test_id == step["test"]
        if arm_of[step["trial"]].startswith("thresholds"):
            assert record.baseline is None
        else:
            assert record.baseline is not None and record.baseline.run_id == base.run_id
    speeds = {
        arm: statistics.median(
            r.metric("output_tok_per_s") or 0.0
            for s, r in zip(steps, run.tests, strict=True)
            if arm_of[s["trial"]] == arm and "batch8" in r.test_id
        )
        for arm in ("baseline, unchanged", "baseline, 80% slower")
    }
    # 0.2x on an idle machine; on a loaded one the load moves more than the instrument
    # (0.58x and 0.19x seen at load 5-8).
    assert speeds["baseline, 80% slower"] < 0.8 * speeds["baseline, unchanged"], speeds
    assert slow["measured_slowdown"][TESTS[0]] > 0.2, slow["measured_slowdown"]

    # Five times slower is never judged unchanged; and where the baseline run's rounds agree
    # (an idle machine: within 10%), the gate catches it in (nearly) every trial. On a loaded
    # one no gate can: rounds of one run moved 6x there while this was written.
    slow_verdicts = [t["verdict"] for t in trials if t["arm"] == "baseline, 80% slower"]
    assert "passed" not in slow_verdicts, slow_verdicts
    noise = max(
        statistics.stdev(math.log(v) for v in r.samples["output_tok_per_s"] if v)
        for r in base.tests
    )
    if noise <= 0.1:
        assert slow_verdicts.count("failed") >= 2, (noise, slow)

    printed = capsys.readouterr().out
    assert "| arm | trials | failed | rate | 95% CI (Clopper-Pearson) |" in printed
    assert "| baseline, 80% slower | 3 |" in printed
