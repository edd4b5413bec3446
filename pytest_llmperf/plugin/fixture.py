"""`llmperf`, the fixture a benchmark test uses: `llmperf.measure(config, workload)`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.engines import load_engine_class
from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    ScoringUnsupported,
)
from pytest_llmperf.hardware.gpus import marker_gpu_count
from pytest_llmperf.hardware.leases import gpu_processes
from pytest_llmperf.hardware.telemetry import Sampler
from pytest_llmperf.measure.bandwidth import bandwidth_metrics, peak_bandwidth
from pytest_llmperf.measure.harness import run_round
from pytest_llmperf.measure.metrics import (
    AggregateMetrics,
    RequestRecord,
    flatten,
    server_timing_metrics,
)
from pytest_llmperf.plugin.session import EngineStartError, LLMPerfSession
from pytest_llmperf.results.compare import BaselineCheck, changes_table, check_against
from pytest_llmperf.results.record import (
    BoundCheck,
    ConfigRecord,
    EngineConfigRecord,
    EngineInfoRecord,
    GpuRecord,
    TestRecord,
    ThresholdsRecord,
)
from pytest_llmperf.results.responses import write_responses
from pytest_llmperf.suite.accuracy import ChoiceTask
from pytest_llmperf.suite.grid import Config
from pytest_llmperf.suite.load import SLO, Arrivals, client_check
from pytest_llmperf.suite.workload import (
    Workload,
    check_responses,
    offline_tokenizer,
    prompt_length,
)
from pytest_llmperf.thresholds.files import CheckResult

DEFAULT_CONFIG = Config(name="default")


@dataclass(frozen=True)
class Measurement:
    """What `llmperf.measure` returns: the metrics, every record and the verdicts."""

    test_id: str
    metrics: AggregateMetrics
    records: tuple[RequestRecord, ...]
    engine_info: EngineInfo
    engine_load_s: float | None
    thresholds: CheckResult

    @property
    def flat(self) -> dict[str, float | int | None]:
        return flatten(self.metrics.as_dict())


class LLMPerfFixture:
    """Measures workloads on the run's engine and records them for this test."""

    def __init__(self, request: pytest.FixtureRequest, session: LLMPerfSession) -> None:
        self._request = request
        self._session = session
        self._labels: set[str | None] = set()
        self._benchmark_used = False

    @property
    def session(self) -> LLMPerfSession:
        return self._session

    def engine_config(
        self, config: Config = DEFAULT_CONFIG, model: str | None = None
    ) -> EngineConfig:
        """The engine configuration a grid point maps to on this run."""
        name = config.engine or self._session.settings.engine
        accepted = load_engine_class(name).settings_accepted
        given = {**dict(self._session.settings.engine_options), **dict(config.engine_settings)}
        settings = {k: v for k, v in given.items() if k in accepted}
        return EngineConfig.make(name, model or self._session.settings.model, settings)

    def gpu_count(self, config: Config = DEFAULT_CONFIG) -> int:
        """GPUs this test leases: tensor parallel size or its `gpu(n)` mark, none on a CPU run."""
        name = config.engine or self._session.settings.engine
        if not self._session.gpus or not getattr(load_engine_class(name), "uses_gpus", True):
            return 0
        node = self._request.node
        marked = [marker_gpu_count(node.nodeid, m.args, m.kwargs) for m in node.iter_markers("gpu")]
        return max([config.tensor_parallel_size, *marked])

    def measure(
        self,
        config: Config = DEFAULT_CONFIG,
        workload: Workload | None = None,
        *,
        rounds: int = 3,
        warmup_rounds: int = 1,
        label: str | None = None,
        extra_metrics: Mapping[str, float | None] | None = None,
        arrivals: Arrivals | None = None,
        slo: SLO | None = None,
        model: str | None = None,
        score: Callable[[Sequence[RequestRecord]], Mapping[str, float | None]] | None = None,
        derived: Callable[[AggregateMetrics], Mapping[str, float | None]] | None = None,
    ) -> Measurement:
        """Run `workload` on the engine for `config`: warm-up rounds, then measured rounds.

        Every round sends all requests at once. Warm-up rounds are run and discarded.
        The metrics go to pytest-benchmark (`extra_info`), the results folder and the
        thresholds; a missed bound fails the test with a table, after everything has
        been recorded. Call it once per test, or give each call its own `label`.

        `arrivals` sends the requests open loop, at a rate (client engines only: others
        skip the test); `slo` adds goodput metrics (see `pytest_llmperf.suite.load`).
        `model` replaces the run's `--model` for this call; `score` turns the measured
        records into more metrics (e.g. `GenerationTask.score`: exact match), checked by
        thresholds like the rest; `derived` turns the aggregate metrics into more (e.g.
        `ScalingSeries.metrics`: speedup over one worker).
        """
        if workload is None:
            raise TypeError("measure() needs a workload, e.g. SyntheticWorkload()")
        if label in self._labels:
            raise ValueError(f"measure() called twice with label {label!r}: give each a label")
        self._labels.add(label)
        rounds = self._session.settings.rounds or rounds
        test_id = self._request.node.nodeid + (f"@{label}" if label else "")
        engine_config = self.engine_config(config, model)
        engine_cls = load_engine_class(engine_config.engine)
        if arrivals is not None and not getattr(engine_cls, "supports_arrivals", False):
            pytest.skip(
                f"engine {engine_config.engine!r} runs a batch at once; open-loop "
                "arrivals need a client engine (openai, vllm-server)"
            )
        workload = workload.with_overrides(dict(config.workload_settings))
        if self._session.settings.dry_run:
            self._dry_run(test_id, workload, engine_config)
        engine, info, load_s = self._start_engine(engine_config, config)
        try:
            requests = self._limited(workload.build(engine.tokenizer))
        except Exception:
            death = getattr(engine, "death_cause", None)
            if not death:
                raise
            # The engine died before this measurement (its tokenizer lives in it too).
            raise pytest.fail.Exception(
                f"engine died during {test_id}: {death}\n"
                f"{getattr(engine, 'log_errors', lambda: '')()}",
                pytrace=False,
            ) from None
        if arrivals is not None:
            requests = arrivals.apply(requests)
        held = self._session.lease
        sampler = Sampler(held.physical if held is not None else ())
        built_before = getattr(engine, "graph_build_s", None)
        records, durations, client = self._run_rounds(
            engine, requests, rounds, warmup_rounds, sampler
        )
        out_tokens = sum(r.output_tokens for r in records if r.error is None)
        metrics = AggregateMetrics.from_records(records, durations)
        extra: dict[str, float | None] = dict(extra_metrics or {})
        extra.update(sampler.stop(out_tokens))
        if slo is not None:
            extra.update(slo.goodput(records, sum(durations)))
        extra.update(client_check(client, durations, sum(r.output_tokens for r in records)))
        extra.update(server_timing_metrics(records))
        if score is not None:
            extra.update(score(records))
        if built_before is not None:  # compile + capture, in whichever round it happened
            extra["graph_build_s"] = getattr(engine, "graph_build_s", 0.0) - built_before
        if extra:
            metrics = metrics.with_extra(**extra)
        physical = held.physical if held is not None else ()
        if physical:
            peak = peak_bandwidth(physical)
            metrics = metrics.with_extra(**bandwidth_metrics(metrics, records, info.details, peak))
        if derived is not None:  # metrics of metrics: e.g. speedup over another measurement
            metrics = metrics.with_extra(**derived(metrics))
        flat = flatten(metrics.as_dict())
        check, against = self._judge(test_id, engine_config, flat)
        responses = None
        if self._session.settings.responses:
            responses = write_responses(self._session.run_dir, test_id, requests, records)
        self._record(
            test_id,
            config,
            workload,
            engine_config,
            info,
            load_s,
            metrics,
            flat,
            check,
            rounds,
            warmup_rounds,
            against,
            responses,
        )
        measurement = Measurement(test_id, metrics, tuple(records), info, load_s, check)
        death = getattr(engine, "death_cause", None)
        if death:
            pytest.fail(
                f"engine died during {test_id}: {death}\n"
                f"{getattr(engine, 'log_errors', lambda: '')()}",
                pytrace=False,
            )
        self._fail_if_missed(test_id, check, against)
        return measurement

    def evaluate_choices(
        self,
        task: ChoiceTask,
        config: Config = DEFAULT_CONFIG,
        *,
        model: str | None = None,
        label: str | None = None,
    ) -> Measurement:
        """Score every choice of `task` by log-likelihood; accuracy and questions per second.

        One untimed warm-up pass over the first question, then one timed pass over all
        of them (the engine batches choices as it likes; the hf engine puts all choices
        of a question, and many questions, in one forward pass). Metrics are defined in
        `pytest_llmperf.suite.accuracy`; thresholds check them like speed.
        """
        if label in self._labels:
            raise ValueError(f"called twice with label {label!r}: give each call a label")
        self._labels.add(label)
        test_id = self._request.node.nodeid + (f"@{label}" if label else "")
        engine_config = self.engine_config(config, model)
        if not getattr(load_engine_class(engine_config.engine), "supports_scoring", False):
            pytest.skip(
                f"engine {engine_config.engine!r} cannot score log-likelihoods "
                "(multiple choice needs an engine with `score`, e.g. hf)"
            )
        limit = self._session.settings.limit
        if limit is not None:
            task = replace(task, items=task.items[:limit])
        if self._session.settings.dry_run:
            pytest.skip(
                f"dry run: {len(task.items)} questions, {len(task.requests())} choices to "
                f"score; engine {engine_config.engine!r} not started"
            )
        engine, info, load_s = self._start_engine(engine_config, config)
        requests = task.requests()
        try:
            engine.score(requests[: len(task.items[0].choices)])  # warm-up, discarded
        except ScoringUnsupported as exc:  # found out only by asking (a server's API)
            pytest.skip(f"engine {engine_config.engine!r} cannot score here: {exc}")
        timed: dict[str, Any] = {}

        def timed_pass() -> None:
            started = time.perf_counter()
            timed["results"] = engine.score(requests)
            timed["duration"] = time.perf_counter() - started

        self._repeat(timed_pass, rounds=1, warmup_rounds=0)
        results, duration = timed["results"], timed["duration"]
        metrics = AggregateMetrics.from_records([], [duration]).with_extra(
            **task.metrics(results, duration)
        )
        flat = flatten(metrics.as_dict())
        check, against = self._judge(test_id, engine_config, flat)
        self._record(
            test_id, config, task, engine_config, info, load_s, metrics, flat, check, 1, 1, against
        )
        self._fail_if_missed(test_id, check, against)
        return Measurement(test_id, metrics, (), info, load_s, check)

    def _limited(self, requests: list[GenerationRequest]) -> list[GenerationRequest]:
        limit = self._session.settings.limit
        return requests if limit is None else requests[:limit]

    def _dry_run(self, test_id: str, workload: Workload, engine_config: EngineConfig) -> None:
        """Build and tokenize the requests as the run would, start nothing, and skip."""
        tokenizer = offline_tokenizer(engine_config)
        if tokenizer is None:
            pytest.skip(
                f"dry run: no local tokenizer for {engine_config.model!r} (set the engine's "
                "`tokenizer` setting) so the requests were not built; engine not started"
            )
        requests = self._limited(workload.build(tokenizer))
        prompt_tokens = sum(prompt_length(tokenizer, r) for r in requests)
        longest = max((r.sampling.max_tokens for r in requests), default=0)
        pytest.skip(
            f"dry run: {test_id}: {len(requests)} requests, {prompt_tokens} prompt tokens, "
            f"max_tokens up to {longest}; engine {engine_config.engine!r} not started"
        )

    def _judge(
        self, test_id: str, engine_config: EngineConfig, flat: Mapping[str, Any]
    ) -> tuple[CheckResult, BaselineCheck | None]:
        """The thresholds' verdict and, with `--llmperf-compare`, the baseline's."""
        check = self._session.thresholds_for(engine_config.engine).check(test_id, flat)
        baseline = self._session.baseline
        against = (
            check_against(baseline, test_id, flat, self._session.tolerances)
            if baseline is not None
            else None
        )
        return check, against

    def _fail_if_missed(
        self, test_id: str, check: CheckResult, against: BaselineCheck | None
    ) -> None:
        """Fail the test, after it was recorded, for missed bounds or regressions."""
        problems = []
        if not check.passed and not self._session.settings.update_thresholds:
            problems.append(f"thresholds missed for {test_id}\n{check.table()}")
        if against is not None and against.regressions:
            problems.append(
                f"regressed against baseline run {against.base_run_id} for {test_id}\n"
                + changes_table(against.regressions)
            )
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)

    def _start_engine(
        self, engine_config: EngineConfig, config: Config
    ) -> tuple[Any, EngineInfo, float | None]:
        """The session's engine for this configuration; a failed start fails the test."""
        try:
            started = self._session.engine_for(engine_config, self.gpu_count(config))
        except EngineStartError as exc:
            # `from None`: the message already says why; a chained traceback would repeat it.
            raise pytest.fail.Exception(str(exc), pytrace=False) from None
        self._session.ensure_metadata()
        return started

    def _run_rounds(
        self,
        engine: Any,
        requests: list[GenerationRequest],
        rounds: int,
        warmup_rounds: int,
        sampler: Sampler,
    ) -> tuple[list[RequestRecord], list[float], list[dict[str, float]]]:
        kept: list[RequestRecord] = []
        durations: list[float] = []
        client: list[dict[str, float]] = []
        count = 0
        writer = self._session.writer
        test_id = self._request.node.nodeid

        def one_round() -> None:
            nonlocal count
            if getattr(engine, "death_cause", None):
                return  # the engine's process is gone: the test fails after recording
            warmup = count < warmup_rounds
            index = count - warmup_rounds
            count += 1

            if index == 0:
                sampler.start()  # telemetry covers the measured rounds, not the warm-up
            # Records are written when the round ends, not while it runs: a write inside the
            # loop would delay the next chunk's timestamp (and, for an in-process engine,
            # the engine itself). A run killed mid-way keeps every finished round.
            records, duration = run_round(engine, requests, index)
            if warmup:
                return
            for record in records:
                writer.append_request({"test_id": test_id, **record.as_dict()})
            problems = check_responses(requests, [r.custom_id for r in records])
            if problems:
                raise AssertionError("; ".join(problems))
            kept.extend(records)
            durations.append(duration)
            stats = getattr(engine, "last_round_stats", None)
            if stats:
                client.append(dict(stats))

        self._repeat(one_round, rounds, warmup_rounds)
        return kept, durations, client

    def _repeat(self, one_round: Callable[[], None], rounds: int, warmup_rounds: int) -> None:
        """Call `one_round` warm-up + measured times, through pytest-benchmark when it can."""
        benchmark = self._benchmark()
        # pytest-benchmark allows one pedantic call per test; later labels use our loop.
        if benchmark is not None and not benchmark.disabled and not self._benchmark_used:
            self._benchmark_used = True
            benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        else:  # pytest-benchmark is off (xdist, --benchmark-disable): same rounds, our loop
            for _ in range(warmup_rounds + rounds):
                one_round()

    def _gpu_record(self) -> GpuRecord | None:
        """The leased GPUs and every process NVML sees on them (proof of isolation)."""
        held = self._session.lease
        if held is None:
            return None
        return GpuRecord(
            cuda=tuple(held.gpus),
            physical=tuple(held.physical),
            processes={str(i): tuple(procs) for i, procs in gpu_processes(held.physical).items()},
        )

    def _benchmark(self) -> Any:
        if not self._request.config.pluginmanager.hasplugin("benchmark"):
            return None
        return self._request.getfixturevalue("benchmark")

    def _record(
        self,
        test_id: str,
        config: Config,
        workload: Workload | ChoiceTask,
        engine_config: EngineConfig,
        info: EngineInfo,
        load_s: float | None,
        metrics: AggregateMetrics,
        flat: Mapping[str, Any],
        check: CheckResult,
        rounds: int,
        warmup_rounds: int,
        against: BaselineCheck | None = None,
        responses: Path | None = None,
    ) -> None:
        benchmark = self._benchmark()
        if benchmark is not None:
            benchmark.extra_info.update({k: v for k, v in flat.items() if v is not None})
            benchmark.extra_info["llmperf_config"] = config.name
        record = TestRecord(
            test_id=self._request.node.nodeid,
            threshold_key=test_id,
            config=ConfigRecord.from_record(config.describe(), f"config {config.name!r}"),
            engine=engine_config.engine,
            engine_config=EngineConfigRecord.from_record(
                engine_config.describe(), f"engine {engine_config.engine!r}"
            ),
            engine_info=EngineInfoRecord(
                info.engine, info.model, info.device, info.dtype, dict(info.details)
            ),
            engine_load_s=load_s,
            workload=workload.describe(),
            rounds=rounds,
            warmup_rounds=warmup_rounds,
            worker=self._session.worker_id,
            worker_pid=os.getpid(),
            gpus=self._gpu_record(),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            metrics=metrics.as_dict(),
            metrics_flat=dict(flat),
            thresholds=ThresholdsRecord(
                passed=check.passed,
                checked=tuple(
                    BoundCheck(
                        metric=v.bound.metric,
                        measured=v.measured,
                        min=v.bound.min,
                        max=v.bound.max,
                        ok=v.ok,
                        file=str(v.bound.file),
                        line=v.bound.line,
                    )
                    for v in check.verdicts
                ),
            ),
            baseline=against.as_record() if against is not None else None,
            responses=str(responses) if responses is not None else None,
        )
        self._session.writer.append_test(record.as_record())
