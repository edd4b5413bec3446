"""The bad-input catalogue, part two: the Python API, and servers that misbehave.

Arguments of `llmperf.measure()`, `llmperf.evaluate_choices()`, the workloads, tasks,
`Arrivals`, `SLO` and grids are checked where they are given, before any engine starts. One
given while pytest collects (a grid at module level, a marker) ends the run as a usage error
(exit 4); one given while a test runs fails that test. Either way the message names the
line, the call, the argument and the value, with no traceback, no engine starts (no run
folder appears and the log never says "starting engine"), and a results folder that holds a
previous run is left exactly as it was.

A test passes only on evidence (`pytest_llmperf.measure.evidence`): against a real HTTP
server that answers 404 or 500, sends errors in its stream, cuts streams short or hangs
past `--llmperf-request-timeout`, every test fails naming the reason, after its records
were written; it passes only where it says it allows those failures (an argument, a marker,
its thresholds file).

The rows that fail a test run as the tests of one child pytest run per table; each row reads
its own outcome, message and captured log from the run's JUnit XML. RELIABILITY.md ("Bad
input: the Python API" and "No silent passes") lists the classes these rows cover.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp import web

from pytest_llmperf import DatasetWorkload, GenerationTask
from pytest_llmperf.errors import ArgumentError
from pytest_llmperf.suite.workload import DatasetError
from tests.instrument_server import InstrumentServer, Script
from tests.test_bad_input import (
    PREVIOUS_RUN,
    assert_refused,
    hashes,
    project_with_previous_run,
    pytest_in,
)

REPO = Path(__file__).resolve().parent.parent
CHOICES = REPO / "suites" / "data" / "sums_choice.jsonl"
GENERATION = REPO / "suites" / "data" / "sums_generation.jsonl"
#: The message of a test that failed on a usage error is the message alone.
TRACEBACK = re.compile(r"Traceback|^E\s|^\S+\.py:\d+: |^\s*def test_", re.MULTILINE)


@dataclass
class Case:
    """One test of a child run, as its JUnit XML reports it."""

    outcome: str  # passed, failed, error, skipped
    message: str
    log: str
    seconds: float


def run_with_junit(
    root: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Case]]:
    """`pytest ARGS` in `root` (CPU, results in results/), each test's outcome by name."""
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--gpus", "cpu"]
    argv += ["--junitxml=junit.xml", "-o", "junit_logging=all", "--log-level=INFO"]
    out = subprocess.run(
        [*argv, *args], cwd=root, capture_output=True, text=True, timeout=600, check=False
    )
    cases: dict[str, Case] = {}
    for case in ET.parse(root / "junit.xml").iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = found.text or found.get("message", "")
        log = "".join(e.text or "" for e in case.iter() if e.tag in ("system-out", "system-err"))
        cases[case.get("name", "")] = Case(outcome, message, log, float(case.get("time", 0)))
    return out, cases


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "results").iterdir() if p.name != PREVIOUS_RUN)


# --- arguments given while a test runs: the test fails, no engine starts ------------------

HEADER = f"""
import math
from pathlib import Path
import pytest
from pytest_llmperf import (
    SLO, Arrivals, ChoiceTask, Config, DatasetWorkload, GenerationTask, SyntheticWorkload,
)
from pytest_llmperf.suite.workload import LengthDistribution
W = SyntheticWorkload(num_requests=1, input_tokens=4, output_tokens=2)
CHOICES = Path({str(CHOICES)!r})
GENERATION = Path({str(GENERATION)!r})
ROOT = Path(__file__).resolve().parent.parent
"""

