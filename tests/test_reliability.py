"""Nothing lost, nothing leaked: a run that is killed, interrupted, hung or failing.

Each test starts pytest on a small suite in a child process of its own session, with
an engine that has processes of its own (the hf engine isolated in a child, or
llama-cpp-python's server as `llamacpp-server`), injects a real fault (a signal to
pytest, SIGSTOP to the engine's process group), and checks what is left: the records,
the summary, and the process tree. Descendants are collected (psutil) while the run is
going, before the fault, since a killed parent's children are re-parented and no
longer found under it. The suite's temp folder is the test's own (TMPDIR), so that what
the run leaves there is checked too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from pytest_llmperf import cli
from pytest_llmperf.results.readback.rebuild import is_cut_short
from pytest_llmperf.results.runs import open_run

SUITE = textwrap.dedent(
    """
    import os
    import signal
    from dataclasses import dataclass
    from pathlib import Path

    import pytest
    from pytest_llmperf import Config, SyntheticWorkload

    # For both engines these tests run on; server_binary (llamacpp-server's: llama-cpp-python's
    # server) is not applied on hf, and says so.
    ENGINES = ("hf", "llamacpp-server")
    CONFIG = Config.make("c", {"server_binary": "python", "max_model_len": 512}, engines=ENGINES)
    OTHER = Config.make("other", {"server_binary": "python", "max_model_len": 384}, engines=ENGINES)
    QUICK = SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4)
    LONG = SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=256)

    @dataclass(frozen=True)
    class Announced:
        '''The workload; once its requests are built, a file says they are being sent,
        and with `stop`, the engine's process group is stopped (SIGSTOP): hung.'''
        inner: SyntheticWorkload
        stop: bool = False
        flag: str = "sending"

        def build(self, tokenizer):
            requests = self.inner.build(tokenizer)
            if self.stop:
                os.killpg(int(Path("engine.pgid").read_text()), signal.SIGSTOP)
            Path(self.flag).write_text("")
            return requests

        def with_overrides(self, settings):
            return self

        def describe(self):
            return self.inner.describe()

    @pytest.fixture
    def engine_pgid(llmperf):
        '''Start the engine and write the process group a fault is sent to.'''
        engine, _, _ = llmperf.session.engine_for(llmperf.engine_config(CONFIG))
        server = getattr(engine, "_server", None)
        pid = server.process.pid if server is not None else engine.pid
        Path("engine.pgid").write_text(str(os.getpgid(pid)))
        return pid

    def test_quick(llmperf):
        llmperf.measure(CONFIG, QUICK, rounds=1, warmup_rounds=0)

    def test_long(llmperf):
        llmperf.measure(CONFIG, Announced(LONG), rounds=500, warmup_rounds=0)

    def test_fails(llmperf):
        llmperf.measure(CONFIG, Announced(QUICK, flag="measuring"), rounds=1, warmup_rounds=0)
        assert False, "a failing test"

    def test_hung(llmperf, engine_pgid):
        llmperf.measure(CONFIG, Announced(LONG, stop=True), rounds=1, warmup_rounds=0)

    @pytest.mark.llmperf_timeout(3)
    def test_bounded(llmperf, engine_pgid):
        llmperf.measure(CONFIG, Announced(LONG, stop=True), rounds=1, warmup_rounds=0)

    def test_same_config(llmperf):
        llmperf.measure(CONFIG, QUICK, rounds=1, warmup_rounds=0)

    def test_other_config(llmperf):
        llmperf.measure(OTHER, QUICK, rounds=1, warmup_rounds=0)
    """
)

#: The two engines with processes of their own, as command-line arguments.
ISOLATED = ("--engine", "hf", "--llmperf-isolate")
SERVER = ("--engine", "llamacpp-server")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def own_run_environment() -> dict[str, str]:
    """This process's environment without pytest-xdist's worker variables: run from an
    xdist worker, the child run would otherwise take itself for a worker of ours (and share
    servers through our run's state folder)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}


class SuiteProcess:
    """pytest on `SUITE` in a session of its own, its temp folder under `root`."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        (root / "test_suite.py").write_text(SUITE)
        (root / "pytest.ini").write_text("[pytest]\n")
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.log = open(root / "pytest.log", "w")  # closed in `wait`
        argv = [sys.executable, "-m", "pytest", "test_suite.py", "-p", "no:cacheprovider"]
        argv += ["--gpus", "cpu", "--llmperf-results-dir", "results", "-v"]
        self.process = subprocess.Popen(
            [*argv, *args],
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**own_run_environment(), "TMPDIR": str(self.tmp)},
            start_new_session=True,
            # As from a terminal: a shell starts background jobs (CI's, say) with SIGINT
            # ignored, and an ignored signal stays ignored across exec.
            preexec_fn=_default_sigint,
        )

    def stop(self) -> None:
        """Kill the run's whole group and reap it (a failed test leaves nothing running)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    @property
    def output(self) -> str:
        return (self.root / "pytest.log").read_text()

    def wait_for(self, path: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.root / path).exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self.stop()
                raise AssertionError(f"no {path} (exit {code}):\n{self.output}")
            time.sleep(0.1)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def wait(self, timeout_s: float = 120.0) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        finally:
            self.log.close()

    def run_dir(self) -> Path:
        (run_dir,) = (self.root / "results").iterdir()
        return run_dir


def gone_within(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The processes still alive (zombies count as gone) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def kill_leftovers() -> Callable[[list[psutil.Process]], None]:
    """Whatever a failing test leaves is killed, so one failure does not leak into CI."""
    seen: list[psutil.Process] = []
    yield seen.extend  # type: ignore[misc]
    for process in seen:
        if _alive(process):
            process.kill()


def leftover_files(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("llmperf-"))


def check_records(run_dir: Path, kind: str = "*") -> list[dict[str, Any]]:
    """Every complete line of the JSONL files (`kind`: requests, tests) parses (what
    follows the last newline is a line torn by a kill: readers skip it)."""
    records = []
    for path in run_dir.glob(f"{kind}.jsonl"):
        *complete, _torn = path.read_text().split("\n")
        records.extend(json.loads(line) for line in complete)
    return records


# --- signals to the run, and a run that ends normally -----------------------------------


@pytest.mark.parametrize(
    ("engine", "signum"),
    [
        pytest.param(ISOLATED, signal.SIGINT, id="isolated-SIGINT"),
        pytest.param(SERVER, signal.SIGTERM, id="server-SIGTERM"),
        pytest.param(SERVER, signal.SIGINT, id="server-SIGINT"),
        pytest.param(ISOLATED, signal.SIGTERM, id="isolated-SIGTERM"),
    ],
)
def test_interrupted_run_stops_its_engine_and_writes_its_summary(
    tmp_path: Path, engine: tuple[str, ...], signum: int, kill_leftovers: Callable[..., None]
) -> None:
    """Ctrl-C (SIGINT to pytest's process group, as a terminal sends it) or SIGTERM
    (to pytest alone, as `kill` sends it) mid-measurement: the run ends within seconds,
    the summary holds what finished and says it was interrupted, nothing is left."""
    run = SuiteProcess(tmp_path, *engine, "-k", "quick or long")
    run.wait_for("sending")
    time.sleep(0.5)  # generating now
    children = run.descendants()
    kill_leftovers(children)
    assert children, "the engine has processes of its own"
    signalled = time.monotonic()
    if signum == signal.SIGINT:
        os.killpg(run.process.pid, signum)
    else:
        run.process.send_signal(signum)
    code = run.wait(timeout_s=60)
    took = time.monotonic() - signalled
    assert code == pytest.ExitCode.INTERRUPTED, run.output
    assert took < 30, f"the run took {took:.0f} s to end"
    assert gone_within(children, 5) == [], run.output
    summary = json.loads((run.run_dir() / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert [t["test_id"] for t in summary["tests"]] == ["test_suite.py::test_quick"]
    assert leftover_files(run.tmp) == []


@pytest.mark.parametrize("engine", [ISOLATED, SERVER], ids=["isolated", "server"])
def test_killed_run_leaves_readable_records_no_process_and_a_rebuildable_summary(
    tmp_path: Path,
    engine: tuple[str, ...],
    kill_leftovers: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGKILL to pytest's whole process group mid-measurement: no cleanup code runs,
    yet the engine's processes (groups of their own) are ended by the reaper, every
    record written so far reads, and `llmperf rebuild` writes the missing summary."""
    run = SuiteProcess(tmp_path, *engine, "-k", "quick or long")
    run.wait_for("sending")
    time.sleep(0.5)
    children = run.descendants()
    kill_leftovers(children)
    os.killpg(run.process.pid, signal.SIGKILL)
    assert run.wait(timeout_s=10) == -signal.SIGKILL
    assert gone_within(children, 10) == []
    run_dir = run.run_dir()
    assert not (run_dir / "summary.json").exists()
    records = check_records(run_dir)
    assert any(r.get("test_id") == "test_suite.py::test_quick" for r in records)
    with open(run_dir / "requests.jsonl", "a") as torn:  # as a kill mid-write leaves it
        torn.write('{"schema_version": 1, "test_id": "test_suite.py::test_lo')
    results = str(run_dir.parent)
    assert cli.main(["list", "--results-dir", results]) == 0
    assert "unfinished" in capsys.readouterr().out
    assert cli.main(["rebuild", "latest", "--results-dir", results]) == 0
    assert "1 test(s)" in capsys.readouterr().out
    rebuilt = open_run(run_dir)
    finished = [t.test_id for t in rebuilt.tests if not is_cut_short(t)]
    assert rebuilt.finished and finished == ["test_suite.py::test_quick"]
    # test_long, if a round of it ended before the kill, is there as cut short.
    assert {t.test_id for t in rebuilt.tests if is_cut_short(t)} <= {"test_suite.py::test_long"}
    assert cli.main(["list", "--results-dir", results]) == 0
    assert "rebuilt" in capsys.readouterr().out
    # Twice would overwrite a summary: refused unless forced.
    assert cli.main(["rebuild", "latest", "--results-dir", results]) == 2
    assert "--force" in capsys.readouterr().err


def test_normal_end_and_a_failing_test_leave_no_process_and_no_temp_files(
    tmp_path: Path, kill_leftovers: Callable[..., None]
) -> None:
    run = SuiteProcess(tmp_path, *SERVER, "-k", "quick or fails")
    run.wait_for("measuring")
    children = run.descendants()
    kill_leftovers(children)
    code = run.wait()
    assert code == pytest.ExitCode.TESTS_FAILED, run.output
    assert children and gone_within(children, 5) == []
    assert leftover_files(run.tmp) == []
    summary = json.loads((run.run_dir() / "summary.json").read_text())
    assert summary["interrupted"] is False and len(summary["tests"]) == 2


# --- hung engines ----------------------------------------------------------------------


def test_hung_isolated_engine_is_ended_at_the_request_bound(
    tmp_path: Path, kill_leftovers: Callable[..., None]
) -> None:
    """The engine's process group is stopped (SIGSTOP) mid-measurement: after 3 s of
    silence its group is ended, the requests are recorded as failures, the test fails
    saying so, the configuration's next test fails at once, another one runs."""
    run = SuiteProcess(
        tmp_path,
        *ISOLATED,
        "--llmperf-request-timeout",
        "3",
        "-k",
        "hung or same_config or other_config",
    )
    run.wait_for("sending")
    kill_leftovers(run.descendants())
    assert run.wait() == pytest.ExitCode.TESTS_FAILED, run.output
    output = run.output
    assert "test_hung FAILED" in output and "test_same_config FAILED" in output
    assert "test_other_config PASSED" in output
    assert "engine gave no sign of life for 3 s while generating" in output
    assert "engine for this configuration died earlier" in output
    hung = [r for r in check_records(run.run_dir(), "requests") if r["test_id"].endswith("hung")]
    assert hung and all("no sign of life" in str(r["error"]) for r in hung)
    # The dead engine's log is kept (its message names it), nothing else is.
    assert all(name.startswith("llmperf-engine-") for name in leftover_files(run.tmp))


def test_a_test_past_its_bound_ends_an_in_process_engine(
    tmp_path: Path, kill_leftovers: Callable[..., None]
) -> None:
    """hf runs in process; a test marked `llmperf_timeout(3)` makes the run isolate it,
    so that when the test (its engine stopped) passes its bound, the engine's process is
    ended and the test fails with the reason; the other configuration runs after it."""
    run = SuiteProcess(tmp_path, "--engine", "hf", "-k", "bounded or other_config")
    run.wait_for("sending")
    kill_leftovers(run.descendants())
    assert run.wait() == pytest.ExitCode.TESTS_FAILED, run.output
    output = run.output
    assert "test_bounded FAILED" in output and "test_other_config PASSED" in output
    assert "test_suite.py::test_bounded ran past its bound of 3 s" in output
    summary = json.loads((run.run_dir() / "summary.json").read_text())
    (bounded,) = [t for t in summary["tests"] if t["test_id"].endswith("test_bounded")]
    assert bounded["metrics"]["failures"] == 2


def test_hung_server_is_ended_at_the_request_bound(
    tmp_path: Path, kill_leftovers: Callable[..., None]
) -> None:
    """llama-cpp-python's server stopped (SIGSTOP) mid-measurement still accepts
    connections (the kernel does) and never answers: each request times out at 3 s and
    is recorded as a failure, the server's process group is ended, the test fails."""
    run = SuiteProcess(
        tmp_path,
        *SERVER,
        "--llmperf-request-timeout",
        "3",
        "-k",
        "hung or same_config",
    )
    run.wait_for("sending")
    children = run.descendants()
    kill_leftovers(children)
    assert run.wait() == pytest.ExitCode.TESTS_FAILED, run.output
    output = run.output
    assert "test_hung FAILED" in output and "test_same_config FAILED" in output
    assert "the server answered no request within 3 s" in output
    assert "its process group was ended" in output
    hung = [r for r in check_records(run.run_dir(), "requests") if r["test_id"].endswith("hung")]
    assert hung and all("timed out after 3 s" in str(r["error"]) for r in hung)
    assert gone_within(children, 5) == []


# --- the bound's input -----------------------------------------------------------------


def test_a_bad_bound_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llmperf_timeout("soon")
        def test_x(llmperf):
            pass
        """
    )
    result = pytester.runpytest("--gpus", "cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x: marker llmperf_timeout('soon'): the bound must be*"])
    pytester.makeini("[pytest]\nllmperf_test_timeout = never\n")
    result = pytester.runpytest("--gpus", "cpu")
    result.stderr.fnmatch_lines(["*ini option llmperf_test_timeout: 'never' is not a number*"])
    result = pytester.runpytest("--gpus", "cpu", "--llmperf-test-timeout", "0")
    result.stderr.fnmatch_lines(["*--llmperf-test-timeout: must be a positive number*"])
