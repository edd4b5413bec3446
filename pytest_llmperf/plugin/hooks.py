"""pytest-llmperf's pytest plugin: options, markers, hooks and the `llmperf` fixture.

Thin by design: each hook hands off to the run's `LLMPerfSession`, kept in
`config.stash`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.hardware.gpus import marker_gpu_count
from pytest_llmperf.hardware.threads import apply_share, thread_environment
from pytest_llmperf.measure.evidence import MARKER as ALLOW_MARKER
from pytest_llmperf.measure.evidence import marker_allowance
from pytest_llmperf.plugin.fixture import LLMPerfFixture
from pytest_llmperf.plugin.lifecycle import MARKER as TIMEOUT_MARKER
from pytest_llmperf.plugin.lifecycle import TermAsInterrupt, bound_of, watchdog
from pytest_llmperf.plugin.locations import check_invocation
from pytest_llmperf.plugin.options import add_all_options
from pytest_llmperf.plugin.session import LLMPerfSession
from pytest_llmperf.plugin.settings import read_settings
from pytest_llmperf.plugin.summary import write_terminal_summary
from pytest_llmperf.suite.config import Config, NotForEngine, fit

session_key = pytest.StashKey[LLMPerfSession]()
#: An xdist worker's usage error for a test, found at collection: the test fails with it.
usage_error_key = pytest.StashKey[str]()
term_key = pytest.StashKey[TermAsInterrupt]()

MARKERS = (
    "smoke: quick benchmarks that run anywhere, the CPU included, in minutes",
    "longform: long outputs (minutes per configuration on a GPU)",
    "accuracy: tests that score answers as well as time them",
    "gpu(n=1): needs n GPUs from --gpus; skipped with a reason when fewer are available",
    f"{TIMEOUT_MARKER}(seconds): bound on this test; past it the engine's processes are "
    "ended and the test fails (like --llmperf-test-timeout)",
    f"{ALLOW_MARKER}(rate): a fault-injection test: up to this share (0 to 1) of its "
    "measured requests may fail without failing it (default 0)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_all_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    if config.option.help:
        return
    workerinput = getattr(config, "workerinput", None)
    worker_id = workerinput["workerid"] if workerinput else None
    run_id = workerinput.get("llmperf_run_id") if workerinput else None
    if worker_id is None:  # first: with the wrong rootdir, every other check misleads
        check_invocation(config)
    session = LLMPerfSession(config, read_settings(config), worker_id, run_id)
    config.stash[session_key] = session
    share = workerinput.get("llmperf_cpus") if workerinput else None
    if share:  # this worker's CPUs, before any engine loads (`hardware.threads`)
        session.thread_plan["xdist_share"] = apply_share(share)
    term = config.stash[term_key] = TermAsInterrupt()
    term.install()  # SIGTERM ends the run like Ctrl-C: engines stopped, summary written
    if worker_id is None:
        config.pluginmanager.register(_Outcomes(session), "llmperf-outcomes")
    if config.pluginmanager.hasplugin("xdist") and worker_id is None:
        config.pluginmanager.register(_XdistController(session), "llmperf-xdist")


class _Outcomes:
    """Keeps pytest's verdict of each test on the controller, where xdist forwards every
    report (`LLMPerfSession.note_outcome`)."""

    def __init__(self, session: LLMPerfSession) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.session.note_outcome(report)


class _XdistController:
    """Hands the controller's run id, and on a CPU run each worker's share of the CPUs,
    to every xdist worker; takes each worker's thread environment back at its end."""

    def __init__(self, session: LLMPerfSession) -> None:
        self.session = session

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["llmperf_run_id"] = self.session.run_id
        self.session.xdist_run_uid = node.workerinput.get("testrunuid")
        workers = len(getattr(node.config.option, "tx", None) or ()) or 1
        share = self.session.xdist_share(node.workerinput["workerid"], workers)
        if share:
            node.workerinput["llmperf_cpus"] = share

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        if "llmperf_threads" in output:
            self.session.worker_threads[node.workerinput["workerid"]] = output["llmperf_threads"]


def _session(config: pytest.Config) -> LLMPerfSession | None:
    return config.stash.get(session_key, None)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """Bad input found while collecting (a grid file) is a usage error, not a traceback."""
    report = yield
    call = report.__dict__.get("call")
    if call is not None and call.excinfo is not None:
        if isinstance(call.excinfo.value, LLMPerfUsageError):
            raise call.excinfo.value
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = _session(config)
    bounds: list[float | None] = []
    for item in items:
        try:  # a bad marker argument is a usage error now, not when its test runs
            for marker in item.iter_markers("gpu"):
                _gpu_count(item, marker)
            allowing = item.get_closest_marker(ALLOW_MARKER)
            if allowing is not None:
                marker_allowance(item.nodeid, allowing.args, allowing.kwargs)
            if session is not None:
                bounds.append(bound_of(item, session.settings.test_timeout_s))
        except LLMPerfUsageError as exc:
            # An xdist worker cannot end the run with a usage error (xdist reports it as
            # a crash of the test): there the test fails with it (pytest_runtest_setup).
            if session is None or session.is_controller:
                raise
            item.stash[usage_error_key] = str(exc)
    if session is not None:
        session.collected_ids = [item.nodeid for item in items]
        session.bounded = any(bound is not None for bound in bounds)
    # Keep tests that share an engine configuration together, so each engine loads
    # once: a stable sort on the first appearance of each configuration.
    first_seen: dict[Any, int] = {}
    for item in items:
        first_seen.setdefault(_engine_key(item), len(first_seen))
    items.sort(key=lambda item: first_seen[_engine_key(item)])