#: (case, one line of a test's body, words its failure must say). The line the body is on
#: is named too, for every ArgumentError (`suite/test_api.py: line N: `).
API_ROWS: list[tuple[str, str, str | tuple[str, ...]]] = [
    # measure(): the workload
    (
        "workload_text",
        'llmperf.measure(workload="64 tokens")',
        "measure(): workload='64 tokens': is not a workload",
    ),
    ("workload_missing", "llmperf.measure()", "measure(): workload=None: is not a workload"),
    (
        "workload_as_config",
        "llmperf.measure(W)",
        (
            "measure(): config=SyntheticWorkload(num_requests=1, ",
            "...: is a workload, not a Config: give it as workload=...",
        ),
    ),
    (
        "config_dict",
        'llmperf.measure({"max_num_seqs": 4}, W)',
        "measure(): config={'max_num_seqs': 4}: must be a Config",
    ),
    (
        "choices_measured",
        "llmperf.measure(workload=ChoiceTask.load(CHOICES))",
        "a ChoiceTask is scored by llmperf.evaluate_choices(task, config)",
    ),
    # measure(): rounds (pytest-benchmark on), the rest
    (
        "rounds_zero",
        "llmperf.measure(workload=W, rounds=0)",
        "measure(): rounds=0: must be at least 1",
    ),
    (
        "rounds_float",
        "llmperf.measure(workload=W, rounds=2.5)",
        "measure(): rounds=2.5: must be a whole number, at least 1",
    ),
    (
        "warmup_text",
        'llmperf.measure(workload=W, warmup_rounds="1")',
        "measure(): warmup_rounds='1': must be a whole number, at least 0",
    ),
    (
        "warmup_negative",
        "llmperf.measure(workload=W, warmup_rounds=-1)",
        "measure(): warmup_rounds=-1: must be at least 0",
    ),
    (
        "label_empty",
        'llmperf.measure(workload=W, label="")',
        "measure(): label='': must be non-empty text",
    ),
    (
        "model_empty",
        'llmperf.measure(workload=W, model="")',
        "measure(): model='': must be non-empty text",
    ),
    (
        "extra_metric_text",
        'llmperf.measure(workload=W, extra_metrics={"x": "fast"})',
        "measure(): extra_metrics['x']='fast': must be a number or None",
    ),
    (
        "arrivals_number",
        "llmperf.measure(workload=W, arrivals=8)",
        "measure(): arrivals=8: must be an Arrivals",
    ),
    (
        "slo_dict",
        'llmperf.measure(workload=W, slo={"ttft_ms": 200})',
        "measure(): slo={'ttft_ms': 200}: must be an SLO",
    ),
    (
        "score_text",
        'llmperf.measure(workload=W, score="exact_match")',
        "measure(): score='exact_match': must be a function",
    ),
    (
        "allowed_rate_over_one",
        "llmperf.measure(workload=W, allowed_failure_rate=1.5)",
        "measure(): allowed_failure_rate=1.5: must be a number from 0 to 1",
    ),
    (
        "allowed_rate_text",
        'llmperf.measure(workload=W, allowed_failure_rate="10%")',
        "measure(): allowed_failure_rate='10%': must be a number from 0 to 1",
    ),
    # workloads
    (
        "input_tokens_negative",
        "SyntheticWorkload(input_tokens=-5)",
        "SyntheticWorkload: input_tokens=-5: must be at least 1",
    ),
    (
        "num_requests_zero",
        "SyntheticWorkload(num_requests=0)",
        "SyntheticWorkload: num_requests=0: must be at least 1",
    ),
    (
        "num_requests_bool",
        "SyntheticWorkload(num_requests=True)",
        "SyntheticWorkload: num_requests=True: must be a whole number",
    ),
    (
        "output_tokens_text",
        'SyntheticWorkload(output_tokens="32")',
        "SyntheticWorkload: output_tokens='32': must be a whole number of at least 1, or a LengthDistribution",
    ),
    (
        "temperature_nan",
        "SyntheticWorkload(temperature=math.nan)",
        "SyntheticWorkload: temperature=nan: must be a number of at least 0",
    ),
    (
        "lengths_reversed",
        'LengthDistribution("uniform", 10, 5)',
        "LengthDistribution: b=5: must be at least 10",
    ),
    (
        "lengths_kind",
        'LengthDistribution("gauss", 10, 5)',
        "LengthDistribution: kind='gauss': must be one of 'uniform', 'normal'",
    ),
    (
        "dataset_missing",
        'DatasetWorkload("missing.jsonl")',
        "DatasetWorkload: path='missing.jsonl': no such file (looked for",
    ),
    (
        "dataset_ambiguous",
        'DatasetWorkload("data.jsonl")',
        "DatasetWorkload: path='data.jsonl': a relative path that names two different files",
    ),
    (
        "dataset_limit_zero",
        'DatasetWorkload(ROOT / "ok.jsonl", limit=0)',
        "DatasetWorkload: limit=0: must be at least 1",
    ),
    (
        "dataset_bad_line",
        'DatasetWorkload(ROOT / "bad.jsonl")',
        "bad.jsonl: line 2: not valid JSON",
    ),
    ("dataset_folder", 'DatasetWorkload(ROOT / "a_folder")', "a_folder: cannot read dataset"),
    # tasks
    (
        "choices_from_text",
        'llmperf.evaluate_choices("sums_choice.jsonl")',
        "evaluate_choices(): task='sums_choice.jsonl': give the questions as ChoiceTask.load(path)",
    ),
    (
        "choices_generation",
        "llmperf.evaluate_choices(GenerationTask.load(GENERATION))",
        "a GenerationTask is measured by llmperf.measure(config, task, score=task.score)",
    ),
    (
        "choices_none",
        'llmperf.evaluate_choices(ChoiceTask(Path("x")))',
        "has no questions to score",
    ),
    (
        "choices_label",
        "llmperf.evaluate_choices(ChoiceTask.load(CHOICES), label=3)",
        "evaluate_choices(): label=3: must be non-empty text",
    ),
    (
        "generation_max_tokens",
        "GenerationTask.load(GENERATION, max_tokens=0)",
        "GenerationTask.load: max_tokens=0: must be at least 1",
    ),
    (
        "generation_repeat",
        'GenerationTask.load(GENERATION, repeat="2")',
        "GenerationTask.load: repeat='2': must be a whole number",
    ),
    # load shapes
    ("arrivals_text", 'Arrivals("8")', "Arrivals: rate_per_s='8': must be a positive number"),
    (
        "arrivals_infinite",
        "Arrivals(math.inf)",
        "Arrivals: rate_per_s=inf: must be a positive number (finite)",
    ),
    (
        "arrivals_kind",
        'Arrivals(8, distribution="burst")',
        "Arrivals: distribution='burst': must be one of 'poisson', 'constant'",
    ),
    ("slo_negative", "SLO(ttft_ms=-1)", "SLO: ttft_ms=-1: must be a positive number"),
    ("slo_text", 'SLO(tpot_ms="50")', "SLO: tpot_ms='50': must be a positive number"),
    # a configuration made in the test
    (
        "config_marks_text",
        'Config.make("a", {"max_num_seqs": 1}, marks="smoke")',
        "Config.make: marks='smoke': must be a list of marker names",
    ),
]
#: Rows whose error comes from the dataset reader, which names the file (not the test line).
FROM_FILE = {"dataset_bad_line", "dataset_folder"}


