"""`llmperf.compare(a, b, workload)`: A and B measured in turns in one test, and B/A of every
metric with a paired interval (the metrics are defined in `pytest_llmperf.measure.turns`, the
interval in `pytest_llmperf.measure.stats`; how the turns run, in `plugin.ab.turns`)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pytest

from pytest_llmperf.engines.base import Engine, EngineConfig
from pytest_llmperf.measure.evidence import Evidence, of_requests
from pytest_llmperf.measure.metrics import AggregateMetrics, RequestRecord, flatten
from pytest_llmperf.measure.reliability import unreliable
from pytest_llmperf.measure.samples import Samples
from pytest_llmperf.measure.server.summary import server_metrics
from pytest_llmperf.measure.stats import Estimate, estimate
from pytest_llmperf.measure.turns import (
    RATIO,
    Mode,
    Side,
    geometric_means,
    nest,
    order_text,
    prefixed,
    ratio_samples,
)
from pytest_llmperf.plugin.ab.turns import SideState, Turns, all_records, side_summary
from pytest_llmperf.plugin.gate import Stop
from pytest_llmperf.plugin.pipeline import (
    MoreMetrics,
    Verdicts,
    aggregate,
    allowance,
    gpu_record,
    judge_flat,
    round_samples,
    thresholds_record,
)
from pytest_llmperf.plugin.session import EngineStartError
from pytest_llmperf.results.record import (
    ConfigRecord,
    EngineConfigRecord,
    EngineInfoRecord,
    StopRecord,
    TestRecord,
)
from pytest_llmperf.suite.arguments import bad, text, whole
from pytest_llmperf.suite.config import Config
from pytest_llmperf.suite.workload import Workload, check_responses
from pytest_llmperf.thresholds.check import CheckResult

if TYPE_CHECKING:
    from pytest_llmperf.plugin.session import LLMPerfSession

#: One side of an A/B test: a grid configuration (on the run's engine unless it names one),
#: an engine instance the test made, not started (`compare` starts and closes it), or a
#: server's URL (`http://host:8000/v1`: two deployments of one model).
ABSide = Config | Engine | str


@dataclass(frozen=True)
class Comparison:
    """What `llmperf.compare` returns: each side's metrics, and B/A of each metric with its
    paired interval (`ratios`, named as thresholds name them: `speedup`,
    `ratio.ttft_ms.p90`)."""

    test_id: str
    a: AggregateMetrics
    b: AggregateMetrics
    ratios: Mapping[str, Estimate]
    #: "interleaved" (both engines loaded, a turn is a round) or "blocks" (swapped).
    mode: Mode
    #: The turns as they ran: `ABBABAAB`.
    order: str
    thresholds: CheckResult

    @property
    def speedup(self) -> Estimate | None:
        """B/A of output_tok_per_s with its interval (None: no pair measured it)."""
        return self.ratios.get("speedup")


class ComparisonMethods:
    """`llmperf.compare`; `LLMPerfFixture` supplies the rest."""

    _session: LLMPerfSession
    _request: pytest.FixtureRequest

    def _claim(self, call: str, label: str | None) -> str:
        raise NotImplementedError

    def engine_config(self, config: Config, model: str | None = None) -> EngineConfig:
        raise NotImplementedError

    def gpu_count(self, config: Config) -> int:
        raise NotImplementedError

    def _physical(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _marked_rate(self) -> float | None:
        raise NotImplementedError

    def _record(self, record: TestRecord, benchmark_too: bool = True) -> None:
        raise NotImplementedError

    def compare(
        self,
        a: ABSide,
        b: ABSide,
        workload: Workload,
        *,
        rounds: int | Literal["auto"] = 5,
        warmup_rounds: int = 1,
        swap: bool | None = None,
        block_rounds: int = 3,
        label: str | None = None,
        model: str | None = None,
    ) -> Comparison:
        """Measure `workload` on A and on B in turns, and B/A of every metric.

        `a` and `b` are grid configurations (`Config`: on the run's engine unless the
        configuration names one), engine instances the test made and did not start, or
        servers' URLs (two deployments of one model, through the `openai` client engine,
        with the run's model and options). Each
        side warms up (`warmup_rounds`), then `rounds` pairs of turns run in the order ABBA
        BAAB ...; `rounds="auto"` measures pairs until every bound on the test is decided,
        within the run's round and time budget (`--llmperf-max-rounds` counts pairs). Both
        engines stay loaded unless `swap=True` or, with `swap=None`, the GPUs cannot hold
        the second: then each turn is a block of `block_rounds` rounds with the engine
        swapped (`plugin.ab.turns`), and the record says so (`ab.mode`).

        The test's metrics are each side's (`a.output_tok_per_s`, `b.ttft_ms.p90`) and B/A
        of each (`ratio.ttft_ms.p90`, `speedup` for output throughput), each ratio with a
        paired interval over the pairs (`pytest_llmperf.measure.turns`). Thresholds and
        baselines check them like any metric: `speedup: {min: 1.1}` is met when B is faster
        by at least 10% with confidence, missed when confidently not, else inconclusive. The
        test fails, after it was recorded, as `measure`'s does (no evidence, missed bounds,
        regressions, an engine that died). Thresholds are A's engine's.
        """
        check_compare(a, b, workload, rounds, warmup_rounds, swap, block_rounds, label, model)
        key = self._claim("compare()", label)
        session = self._session
        gate = session.settings.gate
        chosen = session.settings.rounds or rounds
        auto = chosen == "auto"
        most = gate.max_rounds if chosen == "auto" else int(chosen)
        states = [
            self._side_state(a, "a", workload, model),
            self._side_state(b, "b", workload, model),
        ]
        if session.settings.dry_run:
            pytest.skip(f"dry run: A/B of {states[0].name!r} and {states[1].name!r}; not started")
        engine = states[0].name  # whose thresholds
        turns = Turns(
            session,
            states[0],
            states[1],
            workload,
            warmup_rounds=warmup_rounds,
            swap=swap,
            block_rounds=block_rounds,
        )
        last: list[Any] = [None]

        def keep_going(pairs: int, seconds: float) -> bool:
            if not auto or pairs < gate.min_rounds:
                return True
            flat, samples, _ = self._results(turns)
            verdicts = judge_flat(session, key, engine, flat, samples, gate.look_alpha(pairs))
            last[0] = gate.next_round(verdicts.looks(), pairs, seconds)
            return bool(last[0].more)

        try:
            turns.run(most, self._keep_ab_round(turns), keep_going)
        except EngineStartError as exc:  # the message says why; a traceback would repeat it
            raise pytest.fail.Exception(str(exc), pytrace=False) from None
        finally:
            turns.close()
        flat, samples, nested = self._results(turns)
        pairs = turns.pairs
        alpha = gate.look_alpha(pairs) if auto else gate.alpha
        verdicts = judge_flat(session, key, engine, flat, samples, alpha)
        stop = None
        if auto:
            reason = last[0].reason if last[0] is not None else None
            reason = reason or ("max_rounds" if pairs >= gate.max_rounds else "ended")
            stop = Stop(pairs, reason, len(verdicts.undecided()))
        allowed = allowance(session, key, engine, None, self._marked_rate())
        evidence = of_requests(all_records(states), allowed)
        outcome = (nested, flat, samples, verdicts, stop, evidence)
        self._record(self._make_record(key, a, turns, *outcome), False)
        problems = [p for p in [evidence.problem(key)] if p]
        if turns.dead:
            problems.insert(0, f"{turns.dead} during {key}")
        problems += verdicts.problems(key, session.settings.update_thresholds)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)
        sides = [aggregate(s.rounds(), {}, MoreMetrics(), (), {}) for s in states]
        ratios = {
            name: estimate([v for v in values if v is not None], "log")
            for name, values in samples.items()
            if name == "speedup" or name.startswith(f"{RATIO}.")
        }
        order = order_text(pairs)
        return Comparison(key, sides[0], sides[1], ratios, turns.mode, order, verdicts.thresholds)

    def _side_state(
        self, side: ABSide, name: Side, workload: Workload, model: str | None
    ) -> SideState:
        if isinstance(side, str):  # a server's URL, through the openai client engine
            found = self.engine_config(Config(name=side, engine="openai"), model)
            run_base_url = dict(found.settings).get("base_url")
            settings = {**dict(found.settings), "base_url": side}
            if settings.get("metrics_url") and run_base_url != side:
                # `--llmperf-metrics-url` is the run's server's: another server's side reads
                # its own, at the path every server we map serves them on.
                settings["metrics_url"] = f"{side.rstrip('/')}/metrics"
            engine_config = EngineConfig.make("openai", found.model, settings)
            return SideState(name, side, engine_config, workload)
        if isinstance(side, Config):
            engine_config = self.engine_config(side, model)
            work = workload.with_overrides(dict(side.workload_settings))
            return SideState(name, side.name, engine_config, work, self.gpu_count(side))
        return SideState(name, None, None, workload, given=side)

    def _keep_ab_round(self, turns: Turns) -> Any:
        """Writes each measured round's records, with their side; a request the engine never
        answered is an error."""
        writer, test_id = self._session.writer, self._request.node.nodeid

        def keep(side: Side, records: list[RequestRecord]) -> None:
            for record in records:
                writer.append_request({"test_id": test_id, "side": side, **record.as_dict()})
            requests = turns.sides[side].requests
            problems = check_responses(requests, [r.custom_id for r in records])
            if problems:
                raise AssertionError("; ".join(problems))

        return keep

    def _results(self, turns: Turns) -> tuple[dict[str, Any], Samples, dict[str, Any]]:
        """The test's flat metrics, samples and nested metrics so far."""
        nested: dict[str, Any] = {}
        samples: Samples = {}
        for name, side in turns.sides.items():
            if not side.durations:
                continue
            details = side.info.details if side.info is not None else {}
            read = server_metrics(side.server_samples) if side.server_samples is not None else {}
            metrics = aggregate(side.rounds(), read, MoreMetrics(), self._physical(), details)
            nested.update(nest(flatten(metrics.as_dict()), name))
            samples.update(prefixed(round_samples(side.rounds(), MoreMetrics()), name))
        a, b = turns.sides["a"], turns.sides["b"]
        pairs = min(len(a.turns), len(b.turns))
        ratios = ratio_samples(a.turns[:pairs], b.turns[:pairs])
        means = geometric_means(ratios)
        speedup = means.pop("speedup", None)
        nested.update(nest({k.removeprefix(f"{RATIO}."): v for k, v in means.items()}, RATIO))
        nested["speedup"] = speedup
        samples.update(ratios)
        return flatten(nested), samples, nested

    def _make_record(
        self,
        key: str,
        a: ABSide,
        turns: Turns,
        nested: Mapping[str, Any],
        flat: Mapping[str, Any],
        samples: Samples,
        verdicts: Verdicts,
        stop: Stop | None,
        evidence: Evidence,
    ) -> TestRecord:
        session = self._session
        first = turns.sides["a"]
        config = a if isinstance(a, Config) else Config(name="given engine")
        engine_config = first.engine_config or EngineConfig.make(first.name, "given engine")
        info = first.info
        ab = {
            "mode": turns.mode,
            "order": order_text(turns.pairs),
            "pairs": turns.pairs,
            "turn_rounds": 1 if turns.mode == "interleaved" else turns.block_rounds,
            "interval": "paired t on log ratios, 95%",
            **{name: side_summary(side) for name, side in turns.sides.items()},
        }
        return TestRecord(
            test_id=self._request.node.nodeid,
            threshold_key=key,
            config=ConfigRecord.from_record(config.describe(), f"config {config.name!r}"),
            engine=first.name,
            engine_config=EngineConfigRecord.from_record(
                engine_config.describe(), f"engine {first.name!r}"
            ),
            engine_info=EngineInfoRecord(
                info.engine, info.model, info.device, info.dtype, dict(info.details)
            )
            if info is not None
            else EngineInfoRecord(first.name, "", "", "", {}),
            engine_load_s=first.loads[0] if first.loads else None,
            workload=(first.workload or turns.workload).describe(),
            rounds=turns.pairs,
            warmup_rounds=turns.warmup_rounds,
            worker=session.worker_id,
            worker_pid=os.getpid(),
            gpus=gpu_record(session),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            metrics=dict(nested),
            metrics_flat=dict(flat),
            thresholds=thresholds_record(verdicts.thresholds),
            baseline=verdicts.baseline.as_record() if verdicts.baseline is not None else None,
            responses=None,
            evidence=evidence,
            samples=samples,
            stop=StopRecord(stop.rounds, stop.reason, stop.undecided) if stop else None,
            unreliable=unreliable(dict(flat)),
            host=session.host,
            ab=ab,
        )


