"""`llmperf.max_load_under_slo(config, workload, slo)`: the highest request rate whose goodput
meets the SLO, found by a sweep and a bisection of measured steps (`suite.slo.search` says how
each step is decided and defines the metrics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import pytest

from pytest_llmperf.engines import engine_spec
from pytest_llmperf.engines.base import Engine, EngineConfig, GenerationRequest
from pytest_llmperf.measure.evidence import of_requests
from pytest_llmperf.measure.harness import run_round
from pytest_llmperf.measure.metrics import AggregateMetrics, RequestRecord
from pytest_llmperf.measure.rounds import RoundPlan, Rounds, run_rounds
from pytest_llmperf.measure.samples import Samples
from pytest_llmperf.plugin.arguments import _is_workload, check_config
from pytest_llmperf.plugin.pipeline import (
    MoreMetrics,
    Outcome,
    StartedEngine,
    Subject,
    aggregate,
    allowance,
    build_requests,
    judge,
    make_record,
    round_builder,
    round_samples,
)
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.suite.arguments import bad, text, whole
from pytest_llmperf.suite.config import Config
from pytest_llmperf.suite.load import SLO, Arrivals, client_check, send_rates
from pytest_llmperf.suite.slo.search import (
    OWNER,
    Phase,
    SearchPlan,
    SearchResult,
    SearchStep,
    StepVerdict,
    client_fell_behind,
    judge_goodput,
    search,
)
from pytest_llmperf.suite.workload import Scheduled, Workload
from pytest_llmperf.thresholds.check import CheckResult

if TYPE_CHECKING:
    from pytest_llmperf.plugin.session import LLMPerfSession

#: The search's headline metric (`suite.slo.search`).
MAX_RATE = "max_rate_under_slo_req_per_s"


@dataclass(frozen=True)
class LoadSearch:
    """What `llmperf.max_load_under_slo` returns: the answer, the chosen step's metrics and
    every step."""

    test_id: str
    #: The highest rate that met the SLO (None: no step did).
    max_rate_per_s: float | None
    #: The chosen step's metrics, with `max_rate_under_slo_req_per_s`.
    metrics: AggregateMetrics
    result: SearchResult
    thresholds: CheckResult

    @property
    def note(self) -> str:
        """Why the search ended, in words (client-bound, max rate, inconclusive steps)."""
        return self.result.note


@dataclass
class _Measured:
    """A step's rounds, for the record of the chosen one."""

    rounds: Rounds
    metrics: AggregateMetrics
    samples: Samples


