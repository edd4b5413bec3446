"""The steps of `llmperf.measure`, each a named function:

    build_requests -> run_rounds (`measure.rounds`) -> aggregate -> judge -> make_record

`judge` gives the thresholds' and the baseline's verdicts; beside them every measurement
gets the exact checks of `measure.evidence` (at least one request, failures within the
allowed rate, which `allowance` finds). `evaluate_choices` shares judge and make_record.
The fixture (`fixture`) strings the steps together and keeps what is pytest's own:
skipping, failing, pytest-benchmark. Each step takes the few small typed objects below
rather than a long list of values. The steps live here, in the top layer, because they
join the layers below (suite's workloads and SLOs, thresholds, results); the harness
that runs the rounds is `measure.rounds`, which knows none of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llmperf.engines.base import Engine, EngineConfig, EngineInfo, GenerationRequest
from pytest_llmperf.errors import where
from pytest_llmperf.hardware.leases import Lease, gpu_processes
from pytest_llmperf.hardware.telemetry import Sampler
from pytest_llmperf.measure.bandwidth import bandwidth_metrics, peak_bandwidth
from pytest_llmperf.measure.evidence import MARKER as ALLOW_MARKER
from pytest_llmperf.measure.evidence import Allowance, Evidence
from pytest_llmperf.measure.metrics import (
    AggregateMetrics,
    RequestRecord,
    flatten,
    server_timing_metrics,
)
from pytest_llmperf.measure.reliability import unreliable
from pytest_llmperf.measure.rounds import RoundPlan, Rounds
from pytest_llmperf.measure.samples import Samples, collect, harness_rounds, round_records
from pytest_llmperf.measure.server.scrape import Reads, scraper_for
from pytest_llmperf.measure.server.summary import server_metrics
from pytest_llmperf.results.baseline import BaselineCheck, judge_test
from pytest_llmperf.results.changes import changes_table
from pytest_llmperf.results.record import (
    BoundCheck,
    ConfigRecord,
    EngineConfigRecord,
    EngineInfoRecord,
    GpuRecord,
    StopRecord,
    TestRecord,
    ThresholdsRecord,
)
from pytest_llmperf.suite.accuracy import ChoiceTask
from pytest_llmperf.suite.config import Config
from pytest_llmperf.suite.load import SLO, Arrivals, client_check
from pytest_llmperf.suite.workload import FreshEachRound, Workload, WorkloadMetrics
from pytest_llmperf.thresholds.check import CheckResult, check

if TYPE_CHECKING:
    from pytest_llmperf.plugin.gate import Stop
    from pytest_llmperf.plugin.session import LLMPerfSession


@dataclass(frozen=True)
class Subject:
    """What one measurement measures, as its record names it."""

    #: The test's node id.
    test_id: str
    #: The node id, plus `@label` for a labelled call: how thresholds name it.
    key: str
    config: Config
    engine_config: EngineConfig
    workload: Workload | ChoiceTask


@dataclass(frozen=True)
class StartedEngine:
    """The session's engine for a measurement; `load_s` None when it was already loaded."""

    engine: Engine
    info: EngineInfo
    load_s: float | None


@dataclass(frozen=True)
class MoreMetrics:
    """What a test adds to the harness's metrics (`measure`'s keyword arguments)."""

    extra: Mapping[str, float | None] = field(default_factory=dict)
    slo: SLO | None = None
    score: Callable[[Sequence[RequestRecord]], Mapping[str, float | None]] | None = None
    derived: Callable[[AggregateMetrics], Mapping[str, float | None]] | None = None
    #: The workload's own metrics (`suite.workload.WorkloadMetrics`), applied as `score` is.
    workload: Callable[[Sequence[RequestRecord]], Mapping[str, float | None]] | None = None

    @classmethod
    def of(
        cls,
        workload: Workload,
        extra: Mapping[str, float | None] | None = None,
        slo: SLO | None = None,
        score: Callable[[Sequence[RequestRecord]], Mapping[str, float | None]] | None = None,
        derived: Callable[[AggregateMetrics], Mapping[str, float | None]] | None = None,
    ) -> MoreMetrics:
        """What `measure`'s arguments and `workload` add."""
        own = workload.workload_metrics if isinstance(workload, WorkloadMetrics) else None
        return cls(extra or {}, slo, score, derived, own)


