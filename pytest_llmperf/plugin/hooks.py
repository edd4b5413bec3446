"""pytest-llmperf's pytest plugin: options, markers, hooks and the `llmperf` fixture.

Thin by design: each hook hands off to the run's `LLMPerfSession`, kept in
`config.stash`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Iterable, Iterator
from typing import Any

import pytest

from pytest_llmperf.engines.base import Engine
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.hardware.gpus import marker_gpu_count
from pytest_llmperf.hardware.threads import apply_share, thread_environment
from pytest_llmperf.measure.declared import declare_metrics
from pytest_llmperf.measure.evidence import MARKER as ALLOW_MARKER
from pytest_llmperf.measure.evidence import marker_allowance
from pytest_llmperf.models.names import LocalModel, local_model
from pytest_llmperf.plugin.fixture import LLMPerfFixture
from pytest_llmperf.plugin.lifecycle import MARKER as TIMEOUT_MARKER
from pytest_llmperf.plugin.lifecycle import TermAsInterrupt, bound_of, watchdog
from pytest_llmperf.plugin.locations import check_invocation
from pytest_llmperf.plugin.options import add_all_options
from pytest_llmperf.plugin.own import hookspec
from pytest_llmperf.plugin.own.gpus import (
    CPU_ONLY,
    TestGpus,
    before_test,
    leaks,
    lease_for_test,
    wanted,
)
from pytest_llmperf.plugin.session import LLMPerfSession
from pytest_llmperf.plugin.settings import read_settings
from pytest_llmperf.plugin.summary import write_terminal_summary
from pytest_llmperf.procs.rendezvous import RENDEZVOUS_KEY, Rendezvous
from pytest_llmperf.suite.config import Config, NotForEngine, fit
from pytest_llmperf.suite.shard import split
from pytest_llmperf.suite.split import abandon

session_key = pytest.StashKey[LLMPerfSession]()
#: An xdist worker's usage error for a test, found at collection: the test fails with it.
usage_error_key = pytest.StashKey[str]()
term_key = pytest.StashKey[TermAsInterrupt]()

MARKERS = (
    "smoke: quick benchmarks that run anywhere, the CPU included, in minutes",
    "longform: long outputs (minutes per configuration on a GPU)",
    "accuracy: tests that score answers as well as time them",
    "gpu(n=1, allow_cpu=False): needs n GPUs from --gpus; skipped with a reason when fewer "
    "are available (with allow_cpu, a run without GPUs runs it on the CPU)",
    f"{TIMEOUT_MARKER}(seconds): bound on this test; past it the engine's processes are "
    "ended and the test fails (like --llmperf-test-timeout)",
    f"{ALLOW_MARKER}(rate): a fault-injection test: up to this share (0 to 1) of its "
    "measured requests may fail without failing it (default 0)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_all_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspec)


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
    declare_suite_metrics(config)  # before the thresholds files that may name them are read
    session = LLMPerfSession(config, read_settings(config), worker_id, run_id)
    config.stash[session_key] = session
    share = workerinput.get("llmperf_cpus") if workerinput else None
    if share:  # this worker's CPUs, before any engine loads (`hardware.threads`)
        session.thread_plan["xdist_share"] = apply_share(share)
    term = config.stash[term_key] = TermAsInterrupt()
    term.install()  # SIGTERM ends the run like Ctrl-C: engines stopped, summary written
    if session.settings.shard is not None:
        config.pluginmanager.register(Shard(*session.settings.shard, _engine_key), "llmperf-shard")
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


#: The report attribute (and `workeroutput` key) an xdist worker's records travel in.
RECORDS_KEY = "llmperf_records"


class _XdistController:
    """Hands the controller's run id, the address of its barrier for split loads
    (`procs.rendezvous`) and, on a CPU run, each worker's share of the CPUs to every xdist
    worker; takes each worker's records back with its tests' reports
    (`RunWriter.take_outbox`: the worker may run on another host, or in another folder)
    and its thread environment at its end."""

    def __init__(self, session: LLMPerfSession) -> None:
        self.session = session
        #: The barrier of loads split over workers (`suite.split`), started with the first.
        self.rendezvous: Rendezvous | None = None

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["llmperf_run_id"] = self.session.run_id
        self.session.xdist_run_uid = node.workerinput.get("testrunuid")
        if self.rendezvous is None:
            self.rendezvous = Rendezvous(remote=_any_remote(node))
        here = bool(node.gateway.spec.popen)
        node.workerinput[RENDEZVOUS_KEY] = self.rendezvous.address(local=here)
        if not node.gateway.spec.popen:
            return  # another host (`--tx ssh=...`): this one's CPUs are not its to share
        share = self.session.xdist_share(node.workerinput["workerid"], _local_workers(node))
        if share:
            node.workerinput["llmperf_cpus"] = share

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Taken off the report before any other plugin (junitxml, reportlog) sees it.
        records = report.__dict__.pop(RECORDS_KEY, None)
        if records:
            self.session.receive(records)

    def pytest_unconfigure(self) -> None:
        if self.rendezvous is not None:
            self.rendezvous.close()

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        if output.get(RECORDS_KEY):  # written after its last test's report
            self.session.receive(output[RECORDS_KEY])
        if "llmperf_threads" in output:
            self.session.worker_threads[node.workerinput["workerid"]] = output["llmperf_threads"]


class Shard:
    """`--llmperf-shard K/N` (`suite.shard`): deselects the tests of other shards, after
    every other selection (`trylast`)."""

    def __init__(self, k: int, n: int, key: Callable[[pytest.Item], Hashable]) -> None:
        self.k, self.n, self.key = k, n, key

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        mine = split(items, self.key, self.n)[self.k - 1]
        kept = set(map(id, mine))
        others = [item for item in items if id(item) not in kept]
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = [item for item in items if id(item) in kept]


def _local_workers(node: Any) -> int:
    """How many of the run's xdist workers run on this host (popen gateways)."""
    from execnet import XSpec  # xdist's own dependency; only here, where xdist runs
    from xdist.workermanage import parse_tx_spec_config

    return sum(1 for tx in parse_tx_spec_config(node.config) if XSpec(tx).popen) or 1


