"""Workers elsewhere: xdist workers in other folders, and on "another host" over SSH as another
user, measure into the controller's run, their records sent with their tests' reports."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.cli import main
from tests.conftest import SUITE
from tests.ssh_host import ssh_host

TESTS = {
    "test_suite.py::test_decode[batch1]",
    "test_suite.py::test_decode[batch4]",
    "test_suite.py::test_latency",
}


def _suite(folder: Path) -> Path:
    """The small suite in `folder/suite`, its own rootdir; xdist syncs it to each worker's
    folder (`--rsyncdir`: deprecated, but the way `--tx ...//chdir` finds a suite)."""
    suite = folder / "suite"
    suite.mkdir(parents=True)
    (suite / "test_suite.py").write_text(SUITE)
    (suite / "pytest.ini").write_text("[pytest]\n")
    return suite


def _argv(suite: Path, *tx: str) -> list[str]:
    # Every value joined to its option: xdist takes any argument that is an existing path
    # for a test path, which a chdir worker must find under a synced folder.
    return [
        sys.executable,
        "-m",
        "pytest",
        str(suite / "test_suite.py"),
        "-p",
        "no:cacheprovider",
        "--gpus=cpu",
        "--llmperf-results-dir=results",
        "-d",
        f"--rsyncdir={suite}",
        *(f"--tx={spec}" for spec in tx),
    ]


def _the_run(suite: Path) -> tuple[Path, dict[str, Any]]:
    (run_dir,) = (suite / "results").iterdir()
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_workers_in_other_folders_measure_into_the_controllers_run(tmp_path: Path) -> None:
    suite = _suite(tmp_path / "controller")
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    out = subprocess.run(
        # A's worker has GPUs of its own (none: this is a CPU machine), as another host would.
        _argv(suite, f"popen//chdir={a}//env:LLMPERF_GPUS=none", f"popen//chdir={b}"),
        cwd=suite.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    printed = out.stdout[-5000:] + out.stderr[-2000:]
    assert out.returncode == 0, printed
    run_dir, summary = _the_run(suite)
    assert {t["test_id"] for t in summary["tests"]} == TESTS
    assert len(summary["tests"]) == len(TESTS)  # each once: no worker's copy read twice
    where = {t["test_id"]: (t["worker"], t["host"]["cwd"]) for t in summary["tests"]}
    assert {cwd for _, cwd in where.values()} == {str(a), str(b)}, where
    for test in summary["tests"]:
        assert test["host"]["hostname"] and test["host"]["worker"] == test["worker"]
        assert test["host"]["run_gpus"] == []
        chosen = "LLMPERF_GPUS in xdist worker gw" if test["host"]["cwd"] == str(a) else "--gpus"
        assert test["host"]["gpus_source"].startswith(chosen)
    requests = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    assert len(requests) == 12 + 12 + 5
    assert (run_dir / "github-benchmark" / "bigger_is_better.json").exists()
    # The summary table lists every test, grouped by where it ran, and says each place's GPUs.
    shown = [line for line in out.stdout.splitlines() if line.startswith("test_suite.py::")]
    assert {line.split()[0] for line in shown} == TESTS, printed
    places = [line.split()[2] for line in shown]
    assert places == sorted(places, key=places.index)  # each place's rows together
    assert {p.rsplit(":", 1)[1] for p in places} == {str(a), str(b)}, printed
    assert f":{a}: " in out.stdout and "GPUs none (LLMPERF_GPUS in xdist worker" in out.stdout, (
        printed
    )
    assert f":{b}: " in out.stdout and "GPUs none (--gpus)" in out.stdout, printed
    # Each worker kept its own copy, in its own folder's results, none in the controller's.
    for worker, cwd in set(where.values()):
        copy = Path(cwd) / "suite" / "results" / run_dir.name / "workers" / worker
        assert (copy / "tests.jsonl").exists()
    assert not (run_dir / "workers").exists()
    _report_groups_by_host(run_dir, tmp_path / "report.html", a, b)


def _report_groups_by_host(run_dir: Path, out: Path, a: Path, b: Path) -> None:
    """The HTML report of a run measured in two places: a host column in the tests table
    with each place's rows together, and a line per place (workers, GPUs) in the header."""
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    page = out.read_text()
    tests = page.split('<h2 id="tests">', 1)[1].split("</table>", 1)[0]
    head = re.findall(r"<th>(.*?)</th>", tests)
    assert head[:3] == ["test", "host", "config"], head
    rows = re.findall(r'<span class="id">(.*?)</span></td><td class="host">(.*?)</td>', tests)
    assert {html.unescape(test) for test, _ in rows} == TESTS
    places = [html.unescape(place) for _, place in rows]
    assert places == sorted(places, key=places.index)  # each place's rows together
    assert {p.rsplit(":", 1)[1] for p in places} == {str(a), str(b)}
    (hosts,) = re.findall(r"<tr><th>hosts</th><td>(.*?)</td></tr>", page)
    lines = [html.unescape(line) for line in hosts.split("<br>")]
    assert len(lines) == 2, lines
    assert any(f":{a}: " in line and "GPUs none (LLMPERF_GPUS in xdist" in line for line in lines)
    assert any(f":{b}: " in line and "GPUs none (--gpus)" in line for line in lines)