@dataclass(frozen=True)
class Verdicts:
    """The thresholds' verdict and, with `--llmperf-compare`, the baseline's."""

    thresholds: CheckResult
    baseline: BaselineCheck | None
    #: `--llmperf-strict`: inconclusive verdicts fail the test too.
    strict: bool = False

    def looks(self) -> list[Look]:
        """Every judged bound and baseline metric, as the rule of rounds until decided sees
        it (`measure.stats.should_continue`)."""
        looks = [
            Look(v.outcome != "inconclusive", v.reducible, v.p_value or 1.0)
            for v in self.thresholds.verdicts
            if v.how == "samples"
        ]
        if self.baseline is not None:
            looks += [
                Look(c.verdict != "inconclusive", c.reducible or 0.0, c.p or 1.0)
                for c in self.baseline.changes
                if c.p is not None
            ]
        return looks

    def undecided(self) -> list[str]:
        """The metrics still inconclusive (bounds, then baseline)."""
        names = [v.bound.metric for v in self.thresholds.inconclusive]
        if self.baseline is not None:
            names += [c.metric for c in self.baseline.inconclusive]
        return list(dict.fromkeys(names))

    def problems(self, key: str, update_thresholds: bool) -> list[str]:
        """Why the test fails: missed bounds (unless they are being rewritten), regressions,
        and under `strict` what stayed inconclusive."""
        problems = []
        thresholds = self.thresholds
        if not thresholds.passed and not update_thresholds:
            problems.append(f"thresholds missed for {key}\n{thresholds.table()}")
        elif self.strict and thresholds.inconclusive and not update_thresholds:
            problems.append(
                f"thresholds inconclusive for {key} (--llmperf-strict)\n{thresholds.table()}"
            )
        against = self.baseline
        if against is not None and against.regressions:
            problems.append(
                f"regressed against baseline run {against.base_run_id} for {key}\n"
                + changes_table(against.regressions)
            )
        elif against is not None and self.strict and against.inconclusive:
            problems.append(
                f"inconclusive against baseline run {against.base_run_id} for {key} "
                "(--llmperf-strict)\n" + changes_table(against.inconclusive)
            )
        return problems


@dataclass(frozen=True)
class Look:
    """One judged metric at a look of rounds until decided (`measure.stats.Judged`)."""

    decided: bool
    reducible_share: float
    p_value: float


@dataclass(frozen=True)
class Outcome:
    """What a measurement found: its metrics, their verdicts, the evidence checks, where
    its responses went."""

    metrics: AggregateMetrics
    verdicts: Verdicts
    evidence: Evidence
    #: The responses table, relative to the run folder (`--llmperf-responses`).
    responses: Path | None = None
    #: Each metric's per-round values (`measure.samples`).
    samples: Samples = field(default_factory=dict)
    #: How many rounds the test took and why it stopped.
    stop: Stop | None = None

    def problems(self, key: str, update_thresholds: bool) -> list[str]:
        """Why the test fails: no evidence first, then missed bounds and regressions."""
        no_evidence = self.evidence.problem(key)
        verdicts = self.verdicts.problems(key, update_thresholds)
        return [no_evidence, *verdicts] if no_evidence else verdicts


def limited(requests: list[GenerationRequest], limit: int | None) -> list[GenerationRequest]:
    """The first `limit` requests (`--llmperf-limit`), or all of them."""
    return requests if limit is None else requests[:limit]


def build_requests(
    engine: Engine, workload: Workload, limit: int | None, arrivals: Arrivals | None
) -> list[GenerationRequest]:
    """The workload's requests in the engine's own tokens, limited, with arrival times."""
    requests = limited(workload.build(engine.tokenizer), limit)
    return arrivals.apply(requests) if arrivals is not None else requests


def round_builder(
    engine: Engine, workload: Workload, limit: int | None, arrivals: Arrivals | None
) -> Callable[[int], list[GenerationRequest]] | None:
    """Each round's own requests, for a workload that sends fresh ones every round; else None
    (every round sends the same requests)."""
    if not (isinstance(workload, FreshEachRound) and workload.fresh_each_round):
        return None
    fresh = workload

    def build(round_index: int) -> list[GenerationRequest]:
        requests = limited(fresh.build_round(engine.tokenizer, round_index), limit)
        return arrivals.apply(requests) if arrivals is not None else requests

    return build