def api_module() -> tuple[str, dict[str, int]]:
    """The test module of `API_ROWS`, and the line of each row's body."""
    lines = textwrap.dedent(HEADER).splitlines()
    at: dict[str, int] = {}
    for case, body, _ in API_ROWS:
        lines += ["", "", f"def test_{case}(llmperf):", f"    {body}"]
        at[case] = len(lines)
    return "\n".join(lines) + "\n", at


@pytest.fixture(scope="module")
def api_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, int], dict[str, Case]]:
    root = project_with_previous_run(tmp_path_factory.mktemp("api"))
    (root / "suite").mkdir()
    source, at = api_module()
    (root / "suite" / "test_api.py").write_text(source)
    ok = '{"custom_id": "a", "prompt": "hi"}\n'
    (root / "data.jsonl").write_text(ok)  # one beside the working folder ...
    (root / "suite" / "data.jsonl").write_text(
        ok + ok.replace('"a"', '"b"')
    )  # ... one beside the test
    (root / "ok.jsonl").write_text(ok)
    before = hashes(root / "results")
    out, cases = run_with_junit(root, "suite/test_api.py")
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-3000:] + out.stderr[-2000:]
    assert "INTERNALERROR" not in out.stdout + out.stderr
    assert hashes(root / "results") == before  # the previous run untouched ...
    assert run_dirs(root) == []  # ... and no engine started: it would have written run.json
    return root, at, cases


