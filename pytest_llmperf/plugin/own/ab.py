"""`llmperf.compare_functions(a, b)`: two functions of the suite's own code as one A/B test.

Their rounds take turns as `llmperf.time_turns`'s do (round k calls A then B, round k + 1 B
then A: `measure.timed.turn_order`), and each round's two calls are a pair. The test is one
record, as `llmperf.compare`'s is: each side's metrics over its rounds (`a.call_s`,
`b.questions_per_s`, with per-round samples), B/A of each with its paired interval
(`ratio.call_s`), and `speedup`, B/A of calls per second (A's seconds over B's), all defined in
`measure.turns`; `ab` in the record says how the turns ran. Thresholds of engine `own` judge
it (`speedup: {min: 2}` in `<hardware>/own.yaml`), and `--llmperf-update-thresholds` bounds
its `speedup`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest

from pytest_llmperf.measure.evidence import of_rounds
from pytest_llmperf.measure.rounds import RoundPlan
from pytest_llmperf.measure.samples import Samples
from pytest_llmperf.measure.stats import Estimate, estimate
from pytest_llmperf.measure.timed import OWN_ENGINE, timed_metrics, timed_samples, turn_order
from pytest_llmperf.measure.turns import (
    CALLS_SPEEDUP_OF,
    RATIO,
    SIDES,
    geometric_means,
    prefixed,
    ratio_samples,
)
from pytest_llmperf.plugin.own.timed import (
    Measured,
    Number,
    Place,
    Timed,
    Timing,
    UntilDecided,
    describe,
    own_problems,
    own_record,
    run_rounds,
)
from pytest_llmperf.plugin.pipeline import judge_flat
from pytest_llmperf.thresholds.check import CheckResult


@dataclass(frozen=True)
class FunctionComparison:
    """What `llmperf.compare_functions` returns: each side's timing (its last call's result,
    its metrics and samples) and B/A of each metric with its paired interval (`ratios`,
    named as thresholds name them: `speedup`, `ratio.call_s`)."""

    key: str
    a: Timing
    b: Timing
    ratios: Mapping[str, Estimate]
    #: The calls as they ran: `ABBAABBA` for four pairs.
    order: str
    thresholds: CheckResult

    @property
    def speedup(self) -> Estimate | None:
        """B/A of calls per second (A's seconds over B's) with its interval."""
        return self.ratios.get("speedup")


def compare_functions(
    place: Place, key: str, sides: tuple[Timed, Timed], rounds: int | str, warmup_rounds: int
) -> FunctionComparison:
    """Time `a` and `b` in turns as one A/B test (see the module docstring), record it, and
    fail the test (after recording it) when it missed a bound, regressed or ran no round."""
    session = place.session
    gate = session.settings.gate
    chosen = session.settings.rounds or rounds
    auto = chosen == "auto"
    timed: dict[str, Timed] = dict(zip(SIDES, sides, strict=True))

    def looks(measured: Measured, alpha: float) -> list[Any]:
        flat, samples = ab_metrics(measured)
        return judge_flat(session, key, OWN_ENGINE, flat, samples, alpha).looks()

    until = UntilDecided(session, looks) if auto else None
    plan = RoundPlan(gate.max_rounds if auto else int(chosen), warmup_rounds)
    measured, results, _ = run_rounds(place, timed, plan, False, until)
    flat, samples = ab_metrics(measured)
    pairs = min(len(kept) for kept in measured.values())
    alpha = gate.look_alpha(pairs) if auto else gate.alpha
    verdicts = judge_flat(session, key, OWN_ENGINE, flat, samples, alpha)
    stop = until.stop(pairs, verdicts) if until is not None else None
    evidence = of_rounds(pairs)
    order = "".join("".join(turn_order(["A", "B"], i)) for i in range(pairs))
    workload: dict[str, Any] = {"kind": "own_code"}
    workload.update({side: describe(timed[side]) for side in SIDES})
    record = own_record(
        place, key, flat, samples, verdicts, evidence, RoundPlan(pairs, warmup_rounds), stop,
        workload,
    )  # fmt: skip
    ab: dict[str, Any] = {
        "mode": "interleaved",
        "order": order,
        "pairs": pairs,
        "turn_rounds": 1,
        "interval": "paired t on log ratios, 95%",
        **{side: _side(timed[side], place, pairs) for side in SIDES},
    }
    place.write(replace(record, ab=ab))
    problems = own_problems(session, key, evidence, verdicts)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    a, b = (
        Timing(
            key, results.get(side), timed_metrics(kept), timed_samples(kept), verdicts.thresholds
        )
        for side, kept in measured.items()
    )
    ratios = {
        name: estimate([v for v in values if v is not None], "log")
        for name, values in samples.items()
        if name == "speedup" or name.startswith(f"{RATIO}.")
    }
    return FunctionComparison(key, a, b, ratios, order, verdicts.thresholds)


def ab_metrics(measured: Measured) -> tuple[dict[str, Number | None], Samples]:
    """The A/B test's flat metrics and samples over the pairs measured so far: each side's
    (prefixed `a.`, `b.`), and B/A of each, per pair (`measure.turns`)."""
    pairs = min(len(kept) for kept in measured.values())
    flat: dict[str, Number | None] = {}
    samples: Samples = {}
    for side in SIDES:
        kept = measured[side][:pairs]
        flat.update(prefixed(timed_metrics(kept), side))
        samples.update(prefixed(timed_samples(kept), side))
    a, b = ([timed_metrics([r]) for r in measured[side][:pairs]] for side in SIDES)
    ratios = ratio_samples(a, b, CALLS_SPEEDUP_OF)
    flat.update(geometric_means(ratios))
    samples.update(ratios)
    return flat, samples


def _side(timed: Timed, place: Place, rounds: int) -> dict[str, Any]:
    """What the record keeps of a side, in the shape `llmperf.compare`'s sides have."""
    return {
        "config": None,
        "engine": OWN_ENGINE,
        "engine_config": None,
        "given": describe(timed)["function"],
        "engine_info": {"device": place.device},
        "loads_s": [],
        "rounds": rounds,
    }
