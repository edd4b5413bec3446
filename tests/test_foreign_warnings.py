"""Issue 24, point 5: no pytest-benchmark warning for tests the plugin measures itself.

Before: under `--benchmark-disable` or `-n 2` (where pytest-benchmark turns itself off),
every measured test ended with pytest-benchmark's "Benchmark fixture was not used at all in
this test!", in users' projects (our own pyproject.toml filtered it), even with `-p
no:warnings`. The projects here have no ini of ours and no filter; the engine is hf on the
tiny model.
"""

from __future__ import annotations

import pytest

NOT_USED = "Benchmark fixture was not used at all"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\n")  # a user's ini: no filterwarnings
    pytester.makepyfile(
        test_users="""
        from pytest_llmperf import SyntheticWorkload

        WORK = SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4)

        def test_one(llmperf):
            llmperf.measure(workload=WORK, rounds=2, warmup_rounds=1)

        def test_two(llmperf):
            llmperf.measure(workload=WORK, rounds=1, warmup_rounds=0, label="a")
            llmperf.measure(workload=WORK, rounds=1, warmup_rounds=0, label="b")
        """
    )
    return pytester


@pytest.mark.parametrize(
    "args",
    [
        ("--benchmark-disable",),
        ("--benchmark-disable", "-p", "no:warnings"),
        ("-n", "2"),
    ],
    ids=["benchmark-disable", "no-warnings-plugin", "xdist"],
)
def test_no_fixture_not_used_warning(project: pytest.Pytester, args: tuple[str, ...]) -> None:
    result = project.runpytest("--gpus", "cpu", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=2)
    output = result.stdout.str() + result.stderr.str()
    assert NOT_USED not in output, output[-3000:]
    # The rounds ran all the same: every measured request is in the results.
    (run_dir,) = (project.path / "results").iterdir()
    files = run_dir.glob("requests*.jsonl")  # one per xdist worker
    assert sum(len(f.read_text().splitlines()) for f in files) == 2 * 2 + 2 + 2


def test_a_benchmark_run_still_reports_the_rounds(project: pytest.Pytester) -> None:
    result = project.runpytest("--gpus", "cpu", "-p", "no:cacheprovider", "-k", "test_one")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_one*2*1*"])  # pytest-benchmark's table: 2 rounds
    assert NOT_USED not in result.stdout.str()
