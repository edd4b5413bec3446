"""The gate end to end: verdicts on per-round samples (met, missed, inconclusive), rounds
until decided, pooled baselines and bounds written from noise, on an instrument engine whose
speed in each round is scripted (tests/scripted_engine.py)."""

from __future__ import annotations

import json
import re

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.results.runs import open_run
from tests.scripted_engine import install_instrument

TEST = """
from pytest_llmperf import SyntheticWorkload

def test_speed(llmperf):
    llmperf.measure(
        workload=SyntheticWorkload(num_requests=2, input_tokens=4, output_tokens=10),
        rounds=ROUNDS, warmup_rounds=0,
    )
"""
KEY = "test_speed.py::test_speed"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    install_instrument(pytester)
    monkeypatch.setenv("LLMPERF_RATE", "2000")
    return pytester


def measure(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    speeds: str,
    *args: str,
    rounds: str = "4",
) -> pytest.RunResult:
    monkeypatch.setenv("LLMPERF_SPEEDS", speeds)
    pytester.makepyfile(test_speed=TEST.replace("ROUNDS", rounds))
    return pytester.runpytest("--engine", "scripted", "-p", "no:randomly", *args)


def bounds(pytester: pytest.Pytester, text: str) -> None:
    folder = pytester.path / "thresholds" / "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scripted.yaml").write_text(f'schema: 1\ntests:\n  "{KEY}":\n{text}')


def latest(pytester: pytest.Pytester) -> dict:  # type: ignore[type-arg]
    run = open_run("latest", pytester.path / "results")
    (test,) = run.tests
    return json.loads(json.dumps(test.as_record()))


def checked(pytester: pytest.Pytester) -> dict[str, str]:
    return {c["metric"]: c["outcome"] for c in latest(pytester)["thresholds"]["checked"]}