@pytest.mark.parametrize(
    "case, words", [(c, w) for c, _, w in API_ROWS], ids=[c for c, _, _ in API_ROWS]
)
def test_api_argument(
    api_run: tuple[Path, dict[str, int], dict[str, Case]],
    case: str,
    words: str | tuple[str, ...],
) -> None:
    _, at, cases = api_run
    result = cases[f"test_{case}"]
    assert result.outcome == "failed", result
    for word in (words,) if isinstance(words, str) else words:
        assert word in result.message, result.message
    if case not in FROM_FILE:
        assert result.message.startswith(f"suite/test_api.py: line {at[case]}: "), result.message
    assert not TRACEBACK.search(result.message), result.message
    assert "starting engine" not in result.log


def test_an_ambiguous_dataset_path_names_both_files(
    api_run: tuple[Path, dict[str, int], dict[str, Case]],
) -> None:
    root, _, cases = api_run
    message = cases["test_dataset_ambiguous"].message
    assert f"{root / 'data.jsonl'} (from the working folder)" in message
    assert f"{root / 'suite' / 'data.jsonl'} (beside suite/test_api.py)" in message
    assert "Path(__file__).parent / 'data.jsonl'" in message


# --- arguments given while pytest collects: the run stops with a usage error ---------------

#: (case, a test module, words the usage error must say). Each names the module's line.
COLLECTION_ROWS: list[tuple[str, str, str]] = [
    (
        "grid_axis_scalar",
        "from pytest_llmperf import Grid, grid_params\nG = Grid.product({'max_num_seqs': 4})\n",
        "test_suite.py: line 2: Grid.product: axes['max_num_seqs']=4: must be a list of values",
    ),
    (
        "grid_axis_text",
        "from pytest_llmperf import Grid\nG = Grid.product({'max_num_seqs': '14'})\n",
        "test_suite.py: line 2: Grid.product: axes['max_num_seqs']='14': must be a list of values",
    ),
    (
        "grid_axis_empty",
        "from pytest_llmperf import Grid\nG = Grid.product({'max_num_seqs': []})\n",
        "test_suite.py: line 2: Grid.product: axes['max_num_seqs']=[]: must not be empty",
    ),
    (
        "grid_axes_list",
        "from pytest_llmperf import Grid\nG = Grid.product(['max_num_seqs'])\n",
        "test_suite.py: line 2: Grid.product: axes=['max_num_seqs']: must map setting names",
    ),
    (
        "grid_of_mapping",
        "from pytest_llmperf import Grid\nG = Grid.of([{'max_num_seqs': 1}])\n",
        "test_suite.py: line 2: Grid.of: configs[0]={'max_num_seqs': 1}: is not a Config",
    ),
    (
        "config_no_name",
        "from pytest_llmperf import Config\nC = Config.make('', {})\n",
        "test_suite.py: line 2: Config.make: name='': must be non-empty text",
    ),
    (
        "grid_params_none",
        "from pytest_llmperf import grid_params\nP = grid_params(None)\n",
        "test_suite.py: line 2: grid_params: source=None: must be a Grid or a YAML grid file's path",
    ),
    (
        "workload_at_import",
        "from pytest_llmperf import SyntheticWorkload\nW = SyntheticWorkload(input_tokens=-5)\n",
        "test_suite.py: line 2: SyntheticWorkload: input_tokens=-5: must be at least 1",
    ),
    (
        "marker_rate_text",
        "import pytest\n@pytest.mark.llmperf_allow_failures('lots')\ndef test_m(llmperf):\n    pass\n",
        "test_suite.py::test_m: marker llmperf_allow_failures('lots'): the rate must be a number from 0 to 1",
    ),
    (
        "marker_rate_over_one",
        "import pytest\n@pytest.mark.llmperf_allow_failures(2)\ndef test_m(llmperf):\n    pass\n",
        "test_suite.py::test_m: marker llmperf_allow_failures(2): the rate must be",
    ),
    (
        "marker_no_rate",
        "import pytest\n@pytest.mark.llmperf_allow_failures\ndef test_m(llmperf):\n    pass\n",
        "test_suite.py::test_m: marker llmperf_allow_failures(): takes one rate",
    ),
]