def aggregate(
    measured: Rounds,
    telemetry: Mapping[str, float | None],
    more: MoreMetrics,
    physical: Sequence[int],
    details: Mapping[str, Any],
) -> AggregateMetrics:
    """The test's metrics: the harness's over the measured rounds, then the GPUs'
    telemetry, the test's own (`more`), the client's self-check, the server's timings,
    graph build time, bandwidth on GPUs (`physical`, the engine's `details`), and last
    the metrics derived from all of those."""
    records, durations = measured.records, measured.durations
    metrics = AggregateMetrics.from_records(records, durations)
    extra: dict[str, float | None] = dict(more.extra)
    extra.update(telemetry)
    if more.slo is not None:
        extra.update(more.slo.goodput(records, sum(durations)))
    extra.update(
        client_check(measured.client_stats, durations, sum(r.output_tokens for r in records))
    )
    extra.update(server_timing_metrics(records))
    for scorer in (more.score, more.workload):
        if scorer is not None:
            extra.update(scorer(records))
    if measured.graph_build_s is not None:
        extra["graph_build_s"] = measured.graph_build_s
    if extra:
        metrics = metrics.with_extra(**extra)
    if physical:
        peak = peak_bandwidth(physical)
        metrics = metrics.with_extra(**bandwidth_metrics(metrics, records, details, peak))
    if more.derived is not None:  # metrics of metrics: e.g. speedup over another measurement
        metrics = metrics.with_extra(**more.derived(metrics))
    return metrics


def keep_server_metrics(
    session: LLMPerfSession, reads: Reads, test_id: str, key: str
) -> dict[str, float | None]:
    """The server's metrics over the rounds (`measure.server.summary`), each read written
    to the run's server_metrics.jsonl, and a line saying why reads failed, if any did."""
    ours = {"test_id": test_id, "threshold_key": key}
    for sample in reads.samples:
        session.writer.append_server_metrics({**ours, "server": reads.server, **sample.as_dict()})
    if reads.failed:
        session.writer.append_server_metrics(
            {**ours, "failed_reads": reads.failed, "error": reads.error}
        )
    return server_metrics(reads.samples)


def allowance(
    session: LLMPerfSession, key: str, engine: str, given: float | None, marked: float | None
) -> Allowance:
    """The share of requests allowed to fail (see `measure.evidence`): the test's own
    (`given`, then its marker's rate, `marked`), else its thresholds' `failure_rate` max."""
    if given is not None:
        return Allowance(given, f"measure(allowed_failure_rate={given:g})")
    if marked is not None:
        return Allowance(marked, f"marker {ALLOW_MARKER}({marked:g})")
    for bound in session.thresholds_for(engine).bounds_for(key):
        if bound.metric == "failure_rate" and bound.max is not None:
            return Allowance(bound.max, f"thresholds {where(bound.file, bound.line)}")
    return Allowance(0.0)


def judge(
    session: LLMPerfSession,
    key: str,
    engine: str,
    metrics: AggregateMetrics,
    samples: Samples,
    alpha: float | None = None,
) -> Verdicts:
    """The thresholds of `engine` for `key` and, with `--llmperf-compare`, the baseline,
    judged on the per-round `samples` at error rate `alpha` (default: the run's)."""
    return judge_flat(session, key, engine, flatten(metrics.as_dict()), samples, alpha)


def judge_flat(
    session: LLMPerfSession,
    key: str,
    engine: str,
    flat: Mapping[str, float | int | None],
    samples: Samples,
    alpha: float | None = None,
) -> Verdicts:
    """`judge` of flat metrics (`ttft_ms.p90`), as timed code's are."""
    gate = session.settings.gate
    alpha = gate.alpha if alpha is None else alpha
    flat = dict(flat)
    thresholds = check(session.thresholds_for(engine), key, flat, samples, alpha)
    against = (
        judge_test(session.baselines, key, flat, samples, session.tolerances, alpha, gate.drift)
        if session.baselines
        else None
    )
    return Verdicts(thresholds, against, gate.strict)


