"""Max load under an SLO: the highest request rate whose goodput still meets the SLO.

`llmperf.max_load_under_slo(config, workload, slo)` (`plugin.slo.search`) measures steps, each
the workload sent open loop at one rate (`Arrivals`, Poisson unless told otherwise):

    sweep      from `start_rate_per_s`, doubling, until a step fails or one at
               `max_rate_per_s` (the highest rate measured) passes;
    bisection  at the midpoint of the last passing rate (0 when the first step failed) and
               the first failing one, until the two are at most `step_per_s` apart.

So the answer lies less than one step below the rate at which the SLO starts to fail.

A step is decided on its rounds' goodput fractions (`SLO.goodput`: the share of requests
that succeeded and met every bound, one sample per measured round) against the required
share `goodput` (0.9: 90% of requests meet the SLO), as a threshold `goodput_fraction:
{min: 0.9}` is judged (`measure.stats.judge_bound`, linear scale): it passes when the
one-sided lower confidence bound is at or above the required share, fails when a one-sided
t-test is confident the true share is below it (samples that do not vary: their mean against
the share), and is measured another round while neither holds. It looks after `min_rounds`
and after every round up to `max_rounds`, each look at its share of the run's error rate
(`measure.stats.round_alpha`), so that looking often does not raise a step's error rate
above alpha. A step still undecided after `max_rounds` is `inconclusive` and counts as a
fail: the search reports a rate it is confident of, and the result says which steps were
inconclusive. Each step is its own decision at alpha; the search does not correct over them.

Client-bound: when the client could not send at the asked rate, what failed is the load
generator, not the server, so the search stops at that step, keeps the last passing rate
and says so (`stopped = "client_bound"`). The client fell short when its achieved send rate
(`load.send_rates`) is below `CLIENT_SHORTFALL` of the rate its schedule asked. The client's
self-check flag (`client_bound`: loop lag, a busy loop thread) is kept with each step but
does not stop the search: it says the client *may* have been the bottleneck, and a busy
shared machine raises it at loads the client keeps up with.

Metrics (the search's test record):
    max_rate_under_slo_req_per_s  the rate of the highest passing step (null when none
                                  passed). Every other metric of the record
                                  (`output_tok_per_s`, `ttft_ms.p90`, `tpot_ms.p90`,
                                  `goodput_fraction`, ...) is that step's, with its
                                  per-round samples, so thresholds judge them as any test's.
The record's `slo_search` keeps every step (`SearchStep.as_dict`): its rate, phase, rounds,
goodput samples with their centre and interval, decision, the asked and achieved send rates,
output tok/s per server and per user (1000 / mean TPOT: the decode speed one user sees), and
TTFT/TPOT p90; and why the search stopped, in words (`note`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pytest_llmperf.measure.stats import BoundVerdict, judge_bound, round_alpha
from pytest_llmperf.suite.arguments import bad, number, one_of, whole
from pytest_llmperf.suite.load import SLO

#: The client is the bottleneck below this share of the asked send rate.
CLIENT_SHORTFALL = 0.9
#: The sweep's factor between steps.
GROWTH = 2.0
OWNER = "max_load_under_slo()"

Decision = Literal["pass", "fail", "inconclusive", "client_bound"]
Phase = Literal["sweep", "bisect"]
#: "bracketed": pass and fail within a step; "max_rate": a step at max_rate_per_s passed;
#: "client_bound": the client fell behind its schedule; "no_pass": no step passed.
Stopped = Literal["bracketed", "max_rate", "client_bound", "no_pass"]


@dataclass(frozen=True)
class SearchPlan:
    """How the search goes (the arguments of `max_load_under_slo`), checked when made."""

    slo: SLO
    goodput: float = 0.9
    start_rate_per_s: float = 1.0
    step_per_s: float = 1.0
    max_rate_per_s: float = 1024.0
    min_rounds: int = 2
    max_rounds: int = 5
    distribution: Literal["poisson", "constant"] = "poisson"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.slo, SLO):
            raise bad(OWNER, "slo", self.slo, "must be an SLO, e.g. SLO(ttft_ms=200)")
        if all(b is None for b in (self.slo.ttft_ms, self.slo.tpot_ms, self.slo.e2e_ms)):
            problem = "has no bound: give ttft_ms, tpot_ms or e2e_ms, or there is nothing to meet"
            raise bad(OWNER, "slo", self.slo, problem)
        goodput = number(OWNER, "goodput", self.goodput, minimum=0, maximum=1)
        if goodput == 0:
            raise bad(OWNER, "goodput", self.goodput, "must be above 0 (0 is met at any load)")
        number(OWNER, "start_rate_per_s", self.start_rate_per_s, positive=True)
        number(OWNER, "step_per_s", self.step_per_s, positive=True)
        number(OWNER, "max_rate_per_s", self.max_rate_per_s, positive=True)
        if self.max_rate_per_s < self.start_rate_per_s:
            problem = f"is below start_rate_per_s={self.start_rate_per_s!r}"
            raise bad(OWNER, "max_rate_per_s", self.max_rate_per_s, problem)
        whole(OWNER, "min_rounds", self.min_rounds, 1)
        whole(OWNER, "max_rounds", self.max_rounds, 1)
        if self.max_rounds < self.min_rounds:
            problem = f"is below min_rounds={self.min_rounds!r}"
            raise bad(OWNER, "max_rounds", self.max_rounds, problem)
        one_of(OWNER, "distribution", self.distribution, ("poisson", "constant"))
        whole(OWNER, "seed", self.seed)

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["slo"] = {k: v for k, v in asdict(self.slo).items() if v is not None}
        return data


@dataclass(frozen=True)
class StepVerdict:
    """A step's goodput samples judged against the required share, at one look."""

    decision: Decision
    verdict: BoundVerdict | None


