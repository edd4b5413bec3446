"""The suite's own code measured through the same gate as the engines: `llmperf.time`,
`llmperf.time_turns` and `llmperf.record` (and the rounds of `llmperf.compare_functions`, whose
A/B record is `plugin.own.ab`'s).

Each timed function (or recorded set of metrics) becomes one test record of engine `own`
(`measure.timed.OWN_ENGINE`), keyed like a measurement (the node id, `@label` for a
labelled call): per-round samples, thresholds from `<hardware>/own.yaml` judged on them,
the baseline's verdict with `--llmperf-compare`, `rounds="auto"` through the run's gate,
the evidence check (at least one measured round), the results folder, the summary, the
exports and `llmperf compare`. How a call is timed, and the metrics, are defined in
`measure.timed`.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.hardware.telemetry import Sampler
from pytest_llmperf.measure.declared import declared_metrics
from pytest_llmperf.measure.evidence import Evidence, of_rounds
from pytest_llmperf.measure.metrics import metric_hint, spec_for
from pytest_llmperf.measure.reliability import unreliable
from pytest_llmperf.measure.rounds import Repeat, RoundPlan
from pytest_llmperf.measure.samples import Samples
from pytest_llmperf.measure.stats import Continuation
from pytest_llmperf.measure.timed import (
    OWN_ENGINE,
    CallArgs,
    Counter,
    TimedRound,
    Timer,
    count_of,
    rate_name,
    timed_metrics,
    timed_samples,
    turn_order,
)
from pytest_llmperf.plugin.gate import Stop
from pytest_llmperf.plugin.pipeline import Look, Verdicts, judge_flat, thresholds_record
from pytest_llmperf.results.record import (
    ConfigRecord,
    EngineConfigRecord,
    EngineInfoRecord,
    GpuRecord,
    StopRecord,
    TestRecord,
)
from pytest_llmperf.thresholds.check import CheckResult

if TYPE_CHECKING:
    from pytest_llmperf.plugin.session import LLMPerfSession

Number = float | int


@dataclass(frozen=True)
class Timed:
    """One function to time, with its arguments, its per-round setup and its counter."""

    fn: Callable[..., Any]
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] | None = None
    setup: Callable[[], CallArgs | None] | None = None
    count: Counter | None = None


@dataclass(frozen=True)
class Timing:
    """What `llmperf.time` returns (and `time_turns` per function, `compare_functions` per
    side, and `record`)."""

    key: str
    #: The last measured call's return value (None for `record`).
    result: Any
    #: Flat metrics: `call_s`, the rates of counted items, telemetry; or those recorded.
    metrics: Mapping[str, Number | None]
    samples: Samples
    thresholds: CheckResult

    @property
    def rounds(self) -> int:
        """Measured rounds."""
        return max((len(v) for v in self.samples.values()), default=0)


@dataclass(frozen=True)
class Place:
    """Where the measurement runs and how its records leave: the fixture's side."""

    session: LLMPerfSession
    test_id: str
    #: The test's GPUs as NVML numbers them (telemetry), and as its record shows them.
    physical: tuple[int, ...]
    gpus: GpuRecord | None
    device: str
    write: Callable[[TestRecord], None]
    #: pytest-benchmark's loop for one function of a fixed number of rounds, if it is on.
    repeat: Repeat | None


def time_functions(
    place: Place,
    timed: Mapping[str, Timed],
    rounds: int | str,
    warmup_rounds: int,
    telemetry: bool,
) -> dict[str, Timing]:
    """Time each function of `timed` (key -> function) in turns, record each, and fail the
    test (after recording all) when one missed a bound, regressed or ran no round."""
    session = place.session
    gate = session.settings.gate
    chosen = session.settings.rounds or rounds
    auto = chosen == "auto"
    plan = RoundPlan(gate.max_rounds if auto else int(chosen), warmup_rounds)
    keys = list(timed)
    looks = UntilDecided(session, functools.partial(_looks, session, keys)) if auto else None
    measured, results, watched = run_rounds(place, timed, plan, telemetry, looks)
    timings, problems = {}, []
    for key in keys:
        kept = measured[key]
        flat: dict[str, Number | None] = {**timed_metrics(kept), **watched}
        samples = timed_samples(kept)
        alpha = gate.look_alpha(len(kept)) if auto else gate.alpha
        verdicts = judge_flat(session, key, OWN_ENGINE, flat, samples, alpha)
        stop = looks.stop(len(kept), verdicts) if looks is not None else None
        workload = describe(timed[key])
        evidence = of_rounds(len(kept))
        place.write(own_record(place, key, flat, samples, verdicts, evidence, plan, stop, workload))
        problems += own_problems(session, key, evidence, verdicts)
        timings[key] = Timing(key, results.get(key), flat, samples, verdicts.thresholds)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    return timings


