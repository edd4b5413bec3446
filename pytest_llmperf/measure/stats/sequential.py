"""Rounds until decided: the error rate of each look, and when to stop measuring.

Why alpha spending, and why the Pocock-type spending function by default, is in the
docstring of `pytest_llmperf.measure.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_llmperf.measure.stats.distributions import normal_cdf, normal_ppf
from pytest_llmperf.measure.stats.estimate import check_alpha
from pytest_llmperf.measure.stats.multiple import Judged

#: Lan-DeMets spending functions: "pocock" spends alpha evenly over the information
#: (alpha ln(1 + (e - 1) t)), "obrien-fleming" keeps nearly all of it for the last looks
#: (2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))).
Spending = Literal["pocock", "obrien-fleming"]
#: "decided": every judged metric is decided; "max_rounds" / "max_seconds": the budget is
#: spent (or the next round would overrun the time budget); "cannot_decide": what is still
#: undecided is dominated by variance that more rounds do not shrink (between-run drift,
#: the baseline's own noise).
StopReason = Literal["decided", "max_rounds", "max_seconds", "cannot_decide"]

#: Below this share of reducible variance, more rounds cannot narrow an interval by more
#: than about 5% (sqrt(1 - 0.1) = 0.95), however many are run.
FUTILE_SHARE = 0.1


def spent_alpha(fraction: float, alpha: float, spending: Spending = "pocock") -> float:
    """The error rate spent by information fraction `fraction` (rounds so far over the most
    rounds), out of `alpha` spent at 1."""
    check_alpha(alpha)
    if not 0 <= fraction <= 1:
        raise ValueError(f"information fraction {fraction} is not in [0, 1]")
    if fraction == 0:
        return 0.0
    if spending == "pocock":
        return alpha * math.log1p((math.e - 1) * fraction)
    if spending == "obrien-fleming":
        return 2 - 2 * normal_cdf(normal_ppf(1 - alpha / 2) / math.sqrt(fraction))
    raise ValueError(f"unknown spending function {spending!r}")


def look_alpha(
    look: int,
    looks: int,
    alpha: float,
    spending: Spending = "pocock",
    first_fraction: float | None = None,
) -> float:
    """The error rate of look `look` (1-based) of at most `looks`, for each side of a verdict.

    The looks sit at information fractions from `first_fraction` (default 1/looks) to 1, evenly
    spaced; look k gets what the spending function adds between look k - 1 and look k. The
    rates of all looks sum to `alpha`, so by the union bound the chance of a false alarm at
    any look is at most `alpha`, however the looks' statistics depend on each other.
    """
    if not 1 <= look <= looks:
        raise ValueError(f"look {look} is not one of 1..{looks}")
    first = 1 / looks if first_fraction is None else first_fraction
    if not 0 < first <= 1:
        raise ValueError(f"first information fraction {first} is not in (0, 1]")
    if looks == 1:
        return alpha

    def fraction(k: int) -> float:
        return first + (1 - first) * (k - 1) / (looks - 1) if k > 0 else 0.0

    return spent_alpha(fraction(look), alpha, spending) - spent_alpha(
        fraction(look - 1), alpha, spending
    )


def round_alpha(
    rounds: int, min_rounds: int, max_rounds: int, alpha: float, spending: Spending = "pocock"
) -> float:
    """`look_alpha` for a test that looks after `min_rounds` rounds and after every further
    round up to `max_rounds`: the look after round `rounds`, at information rounds/max_rounds."""
    if not 1 <= min_rounds <= rounds <= max_rounds:
        raise ValueError(f"round {rounds} is not within {min_rounds}..{max_rounds}")
    return look_alpha(
        rounds - min_rounds + 1,
        max_rounds - min_rounds + 1,
        alpha,
        spending,
        first_fraction=min_rounds / max_rounds,
    )


@dataclass(frozen=True)
class Continuation:
    """Whether to measure another round, and if not, why not."""

    more: bool
    reason: StopReason | None
    undecided: int


def should_continue(
    verdicts: Sequence[Judged],
    rounds: int,
    max_rounds: int,
    elapsed: float,
    max_seconds: float,
    futile_share: float = FUTILE_SHARE,
) -> Continuation:
    """Whether a test that has measured `rounds` rounds in `elapsed` seconds should measure
    another, given its metrics' verdicts at this look.

    It stops when every verdict is decided; when `max_rounds` are measured; when another
    round, at the average round's duration so far, would end past `max_seconds`; or when
    every undecided verdict has less than `futile_share` of its variance left for more
    rounds to shrink (the drift floor and the baseline dominate).
    """
    if rounds < 1 or max_rounds < 1 or elapsed < 0 or max_seconds <= 0:
        raise ValueError("rounds and max_rounds must be >= 1, elapsed >= 0, max_seconds > 0")
    undecided = [v for v in verdicts if not v.decided]
    reason: StopReason | None = None
    if not undecided:
        reason = "decided"
    elif rounds >= max_rounds:
        reason = "max_rounds"
    elif elapsed + elapsed / rounds > max_seconds:
        reason = "max_seconds"
    elif all(v.reducible_share < futile_share for v in undecided):
        reason = "cannot_decide"
    return Continuation(reason is None, reason, len(undecided))