def judge_goodput(samples: Sequence[float | None], plan: SearchPlan, alpha: float) -> StepVerdict:
    """The step's verdict after `len(samples)` measured rounds: pass, fail, or (undecided)
    inconclusive. A round without a goodput (no request measured) counts as 0."""
    values = [0.0 if v is None else float(v) for v in samples]
    rounds = min(max(len(values), plan.min_rounds), plan.max_rounds)
    look = round_alpha(rounds, plan.min_rounds, plan.max_rounds, alpha)
    verdict = judge_bound(values, plan.goodput, "higher", look, scale="linear")
    decision: Decision = "inconclusive"
    if verdict.outcome != "inconclusive":
        decision = "pass" if verdict.outcome == "met" else "fail"
    return StepVerdict(decision, verdict)


def client_fell_behind(rates: tuple[float, float] | None) -> bool:
    """Whether the achieved send rate is below `CLIENT_SHORTFALL` of the asked one."""
    return rates is not None and rates[1] < CLIENT_SHORTFALL * rates[0]


@dataclass(frozen=True)
class SearchStep:
    """One measured step of the search (a row of the report's table)."""

    rate_per_s: float
    phase: Phase
    decision: Decision
    rounds: int
    goodput_samples: tuple[float | None, ...]
    goodput_centre: float | None
    goodput_low: float | None
    goodput_high: float | None
    p_value: float | None
    asked_send_rate_per_s: float | None
    achieved_send_rate_per_s: float | None
    client_flag: bool
    output_tok_per_s: float | None
    output_tok_per_s_per_user: float | None
    ttft_ms_p90: float | None
    tpot_ms_p90: float | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["goodput_samples"] = list(self.goodput_samples)
        return data


