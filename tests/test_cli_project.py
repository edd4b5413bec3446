"""Issue 24, point 2: the `llmperf` command reads the project it runs in.

Before: `llmperf list/show/compare` read `results/` under the working folder whatever the
ini said, and from a subfolder said "no such results folder" with no hint; `list`'s
"failed" counted threshold misses (an update run of 2 passed tests showed `failed 1`, a run
whose tests regressed `failed 0`) and had no engine or model column; `show` printed `pass`
for tests without thresholds; a killed run rebuilt with `llmperf rebuild` held request
records and showed 0 tests; a server that failed to start left no run folder, and the
command in its error was cut after four arguments. Real runs of the hf engine on the tiny
model, and of llama-cpp-python's server.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from pytest_llmperf.results.runs import open_run
from tests.suite_run import REPO, run_project

SUITE = """
from pytest_llmperf import SyntheticWorkload


def test_one(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4),
                    rounds=2, warmup_rounds=1)


def test_two(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4),
                    rounds=2, warmup_rounds=1)
"""


def make_project(root: Path) -> Path:
    """A project whose ini puts its runs in `out/runs`, with a subfolder to work in."""
    (root / "test_suite.py").write_text(SUITE)
    (root / "pytest.ini").write_text("[pytest]\nllmperf_results_dir = out/runs\n")
    (root / "docs" / "notes").mkdir(parents=True)
    return root


def pytest_in(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", "test_suite.py", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*argv, "--gpus=cpu", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def llmperf(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user types it, from `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_llmperf", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rows(table: str) -> list[dict[str, str]]:
    """A table `llmperf` printed, as rows by column name (cells hold no double spaces)."""
    lines = [line for line in table.splitlines() if line.strip()]
    header = [cell.strip() for cell in lines[0].split("  ") if cell.strip()]
    return [
        dict(zip(header, [c.strip() for c in line.split("  ") if c.strip()], strict=True))
        for line in lines[2:]
    ]


def bounds(root: Path, tests: dict[str, dict[str, dict[str, float]]]) -> None:
    path = root / "thresholds" / "cpu" / "hf.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"schema": 1, "tests": tests}))


def test_list_from_a_subfolder_reads_the_ini_results_folder_and_counts_tests(
    tmp_path: Path,
) -> None:
    root = make_project(tmp_path)
    # A count is judged exactly (`MetricSpec.judged_exactly`): a miss whatever the noise.
    bounds(root, {"test_suite.py::test_one": {"requests": {"min": 1000}}})
    assert pytest_in(root).returncode == 1  # test_one missed its bound
    assert pytest_in(root, "--llmperf-update-thresholds").returncode == 0  # both pass
    first, update = sorted(p.name for p in (root / "out" / "runs").iterdir())
    # A baseline a thousand times faster at test_two: the next run regresses there.
    summary_path = root / "out" / "runs" / update / "summary.json"
    summary = json.loads(summary_path.read_text())
    for test in summary["tests"]:
        if test["test_id"].endswith("test_two"):
            test["metrics_flat"]["output_tok_per_s"] *= 1000
            # Without samples on the baseline's side it is compared as a value (the
            # thousandfold fall is certain); the other metrics are judged on both sides'
            # samples, where two rounds' noise is at most inconclusive.
            del test["samples"]["output_tok_per_s"]
    summary_path.write_text(json.dumps(summary))
    # No thresholds this time, and only a thousandfold slowdown is a regression (noise is not).
    compare = (f"--llmperf-compare={update}", "--llmperf-thresholds-dir=none")
    tolerances = ("--llmperf-tolerance=output_tok_per_s:90%", "--llmperf-tolerance=*:99%")
    assert pytest_in(root, *compare, *tolerances).returncode == 1

    out = llmperf(root / "docs" / "notes", "list")
    assert out.returncode == 0, out.stderr
    listed = {row["run"]: row for row in rows(out.stdout)}
    assert list(listed)[:2] == [first, update]
    compared = list(listed.values())[2]
    expected = {"engine": "hf", "model": "tiny", "hardware": "cpu"}
    assert all(row.items() >= expected.items() for row in listed.values()), listed
    counts = [(r["passed"], r["failed"], r["threshold misses"]) for r in listed.values()]
    assert counts == [("1", "1", "1"), ("2", "0", "updated"), ("1", "1", "0")]
    assert compared["state"] == "finished"

    # show: a test without thresholds is not a passed one.
    out = llmperf(root / "docs", "show", "latest")
    assert out.returncode == 0, out.stderr
    table = out.stdout[out.stdout.index("test ") :]
    shown = {row["test"]: row for row in rows(table)}
    assert shown["test_suite.py::test_one"]["thresholds"] == "none"
    assert shown["test_suite.py::test_two"]["result"] == "failed"  # regressed
    assert shown["test_suite.py::test_one"]["result"] == "passed"


def test_outside_the_project_the_error_says_where_it_looked(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pytest.ini").write_text("[pytest]\nllmperf_results_dir = runs\n")
    out = llmperf(elsewhere, "list")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == (
        f"llmperf list: error: {elsewhere / 'runs'}: no such results folder (looked for the "
        f"project's results folder (rootdir {elsewhere}, ini file {elsewhere / 'pytest.ini'}): "
        "run llmperf inside the project, or pytest there first, or give --results-dir)"
    )


def test_a_rebuilt_run_shows_the_test_it_was_killed_in(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    assert pytest_in(root).returncode == 0
    (run_dir,) = (root / "out" / "runs").iterdir()
    # As a run killed during test_two leaves it: its requests written, its record not.
    (run_dir / "summary.json").unlink()
    tests = (run_dir / "tests.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "tests.jsonl").write_text(tests[0])
    out = llmperf(root, "rebuild", "latest")
    assert out.returncode == 0, out.stderr
    assert "1 test(s) (+1 cut short, from their requests), 8 request record(s)" in out.stdout
    run = open_run(run_dir)
    cut = run.test("test_suite.py::test_two")
    assert cut is not None and cut.workload["kind"] == "cut short"
    assert cut.metric("requests") == 4 and cut.metric("output_tok_per_s") is None
    assert cut.unreliable == {"*": "cut short: the test did not finish"}
    out = llmperf(root, "show", "latest")
    assert "test_suite.py::test_two  hf      cut short" in out.stdout, out.stdout
    listed = rows(llmperf(root, "list").stdout)
    assert (listed[0]["passed"], listed[0]["failed"], listed[0]["state"]) == ("1", "1", "rebuilt")


SERVER_SUITE = """
import pytest
from pytest_llmperf import Config, SyntheticWorkload