Measured = dict[str, list[TimedRound]]


def run_rounds(
    place: Place,
    timed: Mapping[str, Timed],
    plan: RoundPlan,
    telemetry: bool,
    more: Callable[[Measured], bool] | None,
) -> tuple[Measured, dict[str, Any], dict[str, float | None]]:
    """The rounds of `timed`'s functions in turns (`measure.timed.turn_order`), warm-up
    ones discarded, while `more` (None: all of `plan`'s rounds) says so: each function's
    measured rounds, its last result, and the telemetry of a single function's rounds."""
    keys = list(timed)
    measured: Measured = {key: [] for key in keys}
    results: dict[str, Any] = {}
    single = len(keys) == 1
    # Telemetry of calls in turns would mix the functions: one function's only.
    sampler = Sampler(place.physical) if telemetry and place.physical and single else None
    timer = Timer()
    done = 0

    def one_round() -> None:
        nonlocal done
        index = done - plan.warmup_rounds
        done += 1
        if index == 0 and sampler is not None:
            sampler.start()
        for key in turn_order(keys, max(index, 0)):
            function = timed[key]
            seconds, result = timer.call(
                function.fn, function.args, function.kwargs or {}, function.setup
            )
            counts = count_of(function.count, result)
            _check_counted(key, counts)
            if index >= 0:
                measured[key].append(TimedRound(seconds, counts))
                results[key] = result

    watched: dict[str, float | None] = {}
    try:
        if more is None and single and place.repeat is not None:
            place.repeat(one_round, plan.rounds, plan.warmup_rounds)
        else:
            for _ in range(plan.warmup_rounds + plan.rounds):
                one_round()
                if more is not None and done > plan.warmup_rounds and not more(measured):
                    break
    finally:
        timer.close()
        if sampler is not None:
            tokens = sum(r.counts.get("output_tok", 0.0) for r in measured[keys[0]])
            watched = sampler.stop(int(tokens))
            if not tokens:
                watched.pop("output_tok_per_j", None)  # no tokens counted: no tokens per joule
    return measured, results, watched


def record_metrics(
    place: Place,
    key: str,
    metrics: Mapping[str, Number | None],
    samples: Mapping[str, Sequence[Number | None]],
) -> Timing:
    """Record metrics the suite measured itself (checked by `check_recorded`)."""
    session = place.session
    kept: Samples = {name: tuple(values) for name, values in samples.items()}
    rounds = max((len(v) for v in kept.values()), default=1 if metrics else 0)
    flat: dict[str, Number | None] = dict(metrics)
    for name, values in kept.items():
        if name not in flat:  # a metric given only round by round: the mean of its rounds
            finite = [v for v in values if v is not None and math.isfinite(v)]
            flat[name] = math.fsum(finite) / len(finite) if finite else None
    verdicts = judge_flat(session, key, OWN_ENGINE, flat, kept)
    evidence = of_rounds(rounds)
    plan = RoundPlan(rounds, 0)
    workload = {"kind": "recorded", "metrics": sorted(flat)}
    place.write(own_record(place, key, flat, kept, verdicts, evidence, plan, None, workload))
    problems = own_problems(session, key, evidence, verdicts)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    return Timing(key, None, flat, kept, verdicts.thresholds)


def check_recorded(
    metrics: object, samples: object
) -> tuple[dict[str, Number | None], dict[str, tuple[Number | None, ...]]]:
    """`record()`'s arguments: known metric names, numbers, one list of samples per
    metric and as many samples for each."""
    owner = "record()"
    if not isinstance(metrics, Mapping):
        raise LLMPerfUsageError(f"{owner}: metrics: must map metric names to numbers")
    if samples is not None and not isinstance(samples, Mapping):
        raise LLMPerfUsageError(f"{owner}: samples: must map metric names to lists of numbers")
    flat = {str(k): _number(owner, f"metrics[{k!r}]", v) for k, v in metrics.items()}
    per_round: dict[str, tuple[Number | None, ...]] = {}
    for name, values in (samples or {}).items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise LLMPerfUsageError(f"{owner}: samples[{name!r}]: must be a list of numbers")
        per_round[str(name)] = tuple(
            _number(owner, f"samples[{name!r}][{i}]", v) for i, v in enumerate(values)
        )
    if not flat and not per_round:
        raise LLMPerfUsageError(f"{owner}: no metrics to record")
    lengths = {len(v) for v in per_round.values()}
    if len(lengths) > 1:
        raise LLMPerfUsageError(
            f"{owner}: samples: every metric needs one value per round (lengths {sorted(lengths)})"
        )
    for name in [*flat, *per_round]:
        _known(owner, name)
    return flat, per_round