@pytest.mark.parametrize(
    "suite, words", [(s, w) for _, s, w in COLLECTION_ROWS], ids=[c for c, _, _ in COLLECTION_ROWS]
)
def test_collection_argument(tmp_path: Path, suite: str, words: str) -> None:
    project = project_with_previous_run(tmp_path, suite)
    before = hashes(project / "results")
    assert_refused(pytest_in(project), pytest.ExitCode.USAGE_ERROR, (words,))
    assert hashes(project / "results") == before


def test_rounds_zero_without_pytest_benchmark_is_a_usage_error_too(tmp_path: Path) -> None:
    """Under xdist pytest-benchmark is off and the rounds run in our loop, where zero rounds
    measured nothing and passed."""
    suite = "from pytest_llmperf import SyntheticWorkload\n\ndef test_r(llmperf):\n"
    suite += "    llmperf.measure(workload=SyntheticWorkload(num_requests=1), rounds=0)\n"
    project = project_with_previous_run(tmp_path, suite)
    before = hashes(project / "results")
    out, cases = run_with_junit(project, "test_suite.py", "-n", "2")
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-3000:]
    result = cases["test_r"]
    assert result.message == "test_suite.py: line 4: measure(): rounds=0: must be at least 1"
    assert "starting engine" not in result.log
    assert hashes(project / "results") == before and run_dirs(project) == []


def test_bad_markers_under_xdist_fail_their_tests_with_the_message(tmp_path: Path) -> None:
    """An xdist worker cannot stop the run with a usage error (xdist took it for a crash of
    the test and ended with INTERNALERROR): there each such test fails with the message."""
    suite = textwrap.dedent(
        """
        import pytest
        @pytest.mark.llmperf_allow_failures("lots")
        def test_allow(llmperf):
            pass
        @pytest.mark.gpu("two")
        def test_gpu(llmperf):
            pass
        @pytest.mark.llmperf_timeout("soon")
        def test_bound(llmperf):
            pass
        def test_fine():
            pass
        """
    )
    project = project_with_previous_run(tmp_path, suite)
    out, cases = run_with_junit(project, "test_suite.py", "-n", "2")
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-3000:]
    assert "INTERNALERROR" not in out.stdout + out.stderr
    assert cases["test_fine"].outcome == "passed"
    for test, words in (
        ("test_allow", "marker llmperf_allow_failures('lots'): the rate must be a number"),
        ("test_gpu", "marker gpu('two'): the GPU count must be a positive integer"),
        ("test_bound", "marker llmperf_timeout('soon'): the bound must be a positive number"),
    ):
        assert cases[test].outcome == "error", cases[test]
        assert f"test_suite.py::{test}: {words}" in cases[test].message


# --- servers that misbehave: a test passes only on evidence -------------------------------