class SearchMethods:
    """`llmperf.max_load_under_slo`; `LLMPerfFixture` supplies the rest."""

    _session: LLMPerfSession
    _request: pytest.FixtureRequest

    def _claim(self, call: str, label: str | None) -> str:
        raise NotImplementedError

    def engine_config(self, config: Config, model: str | None = None) -> EngineConfig:
        raise NotImplementedError

    def _start_engine(self, engine_config: EngineConfig, config: Config) -> StartedEngine:
        raise NotImplementedError

    def _marked_rate(self) -> float | None:
        raise NotImplementedError

    def _record(self, record: TestRecord, benchmark_too: bool = True) -> None:
        raise NotImplementedError

    def _fail_if_dead(self, engine: Engine, key: str) -> None:
        raise NotImplementedError

    def max_load_under_slo(
        self,
        config: Config | None = None,
        workload: Workload | None = None,
        slo: SLO | None = None,
        *,
        goodput: float = 0.9,
        start_rate_per_s: float = 1.0,
        step_per_s: float = 1.0,
        max_rate_per_s: float = 1024.0,
        min_rounds: int = 2,
        max_rounds: int = 5,
        warmup_rounds: int = 1,
        distribution: Literal["poisson", "constant"] = "poisson",
        seed: int = 0,
        label: str | None = None,
        model: str | None = None,
    ) -> LoadSearch:
        """The highest request rate at which `goodput` of the requests meet `slo`.

        Sends `workload` open loop (`Arrivals` of `distribution`) at rates from
        `start_rate_per_s`, doubling until a step fails, then bisecting between the last
        pass and the first fail until they are at most `step_per_s` apart (never above
        `max_rate_per_s`). Each step measures `min_rounds` to `max_rounds` rounds, until its
        goodput fraction is confidently above or below `goodput` (an undecided step counts
        as failing); the search stops early, saying so, when the client cannot send at the
        asked rate. `warmup_rounds` run once, all at once, before the first step. Client
        engines only (openai, vllm-server); others skip.

        The test's metrics are `max_rate_under_slo_req_per_s` and the chosen step's
        (throughput, TTFT/TPOT percentiles, goodput, with their per-round samples), checked
        by thresholds like any; every step is kept in the record (`slo_search`) and shown
        in the report. Defined in `pytest_llmperf.suite.slo.search`. The test fails, after
        it was recorded, when the chosen step's requests failed (or, with no passing step,
        any did), when a bound is missed or a metric regressed, or the engine died.
        """
        config = config if config is not None else Config(name="default")
        check_config(OWNER, config)
        if not _is_workload(workload):
            raise bad(OWNER, "workload", workload, "must be a workload (SyntheticWorkload, ...)")
        if isinstance(workload, Scheduled) and workload.scheduled():
            problem = "sends on its own times (a trace's timestamps): the search sets the rate"
            raise bad(OWNER, "workload", workload, problem)
        whole(OWNER, "warmup_rounds", warmup_rounds, 0)
        for name, value in (("label", label), ("model", model)):
            if value is not None:
                text(OWNER, name, value)
        if not isinstance(slo, SLO):
            raise bad(OWNER, "slo", slo, "must be an SLO, e.g. SLO(ttft_ms=200)")
        plan = SearchPlan(
            slo, goodput, start_rate_per_s, step_per_s, max_rate_per_s, min_rounds,
            max_rounds, distribution, seed,
        )  # fmt: skip
        assert workload is not None  # checked: a workload
        key = self._claim(OWNER, label)
        engine_config = self.engine_config(config, model)
        if not engine_spec(engine_config.engine).traits.takes_arrivals:
            pytest.skip(
                f"engine {engine_config.engine!r} runs a batch at once; the SLO search sends "
                "at a rate and needs a client engine (openai, vllm-server)"
            )
        workload = workload.with_overrides(dict(config.workload_settings))
        if self._session.settings.dry_run:
            pytest.skip(f"dry run: SLO search of {key}; engine not started")
        started = self._start_engine(engine_config, config)
        requests = build_requests(started.engine, workload, self._session.settings.limit, None)
        for _ in range(warmup_rounds):  # all at once: loads the model's paths, not measured
            run_round(started.engine, requests, -1)
        kept: dict[float, _Measured] = {}
        measure = self._step_measurer(started, workload, requests, plan, kept)
        result = search(plan, measure)
        subject = Subject(self._request.node.nodeid, key, config, engine_config, workload)
        return self._finish(subject, started, result, kept, warmup_rounds)

    def _step_measurer(
        self,
        started: StartedEngine,
        workload: Workload,
        requests: list[GenerationRequest],
        plan: SearchPlan,
        kept: dict[float, _Measured],
    ) -> Callable[[float, Phase], SearchStep]:
        """Measures one step: rounds at `rate` until its goodput is decided (or the client
        falls behind), each round's records written with the step's rate."""
        session, engine = self._session, started.engine
        more = MoreMetrics(slo=plan.slo)
        writer, test_id = session.writer, self._request.node.nodeid

        def measure(rate: float, phase: Phase) -> SearchStep:
            arrivals = Arrivals(rate, plan.distribution, plan.seed)
            # Undecided until a look decides it (an engine that died: still undecided).
            last = StepVerdict("inconclusive", None)

            def keep_going(so_far: Rounds) -> bool:
                nonlocal last
                if client_fell_behind(send_rates(so_far.client_stats)):
                    last = StepVerdict("client_bound", None)
                    return False
                if len(so_far.durations) < plan.min_rounds:
                    return True
                samples = round_samples(so_far, more).get("goodput_fraction", ())
                last = judge_goodput(list(samples), plan, session.settings.gate.alpha)
                return last.decision == "inconclusive"

            def keep(records: list[RequestRecord]) -> None:
                for record in records:
                    writer.append_request({"test_id": test_id, "slo_step_rate_per_s": rate,
                                           **record.as_dict()})  # fmt: skip

            measured = run_rounds(
                engine,
                arrivals.apply(requests),
                RoundPlan(plan.max_rounds, 0),
                after_round=keep,
                keep_going=keep_going,
                fresh=round_builder(engine, workload, session.settings.limit, arrivals),
            )
            metrics = aggregate(measured, {}, more, (), started.info.details)
            samples = round_samples(measured, more)
            kept[rate] = _Measured(measured, metrics, samples)
            return _step(rate, phase, measured, metrics, samples, last)

        return measure

    def _finish(
        self,
        subject: Subject,
        started: StartedEngine,
        result: SearchResult,
        kept: dict[float, _Measured],
        warmup_rounds: int,
    ) -> LoadSearch:
        """The test's record: the chosen step's metrics and samples with the answer, every
        step in `slo_search`; then the test fails as `measure`'s does."""
        session, key, engine = self._session, subject.key, subject.engine_config.engine
        best = result.max_rate_per_s
        chosen = kept.get(best) if best is not None else None
        if chosen is not None:
            metrics, samples, records = chosen.metrics, chosen.samples, chosen.rounds.records
            rounds = len(chosen.rounds.durations)
        else:  # no step met the SLO: nothing to report but the answer, null
            everything = tuple(r for m in kept.values() for r in m.rounds.records)
            metrics, samples, records, rounds = (
                AggregateMetrics.from_records([], []),
                {},
                everything,
                0,
            )
        metrics = metrics.with_extra(**{MAX_RATE: best})
        verdicts = judge(session, key, engine, metrics, samples)
        allowed = allowance(session, key, engine, None, self._marked_rate())
        evidence = of_requests(records, allowed)
        outcome = Outcome(metrics, verdicts, evidence, None, samples, None)
        plan = RoundPlan(rounds, warmup_rounds)
        record = make_record(session, subject, started, plan, outcome)
        self._record(replace(record, slo_search=result.as_record()), False)
        self._request.node.add_report_section("call", "llmperf SLO search", result.note)
        self._fail_if_dead(started.engine, key)
        problems = outcome.problems(key, session.settings.update_thresholds)
        if problems:
            pytest.fail("\n\n".join([result.note, *problems]), pytrace=False)
        return LoadSearch(key, best, metrics, result, verdicts.thresholds)