def check_compare(
    a: object,
    b: object,
    workload: object,
    rounds: object,
    warmup_rounds: object,
    swap: object,
    block_rounds: object,
    label: object,
    model: object,
) -> None:
    """Every argument of `compare()`; the first wrong one raises, before any engine starts."""
    owner = "compare()"
    for name, side in (("a", a), ("b", b)):
        # The class is asked, not the instance: an engine's `tokenizer` raises before start().
        engine = all(callable(getattr(type(side), m, None)) for m in ("start", "stream", "close"))
        url = isinstance(side, str) and side.startswith(("http://", "https://"))
        if not (isinstance(side, Config) or engine or url) or isinstance(side, type):
            problem = (
                "must be a Config (from grid_params or Config.make), an engine instance "
                "or a server's URL (http://...)"
            )
            raise bad(owner, name, side, problem)
    if not all(callable(getattr(workload, m, None)) for m in ("build", "describe")):
        raise bad(owner, "workload", workload, "must be a workload (SyntheticWorkload, ...)")
    if rounds != "auto":
        whole(owner, "rounds", rounds, 1)
    whole(owner, "warmup_rounds", warmup_rounds, 0)
    whole(owner, "block_rounds", block_rounds, 1)
    if swap not in (None, True, False):
        raise bad(owner, "swap", swap, "must be True, False or None (swap when memory says so)")
    if swap and not all(isinstance(side, (Config, str)) for side in (a, b)):
        raise bad(owner, "swap", swap, "an engine instance starts once: give Configs to swap")
    if label is not None:
        text(owner, "label", label)
    if model is not None:
        text(owner, "model", model)