def _configs(item: pytest.Item) -> list[Config]:
    """The grid configurations a test is parametrized with."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return []
    return [value for value in callspec.params.values() if isinstance(value, Config)]


def _engine_key(item: pytest.Item) -> Any:
    configs = _configs(item)
    return (configs[0].engine, configs[0].engine_settings) if configs else None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check every selected test's configuration against the engine that will run it.

    After `-m`/`-k` have deselected what the run will not run, so that a grid for other
    engines in a suite the run does not select is no error. A setting the engine does not
    take is a usage error naming the file and line (`suite.config.fit`); the tests of a
    grid meant for other engines skip, saying which. A configuration that names its own
    engine gets that engine's thresholds files checked as the run's engine's were (see
    `LLMPerfSession.check_engine_files`). An xdist worker cannot end the run with a usage
    error (xdist reports it as a crash), so there the tests fail with it.
    """
    llmperf = _session(session.config)
    if llmperf is None:
        return
    verdicts: dict[Config, tuple[str, str] | None] = {}
    engine_verdicts: dict[str, tuple[str, str] | None] = {}
    for item in session.items:
        for config in _configs(item):
            if config not in verdicts:
                verdicts[config] = _verdict(config, llmperf)
            verdict = verdicts[config]
            if verdict is None and config.engine is not None:
                # A configuration's own engine: its thresholds files are checked now too.
                if config.engine not in engine_verdicts:
                    engine_verdicts[config.engine] = _engine_files(config.engine, llmperf)
                verdict = engine_verdicts[config.engine]
            if verdict is not None and verdict[0] == "skip":
                item.add_marker(pytest.mark.skip(reason=verdict[1]))
            elif verdict is not None:
                item.stash[usage_error_key] = verdict[1]


def _verdict(config: Config, llmperf: LLMPerfSession) -> tuple[str, str] | None:
    try:
        fit(config, llmperf.settings.engine)
    except NotForEngine as exc:
        return ("skip", str(exc))
    except LLMPerfUsageError as exc:
        if llmperf.is_controller:
            raise
        return ("error", str(exc))
    return None


def _engine_files(engine: str, llmperf: LLMPerfSession) -> tuple[str, str] | None:
    try:
        llmperf.check_engine_files(engine)
    except LLMPerfUsageError as exc:
        if llmperf.is_controller:
            raise
        return ("error", str(exc))
    return None


def _gpu_count(item: pytest.Item, marker: pytest.Mark) -> int:
    return marker_gpu_count(item.nodeid, marker.args, marker.kwargs)


def pytest_runtest_setup(item: pytest.Item) -> None:
    session = _session(item.config)
    if session is None:
        return
    usage_error = item.stash.get(usage_error_key, None)
    if usage_error is not None:
        pytest.fail(usage_error, pytrace=False)
    needed = max((_gpu_count(item, m) for m in item.iter_markers("gpu")), default=0)
    if needed > len(session.gpus):
        have = ",".join(map(str, session.gpus)) or "none"
        pytest.skip(f"needs {needed} GPU(s); this run has {len(session.gpus)} (--gpus: {have})")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Hold the test to its bound: past it, its engine's processes are ended."""
    session = _session(item.config)
    bound = bound_of(item, session.settings.test_timeout_s) if session is not None else None
    if session is None or bound is None:
        return (yield)
    reason = (
        f"{item.nodeid} ran past its bound of {bound:g} s "
        f"(--llmperf-test-timeout, marker {TIMEOUT_MARKER})"
    )
    with watchdog(bound, lambda: session.terminate_engine(reason)):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Bad input found while a benchmark runs (an argument of `measure()`, a workload made
    in the test) fails it with the message alone: it says what and where, and a traceback
    through this package would bury it. Only tests that use the `llmperf` fixture: others
    keep pytest's report."""
    report = yield
    excinfo = call.excinfo
    if (
        excinfo is not None
        and report.failed
        and isinstance(excinfo.value, LLMPerfUsageError)
        and isinstance(item, pytest.Function)
        and "llmperf" in item.fixturenames
    ):
        report.longrepr = excinfo.getrepr(style="value")
    return report


@pytest.fixture
def llmperf(request: pytest.FixtureRequest) -> LLMPerfFixture:
    """Measure a workload on the run's engine: `llmperf.measure(config, workload)`.

    Records go to pytest-benchmark, the results folder and the thresholds check.
    """
    session = _session(request.config)
    if session is None:
        pytest.skip("pytest-llmperf is not configured in this process")
    return LLMPerfFixture(request, session)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    llmperf_session = _session(session.config)
    if llmperf_session is not None:
        llmperf_session.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: its threads, for run.json
            workeroutput["llmperf_threads"] = {
                **thread_environment(),
                **llmperf_session.thread_plan,
            }


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = _session(config)
    if session is not None and session.is_controller:
        write_terminal_summary(terminalreporter, session)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = _session(config)
    if session is not None:
        session.close_engine()
    term = config.stash.get(term_key, None)
    if term is not None:
        term.uninstall()
