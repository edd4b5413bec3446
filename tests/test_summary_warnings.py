"""Issue 24, point 1: the terminal summary says what the tool knows.

Before: a client-bound run, a test whose requests partly failed and a run on shared cores
said nothing on the console; the thresholds column said `none` without the file it looked
for, `MISS (2)` counted bounds (now `MISS 1/3`), an update run showed `MISS` for a test that passed, a test
that had regressed against the baseline showed `ok (2)`, and a dry run printed `sss` unless
`-rs` was given. Real runs: hf on the tiny model, and the `openai` client against servers on
127.0.0.1 (`tests/instrument_server.py`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from aiohttp import web

from pytest_llmperf.results.runs import open_run
from tests.instrument_server import InstrumentServer
from tests.suite_run import make_project, run_project

# The client's event loop is starved by a thread that holds the GIL 50 ms at a time: the
# load client, not the server, is the bottleneck, as on a machine too busy for the client.
STARVED_CLIENT = """
import sys
import threading

import pytest
from pytest_llmperf import SyntheticWorkload


@pytest.fixture
def busy_process():
    stop = threading.Event()

    def hog():
        while not stop.is_set():
            sum(range(1000))

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    thread = threading.Thread(target=hog, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()
    sys.setswitchinterval(before)


def test_served(llmperf, busy_process):
    llmperf.measure(workload=SyntheticWorkload(num_requests=4, input_tokens=4, output_tokens=10),
                    rounds=2, warmup_rounds=0)
"""

FLAKY_SERVED = """
import pytest
from pytest_llmperf import SyntheticWorkload


@pytest.mark.llmperf_allow_failures(0.5)
def test_flaky(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=4, input_tokens=4, output_tokens=5),
                    rounds=2, warmup_rounds=0)
"""

HF_SUITE = """
from pytest_llmperf import SyntheticWorkload


def test_one(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4),
                    rounds=2, warmup_rounds=1)


def test_two(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4),
                    rounds=2, warmup_rounds=1)
"""
# Enough rounds on each side for a judgement on samples to be confident (`results.baseline`).
BASELINE_SUITE = HF_SUITE.replace("rounds=2", "rounds=8")
HF_FILE = Path("thresholds") / "cpu" / "hf.yaml"


class EveryOtherFails(InstrumentServer):
    """Answers every second request with HTTP 500, streams the others."""

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self.count = getattr(self, "count", 0) + 1
        if self.count % 2 == 0:
            await request.json()
            return web.Response(status=500, text="scripted failure")
        return await super()._completions(request)


def summary_row(stdout: str, test: str) -> str:
    """The summary table's row of `test`."""
    start = stdout.index("llmperf summary")
    return next(line for line in stdout[start:].splitlines() if line.startswith(test))


def test_a_client_bound_test_is_named_and_the_missing_thresholds_file_too(tmp_path: Path) -> None:
    project = make_project(tmp_path, STARVED_CLIENT)
    with InstrumentServer() as server:
        out = run_project(project, "--engine", "openai", "--base-url", server.base_url)
    assert out.returncode == 0, out.stdout[-3000:]
    (test,) = open_run("latest", project / "results").tests
    assert test.metric("client_bound") == 1.0, test.metrics_flat
    assert (
        "warning: client-bound: 1 of 1 tests (test_suite.py::test_served): the load client, not "
        "the server, was the bottleneck"
    ) in out.stdout, out.stdout[-3000:]
    row = summary_row(out.stdout, "test_suite.py::test_served")
    assert row.endswith("none: no thresholds/cpu/openai.yaml"), row


def test_failed_requests_are_a_warning_under_the_table(tmp_path: Path) -> None:
    project = make_project(tmp_path, FLAKY_SERVED)
    with EveryOtherFails() as server:
        out = run_project(project, "--engine", "openai", "--base-url", server.base_url)
    assert out.returncode == 0, out.stdout[-3000:]
    assert (
        "warning: test_suite.py::test_flaky: 4 of 8 requests failed (50.0%): its numbers are of "
        "the requests that succeeded"
    ) in out.stdout, out.stdout[-3000:]


