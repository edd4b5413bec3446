"""`llmperf`, the fixture a benchmark test uses: `llmperf.measure(config, workload)`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pytest

from pytest_llmperf.engines import engine_spec
from pytest_llmperf.engines.base import (
    Engine,
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    Scorer,
    ScoreResult,
    ScoringUnsupported,
    death_cause,
    log_errors,
)
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.hardware.gpus import marker_gpu_count
from pytest_llmperf.measure.evidence import MARKER as ALLOW_MARKER
from pytest_llmperf.measure.evidence import marker_allowance, of_questions, of_requests
from pytest_llmperf.measure.metrics import AggregateMetrics, RequestRecord, flatten
from pytest_llmperf.measure.rounds import RoundPlan, Rounds, repeat_through, run_rounds
from pytest_llmperf.plugin.ab.compare import ComparisonMethods
from pytest_llmperf.plugin.arguments import (
    check_config,
    check_evaluate_choices,
    check_measure,
)
from pytest_llmperf.plugin.decide import RoundsUntilDecided
from pytest_llmperf.plugin.own.methods import TimingMethods
from pytest_llmperf.plugin.pipeline import (
    MoreMetrics,
    Outcome,
    RoundWatch,
    StartedEngine,
    Subject,
    aggregate,
    allowance,
    build_requests,
    judge,
    limited,
    make_record,
    round_builder,
    round_samples,
)
from pytest_llmperf.plugin.progress import open_progress
from pytest_llmperf.plugin.session import EngineStartError, LLMPerfSession
from pytest_llmperf.plugin.slo.search import SearchMethods
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.responses import write_responses
from pytest_llmperf.suite.accuracy import ChoiceTask
from pytest_llmperf.suite.arguments import bad
from pytest_llmperf.suite.config import Config, NotForEngine, fit
from pytest_llmperf.suite.load import SLO, Arrivals
from pytest_llmperf.suite.split import LoadShare, barrier
from pytest_llmperf.suite.workload import (
    Scheduled,
    Workload,
    check_responses,
    offline_tokenizer,
    prompt_length,
)
from pytest_llmperf.thresholds.check import CheckResult

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


class LLMPerfFixture(TimingMethods, ComparisonMethods, SearchMethods):
    """Measures workloads on the run's engine, two sides in turns (`ComparisonMethods`), the
    highest load under an SLO (`SearchMethods`) and the test's own code (`TimingMethods`),
    and records them for this test."""

    def __init__(self, request: pytest.FixtureRequest, session: LLMPerfSession) -> None:
        self._request = request
        self._session = session
        self._labels: set[str | None] = set()
        self._benchmark_used = False
        self._started = time.monotonic()  # the status line waits for the test to run a while

    @property
    def session(self) -> LLMPerfSession:
        return self._session

    def engine_config(
        self, config: Config = DEFAULT_CONFIG, model: str | None = None
    ) -> EngineConfig:
        """The engine configuration a grid point maps to on this run.

        Its settings are checked against the engine's spec (`suite.config.fit`): a test
        whose configuration the engine cannot run as written fails saying why, one of a
        grid meant for other engines skips."""
        try:
            fitted = fit(config, self._session.settings.engine)
        except NotForEngine as exc:
            pytest.skip(str(exc))
        except LLMPerfUsageError as exc:  # a configuration made in the test, after collection
            pytest.fail(str(exc), pytrace=False)
        spec = engine_spec(fitted.engine)
        # The run's options (server URL, key variable) reach every engine that takes them.
        options = {k: v for k, v in self._session.settings.engine_options if spec.setting(k)}
        return EngineConfig.make(
            fitted.engine,
            model or self._session.settings.model,
            {**options, **fitted.settings},
            not_applied=fitted.not_applied,
        )

    def gpu_count(self, config: Config = DEFAULT_CONFIG) -> int:
        """GPUs this test leases: those its configuration uses on this host (`gpus_on_host`:
        tensor x pipeline x data parallel) or its `gpu(n)` mark, none on a CPU run."""
        name = config.engine or self._session.settings.engine
        if not self._session.gpus or not engine_spec(name).traits.uses_gpus:
            return 0
        node = self._request.node
        marked = [marker_gpu_count(node.nodeid, m.args, m.kwargs) for m in node.iter_markers("gpu")]
        return max([config.gpus_on_host, *marked])

    def measure(
        self,
        config: Config = DEFAULT_CONFIG,
        workload: Workload | None = None,
        *,
        rounds: int | Literal["auto"] = 3,
        warmup_rounds: int = 1,
        label: str | None = None,
        extra_metrics: Mapping[str, float | None] | None = None,
        arrivals: Arrivals | None = None,
        slo: SLO | None = None,
        model: str | None = None,
        score: Callable[[Sequence[RequestRecord]], Mapping[str, float | None]] | None = None,
        derived: Callable[[AggregateMetrics], Mapping[str, float | None]] | None = None,
        allowed_failure_rate: float | None = None,
        share: LoadShare | None = None,
    ) -> Measurement:
        """Run `workload` on the engine for `config`: warm-up rounds, then measured rounds.

        Every round sends all requests at once. Warm-up rounds (0 or more) are run and
        discarded; measured rounds are at least 1. The metrics go to pytest-benchmark
        (`extra_info`), the results folder and the thresholds. The test fails, after
        everything has been recorded, when it measured no request, when more of its
        requests failed than allowed (none, unless `allowed_failure_rate`, the marker
        `llmperf_allow_failures(rate)` or its thresholds' `failure_rate` say otherwise:
        `pytest_llmperf.measure.evidence`), when a bound is missed (with a table) or a
        metric regressed against the baseline. Call it once per test, or give each call
        its own `label`. Arguments are checked before any engine starts: a wrong one is
        a usage error naming it and its value.

        `arrivals` sends the requests open loop, at a rate (client engines only: others
        skip the test); `slo` adds goodput metrics (see `pytest_llmperf.suite.load`).
        `model` replaces the run's `--model` for this call; `score` turns the measured
        records into more metrics (e.g. `GenerationTask.score`: exact match), checked by
        thresholds like the rest; `derived` turns the aggregate metrics into more (e.g.
        `ScalingSeries.metrics`: speedup over one worker). `share` makes the call one
        client's share of a load split over xdist workers (`split_load`, `suite.split`):
        each measured round starts when every share has reached it.
        """
        check_measure(
            config,
            workload,
            rounds=rounds,
            warmup_rounds=warmup_rounds,
            label=label,
            extra_metrics=extra_metrics,
            arrivals=arrivals,
            slo=slo,
            model=model,
            score=score,
            derived=derived,
            allowed_failure_rate=allowed_failure_rate,
            share=share,
        )
        assert workload is not None  # checked: a workload
        key = self._claim("measure()", label)
        chosen = self._session.settings.rounds or rounds
        gate = self._session.settings.gate
        auto = chosen == "auto"
        plan = RoundPlan(gate.max_rounds if chosen == "auto" else chosen, warmup_rounds)
        engine_config = self.engine_config(config, model)
        timed = isinstance(workload, Scheduled) and workload.scheduled()
        if arrivals is not None and timed:
            problem = (
                "this workload sends on its own times (a trace's timestamps): give no arrivals"
            )
            raise bad("measure()", "arrivals", arrivals, problem)
        takes_arrivals = engine_spec(engine_config.engine).traits.takes_arrivals
        if (arrivals is not None or timed) and not takes_arrivals:
            need = (
                "a trace replayed on its timestamps needs a client engine (openai, "
                "vllm-server; TraceWorkload(timed=False) sends its shapes at once)"
                if timed
                else "open-loop arrivals need a client engine (openai, vllm-server)"
            )
            pytest.skip(f"engine {engine_config.engine!r} runs a batch at once; {need}")
        workload = workload.with_overrides(dict(config.workload_settings))
        more = MoreMetrics.of(workload, extra_metrics, slo, score, derived)
        subject = Subject(self._request.node.nodeid, key, config, engine_config, workload)
        if self._session.settings.dry_run:
            self._dry_run(subject, workload)
        started = self._start_engine(engine_config, config)
        requests = self._build_requests(subject, started, workload, arrivals)
        looks = RoundsUntilDecided(self._session, key, engine_config.engine, more) if auto else None
        fresh = round_builder(started.engine, workload, self._session.settings.limit, arrivals)
        measured, telemetry = self._run_rounds(started, requests, plan, key, looks, fresh, share)
        metrics = aggregate(measured, telemetry, more, self._physical(), started.info.details)
        samples = round_samples(measured, more)
        rounds_done = len(measured.durations)
        alpha = gate.look_alpha(rounds_done) if auto else gate.alpha
        verdicts = judge(self._session, key, engine_config.engine, metrics, samples, alpha)
        stop = looks.stop(rounds_done, verdicts) if looks is not None else None
        allowed = allowance(
            self._session, key, engine_config.engine, allowed_failure_rate, self._marked_rate()
        )
        evidence = of_requests(measured.records, allowed)
        # The responses table (--llmperf-responses): measured round i of a fresh workload
        # sent what was built as round warmup + i.
        sent = requests if fresh is None else lambda i: fresh(plan.warmup_rounds + i)
        responses = (
            write_responses(self._session.run_dir, key, sent, measured.records)
            if self._session.settings.responses
            else None
        )
        outcome = Outcome(metrics, verdicts, evidence, responses, samples, stop)
        record = make_record(self._session, subject, started, plan, outcome)
        self._record(replace(record, split=share.describe()) if share else record)
        self._fail_if_dead(started.engine, key)
        self._fail_if_missed(key, outcome)
        return Measurement(
            key, metrics, measured.records, started.info, started.load_s, verdicts.thresholds
        )

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
        `pytest_llmperf.suite.accuracy`; thresholds check them like speed. The test
        fails, after it was recorded, when no question was scored.
        """
        check_evaluate_choices(task, config, label, model)
        key = self._claim("evaluate_choices()", label)
        engine_config = self.engine_config(config, model)
        if not engine_spec(engine_config.engine).traits.scores:
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
        started = self._start_engine(engine_config, config)
        results, duration = self._score_choices(started, task, engine_config.engine)
        metrics = AggregateMetrics.from_records([], [duration]).with_extra(
            **task.metrics(results, duration)
        )
        verdicts = judge(self._session, key, engine_config.engine, metrics, {})
        subject = Subject(self._request.node.nodeid, key, config, engine_config, task)
        plan = RoundPlan(rounds=1, warmup_rounds=1)
        outcome = Outcome(metrics, verdicts, of_questions(len(task.items)))
        self._record(make_record(self._session, subject, started, plan, outcome))
        self._fail_if_missed(key, outcome)
        return Measurement(key, metrics, (), started.info, started.load_s, verdicts.thresholds)

    def engine(self, config: Config = DEFAULT_CONFIG, model: str | None = None) -> Engine:
        """The started engine for `config` (the `llmperf_engine` fixture), for a test that
        drives it itself: the one `measure` uses, shared with the configuration's other
        tests and closed when the configuration changes."""
        check_config("llmperf_engine()", config)
        engine_config = self.engine_config(config, model)
        if self._session.settings.dry_run:
            pytest.skip(f"dry run: engine {engine_config.engine!r} not started")
        return self._start_engine(engine_config, config).engine

    def _claim(self, call: str, label: str | None) -> str:
        """The key of this call's measurement; a label used twice is a usage error."""
        if label in self._labels:
            raise bad(
                call,
                "label",
                label,
                "this test already measured with it: give each call its own label",
            )
        self._labels.add(label)
        node_id: str = self._request.node.nodeid
        return node_id + (f"@{label}" if label else "")

    def _dry_run(self, subject: Subject, workload: Workload) -> None:
        """Build and tokenize the requests as the run would, start nothing, and skip."""
        engine_config = subject.engine_config
        tokenizer = offline_tokenizer(engine_config)
        if tokenizer is None:
            pytest.skip(
                f"dry run: no local tokenizer for {engine_config.model!r} (set the engine's "
                "`tokenizer` setting) so the requests were not built; engine not started"
            )
        requests = limited(workload.build(tokenizer), self._session.settings.limit)
        prompt_tokens = sum(prompt_length(tokenizer, r) for r in requests)
        longest = max((r.sampling.max_tokens for r in requests), default=0)
        pytest.skip(
            f"dry run: {subject.key}: {len(requests)} requests, {prompt_tokens} prompt tokens, "
            f"max_tokens up to {longest}; engine {engine_config.engine!r} not started"
        )

    def _start_engine(self, engine_config: EngineConfig, config: Config) -> StartedEngine:
        """The session's engine for this configuration; a failed start fails the test."""
        try:
            engine, info, load_s = self._session.engine_for(engine_config, self.gpu_count(config))
        except EngineStartError as exc:
            # `from None`: the message already says why; a chained traceback would repeat it.
            raise pytest.fail.Exception(str(exc), pytrace=False) from None
        self._session.ensure_metadata()
        return StartedEngine(engine, info, load_s)

    def _build_requests(
        self,
        subject: Subject,
        started: StartedEngine,
        workload: Workload,
        arrivals: Arrivals | None,
    ) -> list[GenerationRequest]:
        try:
            return build_requests(started.engine, workload, self._session.settings.limit, arrivals)
        except Exception:
            death = self._death(started.engine, subject.key)
            if not death:
                raise
            # The engine died before this measurement (its tokenizer lives in it too).
            raise pytest.fail.Exception(death, pytrace=False) from None

    def _run_rounds(
        self,
        started: StartedEngine,
        requests: list[GenerationRequest],
        plan: RoundPlan,
        key: str,
        looks: RoundsUntilDecided | None = None,
        fresh: Callable[[int], Sequence[GenerationRequest]] | None = None,
        share: LoadShare | None = None,
    ) -> tuple[Rounds, dict[str, float | None]]:
        """The plan's rounds, and the GPUs' telemetry and the server's metrics over the
        measured ones."""
        if not requests:  # nothing to send (a workload that built none): the evidence says so
            return Rounds((), (), (), None), {}
        session = self._session
        watch = RoundWatch(started.engine, self._physical(), session.settings.metrics_interval_s)
        progress = open_progress(
            self._request.config,
            session.settings.progress,
            worker=not session.is_controller,
            total=None if looks is not None else plan.rounds,
            started=self._started,
        )
        if looks is not None:
            progress.undecided = looks.undecided  # the same list, refreshed at each look
        try:
            measured = run_rounds(
                started.engine,
                requests,
                plan,
                repeat=self._repeat,
                before_measuring=watch.start,
                before_round=barrier(
                    share, getattr(self._request.config, "workerinput", None), looks is not None
                ),
                after_round=lambda records: self._keep_round(requests, records),
                on_round=progress.on_round,
                keep_going=looks,
                fresh=fresh,
            )
        finally:
            progress.close()  # erased before pytest writes the outcome, failed or not
            watch.stop_reading()
        test_id = self._request.node.nodeid
        return measured, watch.metrics(session, measured.output_tokens, test_id, key)

    def _score_choices(
        self, started: StartedEngine, task: ChoiceTask, name: str
    ) -> tuple[list[ScoreResult], float]:
        """An untimed warm-up on the first question, then every choice scored, timed."""
        engine, requests = started.engine, task.requests()
        if not isinstance(engine, Scorer):
            raise TypeError(f"engine {name!r} says it scores but has no score()")
        try:
            engine.score(requests[: len(task.items[0].choices)])  # warm-up, discarded
        except ScoringUnsupported as exc:  # found out only by asking (a server's API)
            pytest.skip(f"engine {name!r} cannot score here: {exc}")
        timed: dict[str, Any] = {}

        def timed_pass() -> None:
            started = time.perf_counter()
            timed["results"] = engine.score(requests)
            timed["duration"] = time.perf_counter() - started

        self._repeat(timed_pass, rounds=1, warmup_rounds=0)
        return timed["results"], timed["duration"]

    def _death(self, engine: Engine, key: str) -> str | None:
        """Why the engine's process is gone, with its log's errors; None while it lives."""
        death = death_cause(engine)
        if not death:
            return None
        return f"engine died during {key}: {death}\n{log_errors(engine)}"

    def _fail_if_dead(self, engine: Engine, key: str) -> None:
        """Fail the test, after it was recorded, when the engine died during it."""
        death = self._death(engine, key)
        if death:
            pytest.fail(death, pytrace=False)

    def _keep_round(
        self, requests: Sequence[GenerationRequest], records: list[RequestRecord]
    ) -> None:
        """Write a measured round's records; a request the engine never answered is an error."""
        writer, test_id = self._session.writer, self._request.node.nodeid
        for record in records:
            writer.append_request({"test_id": test_id, **record.as_dict()})
        problems = check_responses(requests, [r.custom_id for r in records])
        if problems:
            raise AssertionError("; ".join(problems))

    def _physical(self) -> tuple[int, ...]:
        """The leased GPUs as NVML numbers them; none on a CPU run."""
        held = self._session.lease
        return held.physical if held is not None else ()

    def _fail_if_missed(self, key: str, outcome: Outcome) -> None:
        """Fail the test, after it was recorded, for lack of evidence, missed bounds or
        regressions."""
        problems = outcome.problems(key, self._session.settings.update_thresholds)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)

    def _marked_rate(self) -> float | None:
        """The rate of the test's `llmperf_allow_failures` marker, if it has one."""
        node = self._request.node
        marker = node.get_closest_marker(ALLOW_MARKER)
        return marker_allowance(node.nodeid, marker.args, marker.kwargs) if marker else None

    def _repeat(self, one_round: Callable[[], None], rounds: int, warmup_rounds: int) -> None:
        """Call `one_round` warm-up + measured times, through pytest-benchmark when it can."""
        # pytest-benchmark allows one pedantic call per test; later labels use our loop.
        benchmark = None if self._benchmark_used else self._benchmark()
        self._benchmark_used = self._benchmark_used or benchmark is not None
        repeat_through(benchmark, one_round, rounds, warmup_rounds)

    def _benchmark(self) -> Any:
        if not self._request.config.pluginmanager.hasplugin("benchmark"):
            return None
        return self._request.getfixturevalue("benchmark")

    def _record(self, record: TestRecord, benchmark_too: bool = True) -> None:
        """Give the metrics to pytest-benchmark and append the record to the run."""
        # Only a fixture the rounds used: one asked for now would warn that it was not.
        benchmark = self._benchmark() if benchmark_too and self._benchmark_used else None
        if benchmark is not None:
            flat = record.metrics_flat
            benchmark.extra_info.update({k: v for k, v in flat.items() if v is not None})
            benchmark.extra_info["llmperf_config"] = record.config.name
        self._session.writer.append_test(record.as_record())