class FaultServer(InstrumentServer):
    """Answers each request by its max_tokens (the test's output length): one fault each.

    2: HTTP 404; 3: HTTP 500; 4: an error event in the stream; 5: the stream cut short;
    6: no answer at all; 7: HTTP 503 for odd seeds (half of each round); 8: the stream stops
    half-way and the connection is held; anything else: a normal stream."""

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = body.get("max_tokens")
        if n == 2:
            return web.Response(status=404, text="Not Found")
        if n == 6:
            await asyncio.sleep(3600)  # ended by the server's exit
        if n == 7 and body.get("seed", 0) % 2:
            return web.Response(status=503, text="overloaded, try later")
        self.script = Script(
            delays_s=[0.002] * 4,
            fault={3: "http500", 4: "inband", 5: "cut", 8: "stall"}.get(n),
        )
        return await super()._completions(request)  # reads the body again: aiohttp keeps it


SERVER_SUITE = """
import pytest
from pytest_llmperf import SyntheticWorkload


def measure(llmperf, fault, **kwargs):
    workload = SyntheticWorkload(num_requests=4, input_tokens=4, output_tokens=fault)
    return llmperf.measure(workload=workload, rounds=1, warmup_rounds=0, **kwargs)


def test_answered(llmperf):
    measure(llmperf, 9)

def test_not_found(llmperf):
    measure(llmperf, 2)

def test_server_error(llmperf):
    measure(llmperf, 3)

def test_error_in_stream(llmperf):
    measure(llmperf, 4)

def test_cut_short(llmperf):
    measure(llmperf, 5)

def test_no_answer(llmperf):
    measure(llmperf, 6)

def test_stalled(llmperf):
    measure(llmperf, 8)

def test_half_failing(llmperf):
    measure(llmperf, 7)

def test_half_allowed(llmperf):
    measure(llmperf, 7, allowed_failure_rate=0.5)

def test_half_over_the_allowance(llmperf):
    measure(llmperf, 7, allowed_failure_rate=0.25)

@pytest.mark.llmperf_allow_failures(0.5)
def test_half_marked(llmperf):
    measure(llmperf, 7)

def test_half_bounded_by_thresholds(llmperf):
    measure(llmperf, 7)

@pytest.mark.llmperf_allow_failures(1)
def test_all_failing_marked(llmperf):
    measure(llmperf, 2)


class NoRequests:
    def build(self, tokenizer):
        return []

    def describe(self):
        return {"kind": "none"}

    def with_overrides(self, settings):
        return self


def test_nothing_to_send(llmperf):
    llmperf.measure(workload=NoRequests(), rounds=1, warmup_rounds=0)
"""
THRESHOLDS = """schema: 1
tests:
  test_suite.py::test_half_bounded_by_thresholds:
    failure_rate: {max: 0.5}
"""
TIMEOUT_S = 2
#: (test, outcome, words its failure must say, reason recorded for its failed requests)
SERVER_ROWS: list[tuple[str, str, str, str | None]] = [
    ("test_answered", "passed", "", None),
    (
        "test_not_found",
        "failed",
        "4 of 4 measured requests failed: failure rate 1, allowed 0 (the default)",
        "HTTP 404: Not Found",
    ),
    (
        "test_server_error",
        "failed",
        "4 x HTTP 500: scripted failure (e.g. synthetic-0, synthetic-1, synthetic-2, ...)",
        "HTTP 500: scripted failure",
    ),
    (
        "test_error_in_stream",
        "failed",
        '4 x server error in the stream: {"message": "scripted"}',
        'server error in the stream: {"message": "scripted"}',
    ),
    (
        "test_cut_short",
        "failed",
        "4 x stream ended before the request finished",
        "stream ended before the request finished",
    ),
    (
        "test_no_answer",
        "failed",
        f"4 x request timed out after {TIMEOUT_S} s",
        f"request timed out after {TIMEOUT_S} s",
    ),
    (
        "test_stalled",
        "failed",
        f"4 x request timed out after {TIMEOUT_S} s",
        f"request timed out after {TIMEOUT_S} s",
    ),
    (
        "test_half_failing",
        "failed",
        "2 of 4 measured requests failed: failure rate 0.5, allowed 0 (the default)",
        "HTTP 503: overloaded, try later",
    ),
    ("test_half_allowed", "passed", "", "HTTP 503: overloaded, try later"),
    (
        "test_half_over_the_allowance",
        "failed",
        "failure rate 0.5, allowed 0.25 (measure(allowed_failure_rate=0.25))",
        "HTTP 503: overloaded, try later",
    ),
    ("test_half_marked", "passed", "", "HTTP 503: overloaded, try later"),
    ("test_half_bounded_by_thresholds", "passed", "", "HTTP 503: overloaded, try later"),
    ("test_all_failing_marked", "passed", "", "HTTP 404: Not Found"),
    (
        "test_nothing_to_send",
        "failed",
        "no evidence for test_suite.py::test_nothing_to_send: 0 requests measured: nothing to judge",
        None,
    ),
]
#: Where each passing row's allowance came from, as its record says.
ALLOWED_BY = {
    "test_answered": "default",
    "test_half_allowed": "measure(allowed_failure_rate=0.5)",
    "test_half_marked": "marker llmperf_allow_failures(0.5)",
    "test_half_bounded_by_thresholds": "/thresholds/cpu/openai.yaml: line 4",
    "test_all_failing_marked": "marker llmperf_allow_failures(1)",
}