def write_bounds(project: Path, bounds: dict[str, dict[str, dict[str, float]]]) -> None:
    (project / HF_FILE).parent.mkdir(parents=True, exist_ok=True)
    (project / HF_FILE).write_text(yaml.safe_dump({"schema": 1, "tests": bounds}))


def test_the_thresholds_column_counts_misses_and_names_the_file(tmp_path: Path) -> None:
    project = make_project(tmp_path, HF_SUITE)
    write_bounds(
        project,
        {
            "test_suite.py::test_one": {
                "output_tok_per_s": {"min": 1e9},  # missed
                "requests": {"min": 1},
                "failure_rate": {"max": 0},
            },
        },
    )
    out = run_project(project)
    assert out.returncode == 1, out.stdout[-3000:]
    assert summary_row(out.stdout, "test_suite.py::test_one").endswith(
        "MISS 1/3: thresholds/cpu/hf.yaml"
    )
    assert summary_row(out.stdout, "test_suite.py::test_two").endswith(
        "none in thresholds/cpu/hf.yaml"
    )
    # An update run rewrites the bounds: what it wrote, not the miss against the old ones.
    out = run_project(project, "--llmperf-update-thresholds")
    assert out.returncode == 0, out.stdout[-3000:]
    for test in ("test_one", "test_two"):
        row = summary_row(out.stdout, f"test_suite.py::{test}")
        assert row.endswith("written to thresholds/cpu/hf.yaml"), row
    assert "MISS" not in out.stdout[out.stdout.index("llmperf summary") :]


def test_a_test_that_regressed_against_the_baseline_never_shows_ok(tmp_path: Path) -> None:
    project = make_project(tmp_path, BASELINE_SUITE)
    write_bounds(project, {"test_suite.py::*": {"requests": {"min": 1}}})
    assert run_project(project).returncode == 0
    (base,) = (project / "results").iterdir()
    # The baseline says test_one was a thousand times faster: this run regressed.
    summary = json.loads((base / "summary.json").read_text())
    for test in summary["tests"]:
        if test["test_id"].endswith("test_one"):
            test["metrics_flat"]["output_tok_per_s"] *= 1000
            samples = test["samples"]["output_tok_per_s"]
            test["samples"]["output_tok_per_s"] = [v * 1000 for v in samples]
    (base / "summary.json").write_text(json.dumps(summary))
    # Only a thousandfold slowdown is a regression here, not the machine's noise.
    tolerances = ("--llmperf-tolerance=output_tok_per_s:90%", "--llmperf-tolerance=*:99%")
    out = run_project(project, f"--llmperf-compare={base}", *tolerances)
    assert out.returncode == 1, out.stdout[-3000:]
    regressed = summary_row(out.stdout, "test_suite.py::test_one")
    # The thresholds column says its bound was met; the baseline column, the regression.
    assert re.search(r"  ok \(1\): thresholds/cpu/hf.yaml  REGRESSED 1/\d+$", regressed), regressed
    assert re.search(
        r" (ok \(\d+\)|inconclusive \d+/\d+)$", summary_row(out.stdout, "test_suite.py::test_two")
    )


def test_a_dry_run_prints_what_each_test_would_send_without_rs(tmp_path: Path) -> None:
    project = make_project(tmp_path, HF_SUITE)
    out = run_project(project, "--llmperf-dry-run")
    assert out.returncode == 0, out.stdout[-3000:]
    lines = out.stdout.splitlines()
    start = lines.index("dry run: what each test would send (no engine started)")
    assert lines[start + 1 : start + 3] == [
        "  test_suite.py::test_one: 2 requests, 16 prompt tokens, max_tokens up to 4; engine "
        "'hf' not started",
        "  test_suite.py::test_two: 2 requests, 16 prompt tokens, max_tokens up to 4; engine "
        "'hf' not started",
    ]
