"""Baselines and bounds that can fail: what the tool knows is bad never becomes a bound or a
verdict, `latest` is a run that measured something, and concurrent updates merge.

Real runs: the hf engine on the tiny model, and the `openai` client against servers on
127.0.0.1 that misbehave in known ways (`tests/instrument_server.py`): one that answers every
request with an error, one that sends each whole answer in one packet (so that no token is
timed apart from the others: a TPOT of 0 ms, as a client-bound run records it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from pytest_llmperf.cli import main
from pytest_llmperf.results.runs import find_runs, open_run
from pytest_llmperf.thresholds.update import update_thresholds
from tests.conftest import SUITE
from tests.instrument_server import InstrumentServer, Script
from tests.suite_run import REPO, make_project, run_project

OPENAI_SUITE = """
from pytest_llmperf import SyntheticWorkload

def test_served(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=4, input_tokens=4, output_tokens=10),
                    rounds=2, warmup_rounds=0)
"""
SERVED = "test_suite.py::test_served"
THRESHOLDS = Path("thresholds") / "cpu" / "openai.yaml"


class BurstServer(InstrumentServer):
    """Sends each answer whole, in one write: every token arrives in one packet, so the
    client stamps them all at once (TTFT = end-to-end, TPOT 0 ms)."""

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = []
        for i in range(10):
            choice = {"index": 0, "text": f" t{i}", "finish_reason": "length" if i == 9 else None}
            events.append(f"data: {json.dumps({'choices': [choice]})}\n\n")
        usage = {"prompt_tokens": 7, "completion_tokens": 10}
        events.append(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n")
        events.append("data: [DONE]\n\n")
        await response.write("".join(events).encode())
        return response


def openai_run(
    project: Path, server: InstrumentServer, *args: str
) -> subprocess.CompletedProcess[str]:
    return run_project(project, "--engine", "openai", "--base-url", server.base_url, *args)


def bounds(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((project / THRESHOLDS).read_text())["tests"]
    return data


# --- bounds from numbers the tool knows are bad -----------------------------------------


def test_update_writes_no_bound_from_a_run_whose_every_request_failed(tmp_path: Path) -> None:
    """Before: `output_tok_per_s: {min: 0}` and `failure_rate: {max: 1.25}`, bounds that
    can never fail, written without a word."""
    project = make_project(tmp_path, OPENAI_SUITE)
    with InstrumentServer(Script(fault="http500")) as server:
        out = openai_run(project, server, "--llmperf-update-thresholds")
    output = out.stdout + out.stderr
    assert "Traceback" not in output
    assert not (project / THRESHOLDS).exists(), (project / THRESHOLDS).read_text()
    assert (
        f"WARNING: thresholds not updated: {project / THRESHOLDS}: {SERVED}: no bound written: "
        "every request failed (8 of 8)" in out.stdout
    ), output[-3000:]
    summary = open_run("latest", project / "results")
    (test,) = summary.tests
    assert test.unreliable == {"*": "every request failed (8 of 8)"}
    assert summary.summary["thresholds_update"]["refused"] == [
        f"{project / THRESHOLDS}: {SERVED}: no bound written: every request failed (8 of 8)"
    ]
    assert (
        f"note: {SERVED}: every request failed (8 of 8): no bound or baseline is made of this test"
    ) in out.stdout


def test_update_writes_no_bound_from_a_zero_latency_and_keeps_the_one_in_the_file(
    tmp_path: Path,
) -> None:
    """Before: `tpot_ms.p90: {max: 0}` from a run whose tokens arrived in one burst, a bound
    every later run misses."""
    project = make_project(tmp_path, OPENAI_SUITE)
    (project / THRESHOLDS).parent.mkdir(parents=True)
    kept = {"tpot_ms.p90": {"max": 50}, "output_tok_per_s": {"min": 1}}
    (project / THRESHOLDS).write_text(yaml.safe_dump({"schema": 1, "tests": {SERVED: kept}}))
    with BurstServer() as server:
        out = openai_run(project, server, "--llmperf-update-thresholds")
    assert "Traceback" not in out.stdout + out.stderr
    (test,) = open_run("latest", project / "results").tests
    assert test.metric("tpot_ms.p90") == 0.0 and test.metric("output_tok_per_s")
    assert test.unreliable["tpot_ms.p90"] == "0 ms: the tokens were not timed one by one"
    written = bounds(project)[SERVED]
    assert written["tpot_ms.p90"] == {"max": 50}  # as it was: no bound from 0 ms
    assert written["output_tok_per_s"]["min"] > 1  # rewritten from a reliable number
    assert (
        f"WARNING: thresholds not updated: {project / THRESHOLDS}: {SERVED}: tpot_ms.p90: no bound "
        "written: 0 ms: the tokens were not timed one by one"
    ) in out.stdout, out.stdout[-3000:]


def test_update_writes_no_timing_bound_from_a_client_bound_measurement(tmp_path: Path) -> None:
    """A client-bound test's timings describe the client: no bound is made of them; its
    counts and accuracy are still bounds."""
    measured = {
        "requests": 8,
        "failures": 0,
        "failure_rate": 0.0,
        "output_tok_per_s": 900.0,
        "ttft_ms.p90": 3.0,
        "tpot_ms.p90": 0.0,
        "client_bound": 1.0,
        "loop_lag_ms_max": 40.0,
    }
    path = tmp_path / "cpu" / "openai.yaml"
    report = update_thresholds(
        path,
        {"t": measured},
        0.25,
        ("output_tok_per_s", "ttft_ms.p90", "tpot_ms.p90", "failure_rate", "requests"),
    )
    assert yaml.safe_load(path.read_text())["tests"] == {
        "t": {"failure_rate": {"max": 0}, "requests": {"min": 6}}
    }
    assert sorted(line.split(": ")[1] for line in report.refused) == [
        "output_tok_per_s",
        "tpot_ms.p90",
        "ttft_ms.p90",
    ]
    assert any("client-bound" in line for line in report.refused)
    assert "0 ms" in next(line for line in report.refused if "tpot_ms.p90" in line)


# --- concurrent updates ------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from pytest_llmperf.thresholds.update import update_thresholds

    path, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    Path(sys.argv[4]).write_text("")  # ready
    while not Path(sys.argv[5]).exists():  # go, both at once
        time.sleep(0.001)
    for i in range(count):
        measured = {"requests": 8, "failures": 0, "output_tok_per_s": 100.0 + i}
        update_thresholds(path, {f"{name}{i}": measured}, 0.25, ("output_tok_per_s",))
    """
)