def test_each_round_is_a_sample_with_its_interval(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure(project, monkeypatch, "1,0.5").assert_outcomes(passed=1)
    record = latest(project)
    speeds = record["samples"]["output_tok_per_s"]
    assert len(speeds) == 4
    # Rounds at full and half speed alternate: each sample is its own round's.
    assert speeds[0] > 1.6 * speeds[1] and speeds[2] > 1.6 * speeds[3]


def test_met_missed_and_inconclusive(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Steady rounds near 2,000 tok/s (less the harness's own time).
    bounds(project, "    output_tok_per_s: {min: 500}\n")
    measure(project, monkeypatch, "1").assert_outcomes(passed=1)
    assert checked(project) == {"output_tok_per_s": "met"}
    bounds(project, "    output_tok_per_s: {min: 8000}\n")
    result = measure(project, monkeypatch, "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*thresholds missed for*", "*output_tok_per_s*MISS*"])
    assert checked(project) == {"output_tok_per_s": "missed"}
    # Rounds at 0.5x to 2x around a bound at the middle: neither side with confidence.
    bounds(project, "    output_tok_per_s: {min: 1300}\n")
    result = measure(project, monkeypatch, "0.5,2,0.6,1.8")
    result.assert_outcomes(passed=1)
    assert checked(project) == {"output_tok_per_s": "inconclusive"}
    result.stdout.fnmatch_lines(
        [
            "*inconclusive 1/1*",
            "warning: 1 test(s) passed undecided*--llmperf-strict fails them*"
            "test_speed.py::test_speed (output_tok_per_s)*",
        ]
    )
    # ... which fails under --llmperf-strict.
    result = measure(project, monkeypatch, "0.5,2,0.6,1.8", "--llmperf-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*thresholds inconclusive for*--llmperf-strict*"])


def test_rounds_until_decided_stop_when_decided_or_at_the_budget(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    bounds(project, "    output_tok_per_s: {min: 500}\n")
    measure(project, monkeypatch, "1", rounds='"auto"').assert_outcomes(passed=1)
    record = latest(project)
    assert record["stop"] == {"rounds": 3, "reason": "decided", "undecided": 0}
    assert record["rounds"] == 10  # the most it could take (--llmperf-max-rounds's default)
    bounds(project, "    output_tok_per_s: {min: 1300}\n")
    result = measure(
        project, monkeypatch, "0.5,2,0.6,1.8", "--llmperf-max-rounds", "6", rounds='"auto"'
    )
    result.assert_outcomes(passed=1)
    record = latest(project)
    assert record["stop"]["rounds"] == 6 and record["stop"]["reason"] == "max_rounds"
    assert len(record["samples"]["output_tok_per_s"]) == 6
    # The option overrides the test's own rounds.
    measure(project, monkeypatch, "1", "--llmperf-rounds", "auto").assert_outcomes(passed=1)
    assert latest(project)["stop"]["reason"] == "decided"


def test_a_pooled_baseline_catches_a_slowdown_and_passes_an_unchanged_run(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(2):
        measure(project, monkeypatch, "1").assert_outcomes(passed=1)
    result = measure(project, monkeypatch, "0.6", "--llmperf-compare", "latest:2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*regressed against baseline run*", "*output_tok_per_s*REGRESSED*"]
    )
    baseline = latest(project)["baseline"]
    assert len(baseline["run_id"].split(",")) == 2
    verdict = {j["metric"]: j for j in baseline["judged"]}["output_tok_per_s"]
    assert verdict["verdict"] == "regressed" and verdict["high"] < -0.1 and verdict["p"] < 0.01
    result = measure(project, monkeypatch, "1", "--llmperf-compare", "latest~1,latest~2")
    result.assert_outcomes(passed=1)
    verdict = {j["metric"]: j for j in latest(project)["baseline"]["judged"]}["output_tok_per_s"]
    assert verdict["verdict"] in ("ok", "inconclusive")
    bad = measure(project, monkeypatch, "1", "--llmperf-compare", "latest:0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*latest:N, N from 1 to 100*"])


def test_bounds_written_from_noise(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One run: its rounds and the drift floor.
    measure(project, monkeypatch, "1,0.9", "--llmperf-update-thresholds").assert_outcomes(passed=1)
    text = (project.path / "thresholds" / "cpu" / "scripted.yaml").read_text()
    assert "output_tok_per_s: {min: " in text and "noise: " in text and "detects: " in text
    # Several runs: their drift, measured; a run disturbed by other work (a tenth of the
    # speed) is left out, and said so.
    for speeds in ("1,0.9", "1,0.9", "0.1,0.1", "1,0.9"):
        measure(project, monkeypatch, speeds)
    folder = project.path / "calibrated"
    code = main(["calibrate", "latest:4", "--results-dir", str(project.path / "results"),
                 "--thresholds-dir", str(folder), "--drift", "0.05"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and f"{KEY} (3 runs)" in out
    assert re.search(
        rf"note: {re.escape(KEY)}: left out run \S+: its output_tok_per_s 0\.\d+x", out
    )
    written = (folder / "cpu" / "scripted.yaml").read_text()
    assert "runs: 3" in written and "rounds: 4" in written
    # The calibrated bound passes an unchanged run and fails a run at a third of the speed.
    (project.path / "thresholds").rename(project.path / "old-thresholds")
    folder.rename(project.path / "thresholds")
    measure(project, monkeypatch, "1,0.9").assert_outcomes(passed=1)
    measure(project, monkeypatch, "0.33,0.3").assert_outcomes(failed=1)
    assert checked(project)["output_tok_per_s"] == "missed"
    assert main(["calibrate", "latest", "--results-dir", str(project.path / "results")]) == 2
    assert "at least 2 runs" in capsys.readouterr().err


def test_calibrate_writes_the_file_runs_there_are_checked_against_and_keeps_its_comments(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs on an "NVIDIA H100 80GB HBM3" are checked against `h100/` when no more specific
    folder exists: calibrating them rewrites that file, not a new `h100-80gb-hbm3/` one, and
    the notes people wrote in it stay where they were."""
    for _ in range(2):
        measure(project, monkeypatch, "1,0.9")
    results = project.path / "results"
    for run in [p for p in results.iterdir() if (p / "summary.json").is_file()]:
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "hardware": "h100-80gb-hbm3"}))
    file = project.path / "bounds" / "h100" / "scripted.yaml"
    file.parent.mkdir(parents=True)
    file.write_text(
        "# Bounds of the lent H100, first written by hand.\n"
        "schema: 1\n"
        "tests:\n"
        "  # The other test: raised by hand after a noisy night.\n"
        '  "other.py::t":  # kept as it is\n'
        "    output_tok_per_s: {min: 5}  # 0.5x the slower run\n"
        f'  "{KEY}":\n'
        "    output_tok_per_s: {min: 1}\n"
        "# The end.\n"
    )
    code = main(["calibrate", "latest:2", "--results-dir", str(results),
                 "--thresholds-dir", str(project.path / "bounds")])  # fmt: skip
    assert code == 0 and f"{file}: {KEY} (2 runs)" in capsys.readouterr().out
    assert sorted(p.name for p in file.parent.parent.iterdir()) == ["h100"]
    text = file.read_text()
    assert text.startswith("# Bounds of the lent H100, first written by hand.\n# Written by")
    body = text[text.index("schema: 1") :].splitlines()
    assert body[:5] == [
        "schema: 1",
        "tests:",
        "  # The other test: raised by hand after a noisy night.",
        '  "other.py::t":  # kept as it is',
        "    output_tok_per_s: {min: 5}  # 0.5x the slower run",
    ]
    assert body[5] == f'  "{KEY}":' and "noise: " in body[6] and body[-1] == "# The end."
    # A second rewrite keeps them once, its own header once.
    assert main(["calibrate", "latest:2", "--results-dir", str(results),
                 "--thresholds-dir", str(project.path / "bounds")]) == 0  # fmt: skip
    again = file.read_text()
    assert again == text and again.count("# Written by") == 1