def _step(
    rate: float,
    phase: Phase,
    measured: Rounds,
    metrics: AggregateMetrics,
    samples: Samples,
    last: StepVerdict,
) -> SearchStep:
    """A measured step as the record's table row."""
    verdict = last.verdict
    estimate = verdict.estimate if verdict is not None else None
    rates = send_rates(measured.client_stats)
    durations = measured.durations
    output_tokens = sum(r.output_tokens for r in measured.records)
    flag = client_check(measured.client_stats, durations, output_tokens).get("client_bound")
    tpot = metrics.tpot_ms.mean
    goodput = samples.get("goodput_fraction", ())
    return SearchStep(
        rate_per_s=rate,
        phase=phase,
        decision=last.decision,
        rounds=len(durations),
        goodput_samples=tuple(None if v is None else float(v) for v in goodput),
        goodput_centre=estimate.centre if estimate is not None else None,
        goodput_low=estimate.low if estimate is not None else None,
        goodput_high=estimate.high if estimate is not None else None,
        p_value=verdict.p_value if verdict is not None else None,
        asked_send_rate_per_s=rates[0] if rates is not None else None,
        achieved_send_rate_per_s=rates[1] if rates is not None else None,
        client_flag=bool(flag),
        output_tok_per_s=metrics.output_tok_per_s if durations else None,
        output_tok_per_s_per_user=1000 / tpot if tpot else None,
        ttft_ms_p90=metrics.ttft_ms.p90,
        tpot_ms_p90=metrics.tpot_ms.p90,
    )