def test_two_processes_updating_one_file_keep_every_bound(tmp_path: Path) -> None:
    """Before: read, merge and write were not serialised, so one process's write replaced
    a file the other had just written: bounds were lost, both runs said "updated"."""
    path = tmp_path / "thresholds" / "cpu" / "hf.yaml"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(path),
                name,
                "40",
                str(tmp_path / name),
                str(tmp_path / "go"),
            ],
            env=env,
        )
        for name in ("a", "b")
    ]
    while not all((tmp_path / name).exists() for name in ("a", "b")):
        assert all(w.poll() is None for w in writers)
    (tmp_path / "go").write_text("")
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    tests = yaml.safe_load(path.read_text())["tests"]
    assert sorted(tests) == sorted(f"{n}{i}" for n in "ab" for i in range(40))
    assert not [p.name for p in path.parent.iterdir() if p.name != "hf.yaml"]  # no lock file


BARRIER = """
import time
from pathlib import Path
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    # Both runs reach their end, then update the thresholds file at the same moment.
    me = Path(session.config.getoption("--llmperf-results-dir")).name
    Path(f"../{me}.done").write_text("")
    deadline = time.monotonic() + 120
    while len(list(Path("..").glob("*.done"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
"""


def test_two_runs_updating_one_thresholds_file_at_once_keep_both_runs_bounds(
    tmp_path: Path,
) -> None:
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project", SUITE)
    (project / "conftest.py").write_text(BARRIER)
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "test_suite.py",
        "-p",
        "no:cacheprovider",
        "--gpus",
        "cpu",
    ]
    runs = [
        subprocess.Popen(
            [*argv, "--llmperf-results-dir", name, "--llmperf-update-thresholds", "-k", selection],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, selection in (("one", "decode"), ("two", "latency"))
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    for output in outputs:
        assert "thresholds updated: " in output
    tests = yaml.safe_load((project / "thresholds" / "cpu" / "hf.yaml").read_text())["tests"]
    assert sorted(tests) == [
        "test_suite.py::test_decode[batch1]",
        "test_suite.py::test_decode[batch4]",
        "test_suite.py::test_latency",
    ]


# --- baselines ---------------------------------------------------------------------------

FAILS_BEFORE_MEASURING = """
from dataclasses import dataclass
from pytest_llmperf import SyntheticWorkload

@dataclass(frozen=True)
class Broken:
    '''A workload that cannot build its requests: the run stops before measuring.'''
    def build(self, tokenizer):
        raise RuntimeError("no requests today")
    def with_overrides(self, settings):
        return self
    def describe(self):
        return {"kind": "broken"}

def test_latency(llmperf):
    llmperf.measure(workload=Broken(), rounds=1)
"""


def test_a_run_that_measured_nothing_never_becomes_latest(tmp_path: Path) -> None:
    """Before: the failed run's folder (run.json, no test) was `latest`, and
    `--llmperf-compare latest` judged nothing and passed."""
    project = make_project(tmp_path, SUITE)
    assert run_project(project, "-k", "latency").returncode == 0
    (measured,) = (project / "results").iterdir()
    (project / "test_suite.py").write_text(FAILS_BEFORE_MEASURING)
    failed = run_project(project)
    assert failed.returncode == 1 and "no requests today" in failed.stdout
    empty = [p for p in (project / "results").iterdir() if p != measured]
    assert len(empty) == 1 and not open_run(empty[0]).tests  # the run that measured nothing
    assert open_run("latest", project / "results").path == measured
    assert open_run("latest", project / "results", baseline=True).path == measured
    (project / "test_suite.py").write_text(SUITE)
    out = run_project(project, "-k", "latency", "--llmperf-compare", "latest")
    assert out.returncode == 0, out.stdout[-3000:]
    newest = find_runs(project / "results")[-1].path
    (test,) = open_run(newest).tests
    assert test.baseline is not None and test.baseline.run_id == measured.name
    assert test.baseline.found and test.baseline.judged  # it judged something
    # Named outright, the empty run is refused: it has nothing to regress against.
    out = run_project(project, "--llmperf-compare", str(empty[0]))
    assert out.returncode == pytest.ExitCode.USAGE_ERROR
    assert "has no measured tests" in out.stderr and "Traceback" not in out.stderr


def test_a_zero_latency_baseline_is_not_judged_and_the_run_says_so(tmp_path: Path) -> None:
    """Before: a baseline TPOT of 0 (tokens in one burst) made every later TPOT REGRESSED."""
    project = make_project(tmp_path, OPENAI_SUITE)
    with BurstServer() as server:
        assert openai_run(project, server).returncode == 0
    (burst,) = (project / "results").iterdir()
    assert open_run(burst).tests[0].metric("tpot_ms.p90") == 0.0
    # Tokens 1 ms apart: the other timings move too, and are let move (the burst server
    # answered faster); TPOT rose from 0 ms, which no relative tolerance allows.
    with InstrumentServer(Script(delays_s=[0.001] * 10)) as server:
        out = openai_run(
            project,
            server,
            *("--llmperf-compare", str(burst)),
            # Absolute amounts: a rise of up to 1 s, a fall of up to 1e9 per second.
            *("--llmperf-tolerance", "ttft_ms.*:+1000", "--llmperf-tolerance", "e2e_ms.*:+1000"),
            *("--llmperf-tolerance", "*_per_s:-1000000000"),
        )
    assert out.returncode == 0, out.stdout[-3000:]
    assert "REGRESSED" not in out.stdout
    assert (
        "note: test_suite.py::test_served: baseline "
        f"{burst.name}: not judged: tpot_ms.p50, tpot_ms.p90: baseline value unreliable: "
        "0 ms: the tokens were not timed one by one"
    ) in out.stdout, out.stdout[-3000:]
    newest = find_runs(project / "results")[-1].path
    (test,) = open_run(newest).tests
    assert test.baseline is not None and test.baseline.passed
    judged = {j.metric: j for j in test.baseline.judged}
    assert judged["tpot_ms.p90"].verdict == "unreliable"
    assert judged["tpot_ms.p90"].note is not None and "0 ms" in judged["tpot_ms.p90"].note
    assert judged["failure_rate"].verdict == "unchanged"  # the rest is judged as before


def test_llmperf_compare_of_two_engines_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: hf against llama.cpp read "+1104% improved" without a word about engines."""
    project = make_project(tmp_path, SUITE)
    for engine in ("hf", "llamacpp"):
        out = run_project(project, "-k", "latency", "--engine", engine)
        assert out.returncode == 0, out.stdout[-3000:]
    hf, llamacpp = (run.path for run in find_runs(project / "results"))
    assert main(["compare", str(hf), str(llamacpp)]) in (0, 1)
    printed = capsys.readouterr().out
    assert f"base {hf.name}: engine hf, model tiny, hardware cpu" in printed
    assert f"new  {llamacpp.name}: engine llamacpp, model tiny, hardware cpu" in printed
    assert "WARNING: the runs differ in engine: hf vs llamacpp" in printed
    assert main(["compare", str(hf), str(hf)]) == 0
    assert "WARNING" not in capsys.readouterr().out
    # In pytest, such a baseline is refused unless the difference is meant.
    out = run_project(project, "-k", "latency", "--llmperf-compare", str(llamacpp))
    assert out.returncode == pytest.ExitCode.USAGE_ERROR
    assert "engine: llamacpp vs hf" in out.stderr and "--llmperf-allow-mismatch" in out.stderr
    out = run_project(
        project, "-k", "latency", "--llmperf-compare", str(llamacpp), "--llmperf-allow-mismatch"
    )
    assert out.returncode in (0, 1) and "Traceback" not in out.stdout
    assert "differs from this run (engine: llamacpp vs hf" in out.stdout


# --- files the CLI writes -------------------------------------------------------------------


def test_rebuild_force_keeps_a_finished_runs_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `llmperf rebuild --force` on a finished run marked it interrupted."""
    project = make_project(tmp_path, SUITE)
    assert run_project(project, "-k", "latency").returncode == 0
    (run_dir,) = (project / "results").iterdir()
    before = json.loads((run_dir / "summary.json").read_text())
    assert main(["rebuild", str(run_dir), "--force"]) == 0
    after = json.loads((run_dir / "summary.json").read_text())
    assert after == before
    assert main(["list", "--results-dir", str(project / "results")]) == 0
    assert "finished" in capsys.readouterr().out


def test_report_writes_over_its_own_report_only(tmp_path: Path) -> None:
    """Before: `llmperf report -o pyproject.toml` (or a run's summary.json) wrote over it."""
    project = make_project(tmp_path, SUITE)
    assert run_project(project, "-k", "latency").returncode == 0
    (run_dir,) = (project / "results").iterdir()
    out = project / "report.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    out.write_text(out.read_text() + "<!-- an older report -->")
    assert main(["report", str(run_dir), "-o", str(out)]) == 0  # its own: written over
    assert "an older report" not in out.read_text()
    mine = project / "pyproject.toml"
    mine.write_text("[project]\nname = 'mine'\n")
    assert main(["report", str(run_dir), "-o", str(mine)]) == 2
    assert mine.read_text() == "[project]\nname = 'mine'\n"
    assert main(["report", str(run_dir), "-o", str(mine), "--force"]) == 0
    assert "pytest-llmperf report" in mine.read_text()
    summary = (run_dir / "summary.json").read_bytes()
    for target in (run_dir / "summary.json", run_dir / "report.html"):
        assert main(["report", str(run_dir), "-o", str(target), "--force"]) == 2
    assert (run_dir / "summary.json").read_bytes() == summary
    assert not (run_dir / "report.html").exists()
