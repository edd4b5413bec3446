"""`--llmperf-dry-run` builds and checks everything but starts no engine; `--llmperf-limit`
caps the requests (or questions) of every test."""

from __future__ import annotations

from pathlib import Path

from tests.suite_run import make_project, run_project, run_suite

SUITE = """
import pytest
from pytest_llmperf import SyntheticWorkload

@pytest.mark.parametrize("n", [1, 4])
def test_decode(llmperf, n):
    llmperf.measure(workload=SyntheticWorkload(num_requests=n, input_tokens=8, output_tokens=4),
                    rounds=2, warmup_rounds=0)
"""


def test_a_dry_run_of_the_shipped_suites_builds_requests_and_measures_nothing(
    tmp_path: Path,
) -> None:
    run = run_suite(
        tmp_path, "-m", "smoke or accuracy", "--engine", "vllm", "--llmperf-dry-run", "-rs"
    )
    assert run.out.returncode == 0, run.output
    skipped = [line for line in run.out.stdout.splitlines() if line.startswith("SKIPPED")]
    # Every test is skipped by the dry run, but those that need a GPU this run lacks and
    # those written for another engine (they say which).
    reasons = ("dry run:", "needs 1 GPU", "run with --engine")
    assert skipped and all(any(r in line for r in reasons) for line in skipped), skipped
    assert any("16 requests" in line and "engine 'vllm' not started" in line for line in skipped)
    assert any("100 questions, 400 choices to score" in line for line in skipped)
    assert not run.results_dir.exists()  # nothing measured, no run folder


def test_limit_caps_every_tests_requests(tmp_path: Path) -> None:
    root = make_project(tmp_path, SUITE)
    out = run_project(root, "--llmperf-limit", "2")
    assert out.returncode == 0, out.stdout[-3000:]
    from pytest_llmperf.results.runs import open_run

    run = open_run("latest", root / "results")
    # 1 or 4 requests a round, 2 rounds; capped at 2 a round.
    requests = {t.test_id.split("::")[1]: t.metrics["requests"] for t in run.tests}
    assert requests == {"test_decode[1]": 2, "test_decode[4]": 4}
    assert run.summary["settings"]["limit"] == 2


def test_a_bad_limit_is_a_usage_error(tmp_path: Path) -> None:
    root = make_project(tmp_path, SUITE)
    out = run_project(root, "--llmperf-limit", "0")
    assert out.returncode == 4
    assert "--llmperf-limit: must be at least 1, got 0" in out.stderr