def own_record(
    place: Place,
    key: str,
    flat: Mapping[str, Number | None],
    samples: Samples,
    verdicts: Verdicts,
    evidence: Evidence,
    plan: RoundPlan,
    stop: Stop | None,
    workload: Mapping[str, Any],
) -> TestRecord:
    """The record of timed or recorded code, as tests.jsonl keeps it."""
    session = place.session
    model = session.settings.model
    cuda = place.gpus.cuda if place.gpus is not None else ()
    declared = {spec.name: spec for spec in declared_metrics()}
    return TestRecord(
        test_id=place.test_id,
        threshold_key=key,
        config=ConfigRecord(OWN_ENGINE, None, {}, {}, ()),
        engine=OWN_ENGINE,
        engine_config=EngineConfigRecord(OWN_ENGINE, model, cuda, {}),
        engine_info=EngineInfoRecord(OWN_ENGINE, model, place.device, None, {}),
        engine_load_s=None,
        workload=workload,
        rounds=plan.rounds,
        warmup_rounds=plan.warmup_rounds,
        worker=session.worker_id,
        worker_pid=os.getpid(),
        gpus=place.gpus,
        host=session.host,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        metrics=dict(flat),
        metrics_flat=dict(flat),
        thresholds=thresholds_record(verdicts.thresholds),
        baseline=verdicts.baseline.as_record() if verdicts.baseline is not None else None,
        responses=None,
        evidence=evidence,
        samples=samples,
        stop=StopRecord(stop.rounds, stop.reason, stop.undecided) if stop is not None else None,
        unreliable=unreliable(flat),
        declared_metrics={
            name: {"unit": spec.unit, "better": spec.better, "kind": spec.kind}
            for name, spec in declared.items()
            if name in flat
        },
    )


class UntilDecided:
    """Rounds until decided for functions timed together: after each round from the gate's
    `min_rounds` on, the test's bounds and baseline are judged at that look's share of the
    error rate (`looks`: measured rounds and error rate -> the verdicts' looks; `plugin.
    decide` does the same for engines), and another round runs while one is undecided and
    the budget allows."""

    def __init__(
        self, session: LLMPerfSession, looks: Callable[[Measured, float], list[Look]]
    ) -> None:
        self._session, self._looks = session, looks
        self._last: Continuation | None = None

    def __call__(self, measured: Measured) -> bool:
        gate = self._session.settings.gate
        rounds = min(len(kept) for kept in measured.values())
        if rounds < gate.min_rounds:
            return True
        looks = self._looks(measured, gate.look_alpha(rounds))
        elapsed = sum(r.seconds for kept in measured.values() for r in kept)
        self._last = gate.next_round(looks, rounds, elapsed)
        return self._last.more

    def stop(self, rounds: int, verdicts: Verdicts) -> Stop:
        reason: str | None = self._last.reason if self._last is not None else None
        if reason is None:  # the loop ended first: the budget of rounds
            reason = "max_rounds"
        return Stop(rounds, reason, len(verdicts.undecided()))


def _looks(
    session: LLMPerfSession, keys: Sequence[str], measured: Measured, alpha: float
) -> list[Look]:
    """Each timed function's verdicts' looks (each function is its own test record)."""
    looks: list[Look] = []
    for key in keys:
        kept = measured[key]
        flat, samples = timed_metrics(kept), timed_samples(kept)
        looks += judge_flat(session, key, OWN_ENGINE, flat, samples, alpha).looks()
    return looks


def own_problems(
    session: LLMPerfSession, key: str, evidence: Evidence, verdicts: Verdicts
) -> list[str]:
    no_evidence = evidence.problem(key)
    found = verdicts.problems(key, session.settings.update_thresholds)
    return [no_evidence, *found] if no_evidence else found


def _check_counted(key: str, counts: Mapping[str, float]) -> None:
    for item in counts:
        _known(f"{key}: count", rate_name(item), f"counted item {item!r} gives ")


def _known(owner: str, name: str, prefix: str = "") -> None:
    """A usage error unless `name` is a metric the table knows."""
    if spec_for(name) is None:
        raise LLMPerfUsageError(
            f"{owner}: {prefix}unknown metric {name!r}{metric_hint(name)}: declare it once "
            f'(MetricSpec("{name}", unit, "higher" or "lower")) in the pytest_llmperf_metrics '
            "hook of your conftest.py"
        )


def _number(owner: str, where: str, value: object) -> Number | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LLMPerfUsageError(f"{owner}: {where}: must be a number or None, got {value!r}")
    return value


def describe(timed: Timed) -> dict[str, Any]:
    fn = timed.fn
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None)
    counts = timed.count if isinstance(timed.count, Mapping) else None
    return {
        "kind": "own_code",
        "function": f"{module}.{name}" if module else name,
        "counts": dict(counts) if counts is not None else None,
    }