def _any_remote(node: Any) -> bool:
    """Whether any of the run's xdist workers runs on another host (not a popen gateway)."""
    from execnet import XSpec
    from xdist.workermanage import parse_tx_spec_config

    return any(not XSpec(tx).popen for tx in parse_tx_spec_config(node.config))


def declare_suite_metrics(config: pytest.Config) -> None:
    """The metrics that `pytest_llmperf_metrics` implementations declare, each named by the
    file that declared it in errors; this run's replace those of an earlier one."""
    declare_metrics((), "pytest_configure", replace=True)
    for impl in config.pluginmanager.hook.pytest_llmperf_metrics.get_hookimpls():
        source = getattr(impl.plugin, "__file__", None) or impl.plugin_name
        specs = impl.function(**{name: config for name in impl.argnames})
        if isinstance(specs, (str, bytes)) or not isinstance(specs, Iterable):
            raise LLMPerfUsageError(
                f"{source}: pytest_llmperf_metrics: return a list of MetricSpec"
            )
        declare_metrics(specs, f"{source}: pytest_llmperf_metrics")


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
    cpu_will_do = not session.gpus and wanted(item)[1]
    if needed > len(session.gpus) and not cpu_will_do:
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
    """In an xdist worker, the records the test appended go with its report to the
    controller. Bad input found while a benchmark runs (an argument of `measure()`, a
    workload made in the test) fails it with the message alone: it says what and where,
    and a traceback through this package would bury it. Only tests that use the `llmperf`
    fixture: others keep pytest's report."""
    report = yield
    session = _session(item.config)
    if session is not None and not session.is_controller:
        records = session.writer.take_outbox()
        if records:  # to the controller with the report, through xdist's channel
            setattr(report, RECORDS_KEY, records)
        params = getattr(getattr(item, "callspec", None), "params", None)
        if (report.failed or report.skipped) and params:  # a split load's share: no more
            worker = getattr(item.config, "workerinput", None)
            abandon(params, worker, f"{item.nodeid} {report.outcome} ({report.when})")
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


@pytest.fixture
def llmperf_gpus(request: pytest.FixtureRequest) -> Iterator[TestGpus]:
    """The GPUs of the test's `gpu(n)` mark (1 without one), leased for the test, checked
    clean before it and for leaks after it (`plugin.own.gpus`): `cuda` and `devices` as this
    process numbers them, `physical` as NVML does, `visible_devices` (and `env()`) for a
    child process's `CUDA_VISIBLE_DEVICES`. Skipped on a run without GPUs unless the mark
    says `allow_cpu=True` (then `devices == ("cpu",)`)."""
    session = _session(request.config)
    if session is None:
        pytest.skip("pytest-llmperf is not configured in this process")
    count, allow_cpu = wanted(request.node)
    if not session.gpus:
        if not allow_cpu:
            pytest.skip(
                "llmperf_gpus: this run has no GPUs (--gpus); mark the test "
                "gpu(allow_cpu=True) to run it on the CPU"
            )
        gpus = CPU_ONLY
    else:
        gpus = lease_for_test(session, count, session.settings.lease_timeout_s)
    session.test_lease = gpus.lease
    before = before_test(gpus, session.engine_starts)
    try:
        yield gpus
        started = session.engine_starts != before.engine_starts
        problems = leaks(gpus, before, session.engine_memory if started else None)
    finally:
        session.test_lease = None
        if gpus.lease is not None:
            if session.lease is not None:  # an engine started on the test's GPUs keeps them
                gpus.lease.hand_over(session.lease)
            gpus.lease.release()
    if problems:
        pytest.fail(
            f"{request.node.nodeid} left behind:\n" + "\n".join(f"  {p}" for p in problems),
            pytrace=False,
        )


@pytest.fixture
def llmperf_model(request: pytest.FixtureRequest) -> LocalModel:
    """The run's `--model` as a local directory (a built-in model is built on first use),
    with its tokenizer, for a test that loads the model itself."""
    session = _session(request.config)
    if session is None:
        pytest.skip("pytest-llmperf is not configured in this process")
    return local_model(session.settings.model)


@pytest.fixture
def llmperf_engine(llmperf: LLMPerfFixture) -> Callable[..., Engine]:
    """`llmperf_engine(config)`: the started engine for a configuration, for a test that
    drives it itself; the one `llmperf.measure` uses, shared with the configuration's
    other tests and closed when the configuration changes."""
    return llmperf.engine


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    llmperf_session = _session(session.config)
    if llmperf_session is not None:
        llmperf_session.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: its threads, for run.json
            workeroutput[RECORDS_KEY] = llmperf_session.writer.take_outbox()
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
    declare_metrics((), "pytest_unconfigure", replace=True)  # the next run declares its own
    term = config.stash.get(term_key, None)
    if term is not None:
        term.uninstall()