# llama-cpp-python's server refuses "maybe" for a flag that takes true or false, and exits.
BAD = Config.make("bad", {"server_binary": "python", "server_args": ["--use_mlock", "maybe"]})


@pytest.mark.parametrize("config", [BAD])
def test_served(llmperf, config):
    llmperf.measure(config, SyntheticWorkload(num_requests=1, input_tokens=4, output_tokens=4))
"""


def test_a_server_that_fails_to_start_leaves_a_run_folder_with_its_whole_command(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_suite.py").write_text(SERVER_SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = run_project(tmp_path, "--engine", "llamacpp-server")
    assert out.returncode == 1, out.stdout[-3000:]
    (run_dir,) = (tmp_path / "results").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    (failure,) = summary["engine_failures"]
    command = failure["command"]
    assert command[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert command[-2:] == ["--use_mlock", "maybe"]
    assert "server exited with status" in failure["error"]
    # The whole command, shell-quoted, in the test's failure and in the summary.
    summary_text = out.stdout[out.stdout.index("llmperf summary") :]
    assert "engine failed to start: engine 'llamacpp-server' failed to start: " in summary_text
    assert shlex.join(command) in summary_text
    shown = llmperf(tmp_path, "show", str(run_dir))
    assert shown.returncode == 0 and shlex.join(command) in shown.stdout, shown.stderr


def test_the_command_runs_from_the_repository(tmp_path: Path) -> None:
    """`python -m pytest_llmperf` in the repository reads its own ini (results)."""
    out = llmperf(REPO / "suites", "list", "--results-dir", str(tmp_path))
    assert out.returncode == 0 and "no runs in" in out.stdout


def test_the_project_and_its_ini_folders_are_found_from_a_subfolder(tmp_path: Path) -> None:
    from pytest_llmperf.results.readback.project import find_project

    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nllmperf_results_dir = "out/runs"\n'
        'llmperf_thresholds_dir = "bounds"\n'
    )
    deep = tmp_path / "suites" / "data"
    deep.mkdir(parents=True)
    project = find_project(deep)
    assert project.rootdir == tmp_path and project.inifile == tmp_path / "pyproject.toml"
    assert project.results_dir == tmp_path / "out" / "runs"
    assert project.thresholds_dir == tmp_path / "bounds"  # `llmperf calibrate` writes there
