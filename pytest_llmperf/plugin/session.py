"""The run's state: settings, GPUs, thresholds, the loaded engine and the results folder.

One `LLMPerfSession` per pytest process, created in `pytest_configure` and kept in
`config.stash`. Under pytest-xdist the controller decides the run id and writes the
summary; each worker measures and appends its own records (see `results`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.engines import engine_spec, load_engine_class
from pytest_llmperf.engines.base import Engine, EngineConfig, EngineInfo, Terminable, death_cause
from pytest_llmperf.engines.isolated.parent import IsolatedEngine
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.hardware.environment import host_facts, machine_metadata
from pytest_llmperf.hardware.gpus import (
    GpuInfo,
    gpu_memory_used,
    physical_indices,
    select_gpus,
    visible_gpus,
)
from pytest_llmperf.hardware.leases import Lease, LeaseError, lease, wait_until_clean
from pytest_llmperf.hardware.threads import cpu_shares, thread_environment, usable_cpus
from pytest_llmperf.measure.timed import OWN_ENGINE
from pytest_llmperf.plugin.locations import (
    check_cache,
    check_model,
    check_results_dir,
    check_writable_folder,
    run_writes,
)
from pytest_llmperf.plugin.settings import Settings, describe_settings
from pytest_llmperf.procs.reaper import reaper
from pytest_llmperf.procs.servers import ServerError, shared_servers_dir
from pytest_llmperf.results.compare import check_measured
from pytest_llmperf.results.exports import write_github_benchmark, write_tests_csv
from pytest_llmperf.results.identity import Setup
from pytest_llmperf.results.readback.split import merged_loads
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.responses import responses_available
from pytest_llmperf.results.runs import Run, open_run, read_run, read_test_records, run_refs
from pytest_llmperf.results.tolerances import parse_tolerances
from pytest_llmperf.results.writer import RunWriter, has_measurements, new_run_id, write_summary
from pytest_llmperf.suite.workload import DatasetError, load_dataset
from pytest_llmperf.thresholds.files import ThresholdSet, hardware_slug, select_threshold_files
from pytest_llmperf.thresholds.update import Observed, UpdateReport, update_thresholds
from pytest_llmperf.version import __version__

log = logging.getLogger("pytest_llmperf")


#: How long a leased GPU may take to become clean (no other processes, memory at baseline).
CLEAN_TIMEOUT_S = 120.0

#: Bounds written for a test that has none yet, by --llmperf-update-thresholds.
DEFAULT_THRESHOLD_METRICS = (
    "output_tok_per_s",
    "ttft_ms.p90",
    "tpot_ms.p90",
    "e2e_ms.p90",
    "failure_rate",
)


class EngineStartError(Exception):
    """The engine for a configuration could not start; the tests that need it fail."""


class LLMPerfSession:
    def __init__(
        self, config: pytest.Config, settings: Settings, worker_id: str | None, run_id: str | None
    ) -> None:
        self.config = config
        self.settings = settings
        self.worker_id = worker_id
        self.is_controller = worker_id is None
        #: Whether this run writes results (not when it only collects or dry-runs).
        self.writes = run_writes(config, settings.dry_run)
        # Folders and files are checked once, on the controller, before anything loads
        # (see `locations`); workers share its folders.
        check_model(settings.engine, settings.model, settings.model_source)
        if self.is_controller and self.writes:
            check_results_dir(settings.results_dir, settings.results_source)
        if self.is_controller and not config.getoption("collectonly"):
            check_cache(settings.model)  # a dry run tokenizes with the built-in model
        if settings.dataset is not None:
            try:  # a broken line is a usage error, before any test
                load_dataset(settings.dataset)
            except DatasetError as exc:
                raise DatasetError(f"{settings.dataset_source}: {exc}") from None
        self.visible: list[GpuInfo] = visible_gpus()
        self.gpus = select_gpus(settings.gpus, self.visible, settings.gpus_source)
        run_gpus = [g for g in self.visible if g.index in self.gpus]
        self.hardware = settings.hardware or (
            hardware_slug(run_gpus[0].name) if run_gpus else "cpu"
        )
        self._thresholds: dict[str, ThresholdSet] = {}
        self.check_engine_files(settings.engine)  # bad threshold files fail before anything runs
        self.check_engine_files(OWN_ENGINE)  # and those of the suite's own timed code
        # A bad baseline or tolerance is a usage error now, not after hours of measuring.
        self.tolerances = parse_tolerances(settings.tolerances, "--llmperf-tolerance")
        #: The `--llmperf-compare` runs, newest first (one, or several pooled).
        self.baselines: list[Run] = []
        #: How the baseline's setup differs from this run's, allowed by the user.
        self.baseline_mismatch: list[str] = []
        if settings.compare_base:
            self.baselines, self.baseline_mismatch = self._open_baselines(settings)
        if settings.responses:
            responses_available()
        self.run_id = run_id or new_run_id()
        self.run_dir = settings.results_dir / self.run_id
        self.writer = RunWriter(self.run_dir, worker_id)
        self.metadata: dict[str, Any] = {
            "run_id": self.run_id,
            "plugin_version": __version__,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # Orders runs started within the same second (`started_at` has whole seconds).
            "started_unix": time.time(),
            "hardware": self.hardware,
            "settings": describe_settings(settings),
            "machine": machine_metadata(run_gpus, config.rootpath, sys.argv),
            # Other work on the machine at the start: a noise source (`plugin.summary`).
            "load_average_at_start": _load_average(),
        }
        #: The host this process measures on, in its tests' records (xdist: the worker's).
        self.host = host_facts(self.metadata["machine"], self.gpus, settings.gpus_source, worker_id)
        #: How the CPUs are shared: on the controller, the split between xdist workers
        #: (`xdist`); in a worker, the share it applied (`xdist_share`).
        self.thread_plan: dict[str, Any] = {}
        #: Each xdist worker's thread environment at its end (controller).
        self.worker_threads: dict[str, Any] = {}
        #: pytest's outcome of each test the controller saw: passed, failed or skipped.
        self.outcomes: dict[str, str] = {}
        self._metadata_written = False
        self._engine_config: EngineConfig | None = None
        self._engine_key: tuple[EngineConfig, int] | None = None
        #: The GPUs the loaded engine holds, if any.
        self.lease: Lease | None = None
        #: The GPUs the running test leased through `llmperf_gpus`: an engine it starts
        #: runs on them (and keeps their locks when the test ends).
        self.test_lease: Lease | None = None
        #: Engines started so far, and the GPU memory (NVML, physical index -> bytes) the
        #: loaded one took when it started: the release check of `llmperf_gpus` leaves it out.
        self.engine_starts = 0
        self.engine_memory: dict[int, int] | None = None
        #: Memory in use on each of the run's GPUs at its start (NVML; None without it).
        self.gpu_baseline = gpu_memory_used(physical_indices(self.gpus))
        self._engine: Engine | None = None
        self._engine_info: EngineInfo | None = None
        self._engine_error: str | None = None
        self.collected_ids: list[str] = []
        self.update_report: UpdateReport | None = None
        self.unmatched_thresholds: list[str] = []
        self.summary_path: Path | None = None
        #: Each isolated engine's hand-over: GPU memory before it started and after it ended.
        self.handovers: list[dict[str, Any]] = []
        #: Some test has a time bound: engines that run in process are isolated, so that
        #: the bound can end their process (see `lifecycle`).
        self.bounded = settings.test_timeout_s is not None
        #: xdist's run id (controller): names the workers' shared servers' folder.
        self.xdist_run_uid: str | None = None

    @property
    def baseline(self) -> Run | None:
        """The newest baseline run, whose values are shown beside this run's."""
        return self.baselines[0] if self.baselines else None

    def _open_baselines(self, settings: Settings) -> tuple[list[Run], list[str]]:
        """The `--llmperf-compare` runs (`RUN`, `RUN,RUN,...` or `latest:N`, the newest N
        finished runs with measured tests), each checked before anything runs: it has
        measured tests, this version's schema, and this run's engine, model and hardware
        (unless `--llmperf-allow-mismatch`). Returns them with the differences allowed."""
        assert settings.compare_base is not None
        source = "--llmperf-compare"
        runs: list[Run] = []
        differences: list[str] = []
        try:
            for ref in run_refs(settings.compare_base, "--llmperf-compare"):
                baseline = open_run(ref, settings.results_dir, baseline=True)
                check_measured(baseline, "baseline")
                runs.append(baseline)
        except LLMPerfUsageError as exc:
            raise LLMPerfUsageError(f"{source}: {exc}") from None
        mine = Setup.of(settings.engine, settings.model, self.hardware)
        for baseline in runs:
            differences = Setup.of_run(baseline).differences(mine)
            if differences and not settings.allow_mismatch:
                raise LLMPerfUsageError(
                    f"{source}: baseline {baseline.run_id} was measured on another setup "
                    f"({'; '.join(differences)}; baseline first): its numbers would compare "
                    "setups, not find a regression. Compare against a run of this setup, or "
                    "say the difference is meant with --llmperf-allow-mismatch"
                )
        return runs, differences

    # --- thresholds -------------------------------------------------------------

    def threshold_files(self, engine: str) -> list[Path]:
        return select_threshold_files(self.settings.thresholds_dir, self.hardware, engine)

    def thresholds_for(self, engine: str) -> ThresholdSet:
        if engine not in self._thresholds:
            self._thresholds[engine] = ThresholdSet.load(self.threshold_files(engine))
        return self._thresholds[engine]

    def update_target(self, engine: str) -> Path:
        """The thresholds file --llmperf-update-thresholds writes for `engine`: the file
        this run is checked against, so an `h100/` folder is not shadowed by a new
        `h100-80gb-hbm3/` one; a new file only if none exists."""
        chosen = self.threshold_files(engine)
        return (
            chosen[0] if chosen else self.settings.thresholds_dir / self.hardware / f"{engine}.yaml"
        )

    def check_engine_files(self, engine: str) -> None:
        """`engine`'s thresholds, read and checked, and with the update flag the folder
        its bounds will be written to: usage errors now, not after the measurements."""
        self.thresholds_for(engine)
        if self.settings.update_thresholds and self.writes and self.is_controller:
            check_writable_folder(
                self.update_target(engine).parent,
                "--llmperf-update-thresholds",
                f"the bounds for engine {engine!r} could not be written",
            )

    def ensure_metadata(self) -> None:
        """Write run.json when the run first measures something (controller only), with
        the thread environment the engine just started with."""
        if self.is_controller and not self._metadata_written:
            self.metadata["threads"] = {**thread_environment(), **self.thread_plan}
            self.writer.write_metadata(self.metadata)
            self._metadata_written = True

    def xdist_share(self, worker: str, workers: int) -> list[int] | None:
        """The CPUs xdist worker `worker` (`gw1`) of `workers` measures on (controller):
        an equal share of the run's CPUs on a CPU run, so that two measured tests never
        compete for a core (`hardware.threads`). None where no split is made: a GPU run,
        a managed server the workers share, or fewer CPUs than workers (the terminal
        summary then warns that measured tests shared cores)."""
        shares = cpu_shares(usable_cpus(), workers)
        why_not = None
        if self.gpus:
            why_not = "a GPU run"
        elif engine_spec(self.settings.engine).traits.can_terminate:
            why_not = "the workers share one managed server"
        elif shares is None:
            why_not = "fewer CPUs than workers"
        plan = self.thread_plan.setdefault(
            "xdist", {"workers": workers, "split": why_not is None, "shares": {}}
        )
        if why_not is not None or shares is None:
            plan["not_split"] = why_not
            return None
        share = list(shares[int(worker.removeprefix("gw") or 0) % workers])
        plan["shares"][worker] = share
        return share

    def receive(self, records: dict[str, Any]) -> None:
        """Records an xdist worker handed over with a test's report (controller): they join
        the run's files, wherever the worker ran."""
        self.writer.receive(records)
        if any(records.values()):
            self.ensure_metadata()

    def note_outcome(self, report: pytest.TestReport) -> None:
        """Keep pytest's verdict of each test (controller: xdist forwards every report),
        for `summary.json`'s `outcomes` and `llmperf list`'s passed and failed."""
        if report.when == "call" or report.failed or report.skipped:
            if self.outcomes.get(report.nodeid) != "failed":
                self.outcomes[report.nodeid] = "failed" if report.failed else report.outcome

    # --- engines ----------------------------------------------------------------

    def engine_for(
        self, engine_config: EngineConfig, gpu_count: int = 0
    ) -> tuple[Engine, EngineInfo, float | None]:
        """The loaded engine for this configuration, starting it if needed.

        `gpu_count` GPUs are leased from the run's set (see `leases`) and checked clean
        before the engine starts on them; the engine gets them as `EngineConfig.gpus`.
        Returns the engine, its info and its load time in seconds (None when it was
        already loaded). A configuration whose engine failed to start fails again at
        once for every test that needs it, without a second attempt.
        """
        key = (engine_config, gpu_count)
        if key == self._engine_key:
            death = death_cause(self._engine)
            if death:
                self._engine_error = f"engine for this configuration died earlier: {death}"
            if self._engine_error is not None:
                raise EngineStartError(self._engine_error)
            assert self._engine is not None and self._engine_info is not None
            return self._engine, self._engine_info, None
        self.close_engine()
        self._engine_key = key
        self._engine_config = engine_config
        borrowed = self.test_lease
        if gpu_count and borrowed is not None and len(borrowed.gpus) >= gpu_count:
            # The test's own GPUs, already leased and checked clean: the engine shares them.
            self.lease = borrowed.borrow(gpu_count)
            engine_config = replace(engine_config, gpus=self.lease.gpus)
            self._engine_config = engine_config
        elif gpu_count:
            try:
                self.lease = lease(gpu_count, self.gpus, self.settings.lease_timeout_s)
                wait_until_clean(
                    self.lease.physical,
                    self.gpu_baseline,
                    min(CLEAN_TIMEOUT_S, self.settings.lease_timeout_s),
                )
            except LeaseError as exc:
                self._engine_error = f"GPU lease: {exc}"
                raise EngineStartError(self._engine_error) from exc
            engine_config = replace(engine_config, gpus=self.lease.gpus)
            self._engine_config = engine_config
        spec = engine_spec(engine_config.engine)
        log.info("starting engine %r on model %r", engine_config.engine, engine_config.model)
        # A bound must be able to end the engine's process: one that runs in ours (and
        # has no server of its own to end) runs in a child while bounded.
        bounded_in_process = self.bounded and not spec.traits.can_terminate
        started = time.perf_counter()
        physical = self.lease.physical if self.lease is not None else ()
        memory_before = gpu_memory_used(physical)
        engine: Engine | None = None
        try:
            engine = self.new_engine(engine_config, isolate=bounded_in_process)
            info = engine.start()
        except Exception as exc:
            self._engine_error = (
                f"engine {engine_config.engine!r} failed to start: {type(exc).__name__}: {exc}"
            )
            try:
                if engine is not None:
                    engine.close()
            except Exception:  # already broken; the start error is what matters
                log.exception("closing an engine that failed to start")
            self._record_start_failure(engine_config, exc)
            raise EngineStartError(self._engine_error) from exc
        self._engine, self._engine_info = engine, info
        load_s = time.perf_counter() - started
        self.engine_starts += 1
        memory_after = gpu_memory_used(physical)
        if memory_before is not None and memory_after is not None:
            self.engine_memory = {i: memory_after[i] - memory_before[i] for i in physical}
        return engine, info, load_s

    def new_engine(self, engine_config: EngineConfig, isolate: bool = False) -> Engine:
        """An engine for `engine_config`, not started: in a child process where its spec,
        its `python` setting, `--llmperf-isolate` or `isolate` say so. `llmperf.compare`
        starts its second side's this way, beside the loaded one (on the same GPUs)."""
        spec = engine_spec(engine_config.engine)
        # An engine under another interpreter (its `python` setting) runs in a child too.
        other_python = engine_config.setting("python") is not None
        if spec.traits.isolated or self.settings.isolate or isolate or other_python:
            return IsolatedEngine(
                spec,
                engine_config,
                start_timeout_s=self.settings.engine_start_timeout_s,
                stream_timeout_s=self.settings.request_timeout_s,
            )
        return load_engine_class(engine_config.engine)(engine_config)

    def _record_start_failure(self, engine_config: EngineConfig, exc: Exception) -> None:
        """An engine that failed to start leaves the run folder with why and, for a
        server, the whole command it ran: a run whose every engine failed is a run too."""
        self.ensure_metadata()
        self.writer.append_engine_failure(
            {
                "engine_config": engine_config.describe(),
                "error": self._engine_error,
                "command": list(exc.argv) if isinstance(exc, ServerError) else None,
                "worker": self.worker_id,
                "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )

    def terminate_engine(self, reason: str) -> None:
        """End the loaded engine's processes now, from any thread (a test's bound)."""
        engine = self._engine
        if isinstance(engine, Terminable):
            log.warning("ending the engine's processes: %s", reason)
            engine.terminate(reason)

    def close_engine(self) -> None:
        engine, self._engine = self._engine, None
        config = self._engine_config
        self._engine_config = self._engine_info = self._engine_error = None
        self._engine_key = None
        self.engine_memory = None
        try:
            if engine is not None:
                engine.close()
        finally:
            held, self.lease = self.lease, None
            if held is not None:
                held.release()
        if isinstance(engine, IsolatedEngine) and config is not None:
            self.handovers.append({"engine_config": config.describe(), **(engine.released or {})})

    # --- end of run ----------------------------------------------------------------

    def finish(self, interrupted: bool = False) -> None:
        try:
            self.close_engine()
        finally:
            reaper.close()  # ends whatever group a failed close left behind
            self.writer.close()
            if self.xdist_run_uid is not None:
                shutil.rmtree(shared_servers_dir(self.xdist_run_uid), ignore_errors=True)
        if not self.is_controller or not has_measurements(self.run_dir):
            return  # a run that measured nothing leaves no folder behind
        self.ensure_metadata()
        if self.worker_threads:  # known only at each worker's end
            self.metadata["threads"]["workers"] = self.worker_threads
            self.writer.write_metadata(self.metadata)
        tests = read_test_records(self.run_dir)
        extra: dict[str, Any] = {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "interrupted": interrupted,
            "engine_handovers": self.handovers,
            "outcomes": self.outcomes,
        }
        update_error: LLMPerfUsageError | None = None
        if self.settings.update_thresholds:
            try:
                self.update_report = self._update_thresholds(tests)
                extra["thresholds_update"] = asdict(self.update_report)
            except LLMPerfUsageError as exc:  # a file another writer broke: left as it is
                update_error = exc
                extra["thresholds_update"] = {"error": str(exc)}
        self.unmatched_thresholds = self._unmatched(tests)
        if loads := merged_loads(tests, self.run_dir):  # loads split over workers: merged
            extra["split_loads"] = loads
        self.summary_path = write_summary(self.run_dir, extra)
        run = read_run(self.run_dir)
        write_github_benchmark(run)
        write_tests_csv(run)
        if update_error is not None:  # after the summary: the run's results are whole
            raise LLMPerfUsageError(f"--llmperf-update-thresholds: {update_error}") from None

    def _update_thresholds(self, tests: Sequence[TestRecord]) -> UpdateReport:
        by_engine: dict[str, dict[str, Observed]] = {}
        for test in tests:
            by_engine.setdefault(test.engine, {})[test.threshold_key] = Observed.of([test])
        merged = UpdateReport(written=[], loosened=[], refused=[])
        gate = self.settings.gate
        for engine, results in by_engine.items():
            path = self.update_target(engine)
            # Timed code's metrics are its own: bound each one it measured round by round.
            own = (
                sorted({m for o in results.values() for m in o.runs})
                if engine == OWN_ENGINE
                else ()
            )
            report = update_thresholds(
                path,
                results,
                self.settings.threshold_margin,
                tuple(own) or DEFAULT_THRESHOLD_METRICS,
                gate.drift,
                gate.alpha,
            )
            merged.written.extend(f"{path}: {t}" for t in report.written)
            merged.loosened.extend(report.loosened)
            merged.refused.extend(f"{path}: {r}" for r in report.refused)
        return merged

    def _unmatched(self, tests: Sequence[TestRecord]) -> list[str]:
        seen_ids = set(self.collected_ids) | {t.threshold_key for t in tests}
        seen_metrics = {m for t in tests for m in t.metrics_flat}
        messages: list[str] = []
        for engine in sorted({t.engine for t in tests} | {self.settings.engine}):
            messages.extend(
                self.thresholds_for(engine).unmatched(
                    seen_ids, seen_metrics, {t.threshold_key for t in tests}
                )
            )
        return messages


def _load_average() -> float | None:
    """The machine's load over the last minute (runnable processes), None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