@pytest.fixture(scope="module")
def server_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Case], dict[str, dict]]:
    root = project_with_previous_run(tmp_path_factory.mktemp("servers"), SERVER_SUITE)
    (root / "thresholds" / "cpu").mkdir(parents=True)
    (root / "thresholds" / "cpu" / "openai.yaml").write_text(THRESHOLDS)
    before = hashes(root / "results" / PREVIOUS_RUN)
    with FaultServer() as server:
        out, cases = run_with_junit(
            root,
            *("test_suite.py", "--engine", "openai", "--base-url", server.base_url),
            *("--llmperf-request-timeout", str(TIMEOUT_S)),
        )
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-3000:] + out.stderr[-2000:]
    assert "INTERNALERROR" not in out.stdout + out.stderr
    assert hashes(root / "results" / PREVIOUS_RUN) == before  # the previous run untouched
    (run,) = run_dirs(root)
    records = {
        r["test_id"].split("::")[-1]: r
        for r in map(json.loads, (run / "tests.jsonl").read_text().splitlines())
    }
    return run, cases, records


@pytest.mark.parametrize(
    "test, outcome, words, reason", SERVER_ROWS, ids=[r[0] for r in SERVER_ROWS]
)
def test_misbehaving_server(
    server_run: tuple[Path, dict[str, Case], dict[str, dict]],
    test: str,
    outcome: str,
    words: str,
    reason: str | None,
) -> None:
    run, cases, records = server_run
    result = cases[test]
    assert result.outcome == outcome, result
    assert words in result.message, result.message
    assert not TRACEBACK.search(result.message), result.message
    # Recorded before it failed: the checks, the failures, and every request.
    record = records[test]
    evidence = record["evidence"]
    assert evidence["passed"] is (outcome == "passed")
    reasons = {group["reason"]: group["count"] for group in evidence["failures"]}
    assert record["metrics"]["failures"] == sum(reasons.values())
    if reason is not None:
        assert reason in reasons, reasons
    rate = next((c for c in evidence["checks"] if c["name"] == "failure_rate"), None)
    if test in ALLOWED_BY:
        assert rate is not None and rate["ok"] is True
        assert rate["source"].endswith(ALLOWED_BY[test]), rate  # thresholds: the file's path
    requests = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    mine = [r for r in requests if r["test_id"].endswith("::" + test)]
    assert len(mine) == record["metrics"]["requests"]
    assert sum(r["error"] is not None for r in mine) == record["metrics"]["failures"]