@dataclass(frozen=True)
class SearchResult:
    """The steps in the order they ran, which one is the answer, and why the search ended."""

    plan: SearchPlan
    steps: tuple[SearchStep, ...]
    #: Index in `steps` of the highest passing step; None when none passed.
    chosen: int | None
    stopped: Stopped
    note: str

    @property
    def max_rate_per_s(self) -> float | None:
        return self.steps[self.chosen].rate_per_s if self.chosen is not None else None

    @property
    def inconclusive(self) -> list[float]:
        """The rates of steps that stayed undecided (counted as fails)."""
        return [s.rate_per_s for s in self.steps if s.decision == "inconclusive"]

    def as_record(self) -> dict[str, Any]:
        """The record's `slo_search`."""
        return {
            "plan": self.plan.describe(),
            "max_rate_per_s": self.max_rate_per_s,
            "chosen": self.chosen,
            "stopped": self.stopped,
            "note": self.note,
            "steps": [s.as_dict() for s in self.steps],
        }


def search(plan: SearchPlan, measure: Callable[[float, Phase], SearchStep]) -> SearchResult:
    """Sweep then bisect (module docstring), `measure(rate, phase)` deciding each step."""
    steps: list[SearchStep] = []
    passed: float | None = None

    def done(stopped: Stopped) -> SearchResult:
        passing = [i for i, s in enumerate(steps) if s.decision == "pass"]
        chosen = max(passing, key=lambda i: steps[i].rate_per_s) if passing else None
        if stopped != "client_bound" and chosen is None:
            stopped = "no_pass"
        result = SearchResult(plan, tuple(steps), chosen, stopped, "")
        return SearchResult(plan, tuple(steps), chosen, stopped, note(result))

    rate = float(plan.start_rate_per_s)  # given as 32, recorded as 32.0 like the rest
    failed: float | None = None
    while failed is None:
        step = measure(rate, "sweep")
        steps.append(step)
        if step.decision == "client_bound":
            return done("client_bound")
        if step.decision != "pass":
            failed = rate
        elif rate >= plan.max_rate_per_s:
            return done("max_rate")
        else:
            passed = rate
            rate = min(rate * GROWTH, float(plan.max_rate_per_s))
    low = passed if passed is not None else 0.0
    while failed - low > plan.step_per_s:
        mid = (low + failed) / 2
        step = measure(mid, "bisect")
        steps.append(step)
        if step.decision == "client_bound":
            return done("client_bound")
        if step.decision == "pass":
            low = mid
        else:
            failed = mid
    return done("bracketed")


def note(result: SearchResult) -> str:
    """Why the search ended, in words, with the steps that stayed undecided."""
    plan, best = result.plan, result.max_rate_per_s
    found = f"{best:.4g} req/s" if best is not None else "no rate"
    if result.stopped == "client_bound":
        last = result.steps[-1]
        asked, achieved = last.asked_send_rate_per_s, last.achieved_send_rate_per_s
        says = (
            f"stopped client-bound at {last.rate_per_s:.4g} req/s: the client sent "
            f"{achieved or 0:.4g} req/s of the {asked or 0:.4g} its schedule asked (below "
            f"{CLIENT_SHORTFALL:.0%}), so the load generator, not the server, was the "
            f"bottleneck there; the highest rate measured to meet the SLO is {found}"
        )
    elif result.stopped == "max_rate":
        says = f"the SLO held up to max_rate_per_s={plan.max_rate_per_s:g}: {found} (or more)"
    elif result.stopped == "no_pass":
        says = (
            f"no step met the SLO (lowest measured {min(s.rate_per_s for s in result.steps):.4g}"
            " req/s)"
        )
    else:
        fails = [
            s.rate_per_s
            for s in result.steps
            if s.decision != "pass" and best is not None and s.rate_per_s > best
        ]
        above = f" and fails at {min(fails):.4g} req/s" if fails else ""
        says = (
            f"the SLO is met at {found}{above} (step {plan.step_per_s:g} req/s, goodput >= "
            f"{plan.goodput:g})"
        )
    undecided = result.inconclusive
    if undecided:
        rates = ", ".join(f"{r:.4g}" for r in undecided)
        says += f"; inconclusive (counted as failing) at {rates} req/s"
    return says