def test_a_worker_over_ssh_as_another_user_measures_into_the_controllers_run(
    tmp_path: Path,
) -> None:
    with ssh_host() as host:
        suite = _suite(host.controller_home)
        subprocess.run(["chown", "-R", "llmperf-ctl:", str(suite)], check=True)
        work = host.worker_home / "work"
        refused = subprocess.run(
            host.as_controller(["ls", str(host.worker_home)]), capture_output=True, check=False
        )
        assert refused.returncode != 0  # the controller cannot read the worker's folder
        python = host.python
        argv = [*python, *_argv(suite, host.tx(" ".join(python), work), "popen")[1:]]
        out = subprocess.run(
            host.as_controller(argv),
            cwd=suite.parent,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        printed = out.stdout[-5000:] + out.stderr[-3000:]
        assert out.returncode == 0, printed
        run_dir, summary = _the_run(suite)
        assert {t["test_id"] for t in summary["tests"]} == TESTS
        assert len(summary["tests"]) == len(TESTS)
        remote = [t for t in summary["tests"] if t["host"]["user"] == "llmperf-wrk"]
        assert remote, {t["test_id"]: t["host"]["user"] for t in summary["tests"]}
        assert all(t["host"]["cwd"] == str(work) for t in remote)
        for test_id in TESTS:
            assert test_id in out.stdout, printed
        (worker,) = {t["worker"] for t in remote}
        # The worker's own copy is in its folder, which the controller's user cannot read.
        assert (work / "suite" / "results" / run_dir.name / "workers" / worker).is_dir()


def test_a_run_killed_with_its_controller_is_rebuilt_from_the_workers_copies(
    real_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The records of a test go to the controller with its report: a run killed while a worker
    measured leaves that test's finished rounds only in the worker's copy, which `llmperf
    rebuild` reads; the copies of tests the controller received are not counted twice."""
    run = tmp_path / "killed"
    shutil.copytree(real_runs[0], run)
    (run / "summary.json").unlink()
    victim = "test_suite.py::test_decode[batch4]"

    def lines(name: str) -> list[str]:
        return (run / name).read_text().splitlines(keepends=True)

    requests = lines("requests.jsonl")
    theirs = [line for line in requests if json.loads(line)["test_id"] == victim]
    assert theirs
    (run / "requests.jsonl").write_text("".join(r for r in requests if r not in theirs))
    kept = [line for line in lines("tests.jsonl") if json.loads(line)["test_id"] != victim]
    (run / "tests.jsonl").write_text("".join(kept))
    for worker, records in (("gw0", [r for r in requests if r not in theirs]), ("gw1", theirs)):
        (run / "workers" / worker).mkdir(parents=True)
        (run / "workers" / worker / "requests.jsonl").write_text("".join(records))
    assert main(["rebuild", str(run)]) == 0
    assert "(+1 cut short, from their requests)" in capsys.readouterr().out
    tests = {t["test_id"]: t for t in json.loads((run / "summary.json").read_text())["tests"]}
    assert set(tests) == TESTS
    assert tests[victim]["workload"]["kind"] == "cut short"
    assert tests[victim]["metrics"]["requests"] == len(theirs) == 12
    assert tests["test_suite.py::test_decode[batch1]"]["metrics"]["requests"] == 12