def test_timed_out_requests_end_at_the_request_timeout(
    server_run: tuple[Path, dict[str, Case], dict[str, dict]],
) -> None:
    """The README's promise: a request past `--llmperf-request-timeout` is a recorded
    failure, and the test fails (here, at the bound, not at the client's default 600 s)."""
    _, cases, records = server_run
    for test in ("test_no_answer", "test_stalled"):
        assert TIMEOUT_S <= cases[test].seconds < TIMEOUT_S + 20, cases[test]
        assert records[test]["metrics"]["failures"] == records[test]["metrics"]["requests"] == 4


def test_the_log_says_when_an_engine_starts(
    server_run: tuple[Path, dict[str, Case], dict[str, dict]],
) -> None:
    """What the argument rows rely on: had an engine started, its test's log would say so."""
    _, cases, _ = server_run
    assert "starting engine 'openai'" in cases["test_answered"].log


# --- the dataset path rule ------------------------------------------------------------------


def module_at(path: Path, source: str) -> ModuleType:
    """Import `source` as a module whose file is `path` (as a test module would be)."""
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(f"made_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_relative_dataset_path_is_looked_up_from_the_working_folder_and_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    maker = module_at(
        suite / "maker.py",
        """
        from pytest_llmperf import DatasetWorkload, GenerationTask
        def workload(path):
            return DatasetWorkload(path)
        def task(path):
            return GenerationTask.load(path)
        """,
    )
    monkeypatch.chdir(tmp_path)
    line = '{"custom_id": "a", "prompt": "1 + 1 =", "reference": "2"}\n'
    (suite / "data.jsonl").write_text(line)
    # Only beside the module: that file, whatever the working folder.
    assert maker.workload("data.jsonl").path == suite / "data.jsonl"
    assert maker.task("data.jsonl").path == suite / "data.jsonl"
    # Both, and different: ambiguous, both named.
    (tmp_path / "data.jsonl").write_text(line + line.replace('"a"', '"b"'))
    with pytest.raises(ArgumentError) as info:
        maker.workload("data.jsonl")
    assert f"{tmp_path / 'data.jsonl'} (from the working folder)" in str(info.value)
    assert f"{suite / 'data.jsonl'} (beside suite/maker.py)" in str(info.value)
    with pytest.raises(
        ArgumentError, match=r"GenerationTask\.load: path='data\.jsonl': a relative"
    ):
        maker.task("data.jsonl")
    # Only in the working folder: that one.
    (suite / "data.jsonl").unlink()
    workload = maker.workload("data.jsonl")
    assert workload.path == tmp_path / "data.jsonl" and len(workload.items()) == 2
    # The working folder is the module's: one place, one file.
    monkeypatch.chdir(suite)
    (suite / "data.jsonl").write_text(line)
    assert maker.workload("data.jsonl").path == suite / "data.jsonl"


def test_a_dataset_workload_reads_its_file_when_made(tmp_path: Path) -> None:
    """So that a bad line stops the test before the engine starts (a grid's overrides make
    a copy, which reads it again: also before the engine starts)."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"custom_id": "a", "prompt": "hi", "max_tokens": 3}\n')
    workload = DatasetWorkload(path)
    assert workload.with_overrides({"max_new_tokens": 5}).default_max_tokens == 5
    path.write_text("broken\n")
    assert [r.custom_id for r in workload.build(tokenizer=None)] == ["a"]  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=r"d\.jsonl: line 1: not valid JSON"):
        workload.with_overrides({"max_new_tokens": 5})
    with pytest.raises(ArgumentError, match=r"GenerationTask\.load: path=5: must be a file path"):
        GenerationTask.load(5)  # type: ignore[arg-type]