def round_samples(measured: Rounds, more: MoreMetrics) -> Samples:
    """Each metric's value in each measured round (`measure.samples`): the harness's, and the
    test's own where they can be told round by round (goodput, scores, the client's
    self-check, the server's timings)."""
    per_round = harness_rounds(measured.records, measured.durations)
    parts = round_records(measured.records, len(measured.durations))
    for index, (flat, part, seconds) in enumerate(
        zip(per_round, parts, measured.durations, strict=True)
    ):
        extra: dict[str, float | None] = {}
        if more.slo is not None:
            extra.update(more.slo.goodput(part, seconds))
        if index < len(measured.client_stats):
            tokens = sum(r.output_tokens for r in part)
            extra.update(client_check([measured.client_stats[index]], [seconds], tokens))
        extra.update(server_timing_metrics(part))
        for scorer in (more.score, more.workload):
            if scorer is not None:
                extra.update(scorer(part))
        flat.update(extra)
    return collect(per_round)


def make_record(
    session: LLMPerfSession,
    subject: Subject,
    started: StartedEngine,
    plan: RoundPlan,
    outcome: Outcome,
) -> TestRecord:
    """The record of a finished measurement, as tests.jsonl keeps it."""
    info, metrics, verdicts = started.info, outcome.metrics, outcome.verdicts
    config, engine_config = subject.config, subject.engine_config
    return TestRecord(
        test_id=subject.test_id,
        threshold_key=subject.key,
        config=ConfigRecord.from_record(config.describe(), f"config {config.name!r}"),
        engine=engine_config.engine,
        engine_config=EngineConfigRecord.from_record(
            engine_config.describe(), f"engine {engine_config.engine!r}"
        ),
        engine_info=EngineInfoRecord(
            info.engine, info.model, info.device, info.dtype, dict(info.details)
        ),
        engine_load_s=started.load_s,
        workload=subject.workload.describe(),
        rounds=plan.rounds,
        warmup_rounds=plan.warmup_rounds,
        worker=session.worker_id,
        worker_pid=os.getpid(),
        gpus=gpu_record(session),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        metrics=metrics.as_dict(),
        metrics_flat=flatten(metrics.as_dict()),
        thresholds=thresholds_record(verdicts.thresholds),
        baseline=verdicts.baseline.as_record() if verdicts.baseline is not None else None,
        responses=str(outcome.responses) if outcome.responses is not None else None,
        evidence=outcome.evidence,
        samples=outcome.samples,
        stop=StopRecord(outcome.stop.rounds, outcome.stop.reason, outcome.stop.undecided)
        if outcome.stop is not None
        else None,
        unreliable=unreliable(flatten(metrics.as_dict())),
        host=session.host,
    )


def thresholds_record(check: CheckResult) -> ThresholdsRecord:
    return ThresholdsRecord(
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
                outcome=v.outcome,
                how=v.how,
                p=v.p_value,
                centre=v.estimate.centre if v.estimate is not None else None,
                low=v.estimate.low if v.estimate is not None else None,
                high=v.estimate.high if v.estimate is not None else None,
                noise=v.bound.noise,
            )
            for v in check.verdicts
        ),
        alpha=check.alpha,
    )


def gpu_record(session: LLMPerfSession, held: Lease | None = None) -> GpuRecord | None:
    """The leased GPUs (`held`, else the engine's) and every process NVML sees on them
    (proof of isolation)."""
    held = held if held is not None else session.lease
    if held is None:
        return None
    return GpuRecord(
        cuda=tuple(held.gpus),
        physical=tuple(held.physical),
        processes={str(i): tuple(procs) for i, procs in gpu_processes(held.physical).items()},
    )


class RoundWatch:
    """What watches the measured rounds: the GPUs' telemetry and, for an engine that drives
    a server with a metrics endpoint, the server's own metrics (`measure.server`)."""

    def __init__(self, engine: object, physical: tuple[int, ...], interval_s: float) -> None:
        self.sampler = Sampler(physical)
        self.scraper = scraper_for(engine, interval_s)
        self.reads: Reads | None = None

    def start(self) -> None:
        self.sampler.start()
        if self.scraper is not None:
            self.scraper.start()

    def stop_reading(self) -> None:
        """Stop the server's reads: called whether the rounds ended or failed."""
        if self.scraper is not None:
            self.reads = self.scraper.stop()

    def metrics(
        self, session: LLMPerfSession, output_tokens: int, test_id: str, key: str
    ) -> dict[str, float | None]:
        """The telemetry over the rounds, with the server's metrics (its reads written)."""
        metrics = self.sampler.stop(output_tokens)
        if self.reads is not None:
            metrics.update(keep_server_metrics(session, self.reads, test_id, key))
        return metrics
