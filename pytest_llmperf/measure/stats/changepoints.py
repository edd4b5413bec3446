"""Change points over a history of runs (`llmperf trend`): where a metric's level stepped.

Hierarchical segmentation, as in E-Divisive and Apache Otava (Hunter), with a mean-shift
statistic and a permutation test:

1. In a segment of the series (all of it, at first), every split leaving at least `min_size`
   runs on each side is scored by its two-sample t statistic (pooled variance). For a fixed
   segment the largest t is the split with the largest between-sides sum of squares,
   nL nR / n (mean_L - mean_R)^2, since the total sum of squares does not depend on the split.
2. Significance: the runs of the segment are shuffled `permutations` times (a fixed seed, so
   the same history always gives the same answer) and the best split's statistic recomputed
   each time; the p-value is (1 + the shuffles scoring at least as high) / (1 + shuffles).
   Shuffling, rather than the t distribution, accounts for having searched every split, and
   assumes no more than that runs are exchangeable when nothing changed. The shuffles stop
   early once the p-value cannot fall to its level (Besag and Clifford's sequential p-value),
   so a flat series costs a few dozen shuffles.
3. When no single split is significant, a bump: a middle stretch against the runs on both
   sides of it (circular binary segmentation, Olshen et al. 2004), scored and shuffled the
   same way. A regression that was fixed ten nights later is one such stretch, and a single
   split misses it: each side of any split holds a mix of both levels.
   The two searches share `alpha` (3/4 for the single split, 1/4 for the bump: Bonferroni),
   so a flat series is flagged with probability at most `alpha`.
4. Each significant split gives one or two change points; every piece is searched again,
   until none splits. Then each change point moves to the best single split between its
   neighbours (keeping the p-value of the test that found it), until none moves.

The defaults (alpha 0.005, at least 3 runs a side) find a 15% step in 20 runs with 3% noise
at every index from 3 to 17 and false-alarm on about 0.5% of flat series of 20. A
permutation test cannot flag a step in the last k runs of n unless 2 / C(n, k) is below its
level (only 2 of the C(n, k) orders put those runs at an end): with 20 runs that is 3 runs
(2 / 1140), never 1 or 2. A new night's step is a job for `judge_change`, with the nights
before it pooled as baseline runs; this function names where a history stepped.

Each run contributes one value: its own value, or the centre of its per-round samples (the
geometric mean on the log scale). Run means are the unit because runs drift between each
other by more than their rounds vary within (the reason `judge_change` has a drift term):
rounds would make a night's noise look like a step. On the log scale the steps are relative
(after / before - 1, between the geometric means of the segments either side).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_llmperf.measure.stats.estimate import Scale, Summary, transform

#: The share of `alpha` given to the single-split search; the bump search gets the rest.
SINGLE_SHARE = 0.75


@dataclass(frozen=True)
class Step:
    """A change point: runs from `index` on sit at a different level than those before.

    `before` and `after` are the centres of the segments on either side (up to the
    neighbouring change points); `change` is after / before - 1 on the log scale, after -
    before on the linear one; `p_value` is the permutation test's that found it.
    """

    index: int
    before: float
    after: float
    change: float
    p_value: float


def change_points(
    series: Sequence[float | Sequence[float]],
    scale: Scale = "log",
    alpha: float = 0.005,
    permutations: int = 4999,
    min_size: int = 3,
    seed: int = 0,
) -> list[Step]:
    """The steps in a series of runs, oldest first; each run a value or its samples."""
    if not 0 < alpha < 1 or permutations < 1 or min_size < 1:
        raise ValueError("alpha must be in (0, 1), permutations and min_size >= 1")
    values = _run_values(series, scale)
    rng = random.Random(seed)
    found: dict[int, float] = {}
    segments = [(0, len(values))]
    while segments:
        start, end = segments.pop()
        split = _split(values[start:end], min_size, alpha, permutations, rng)
        if split is not None:
            cuts, p = split
            for cut in cuts:
                found[start + cut] = p
            edges = [start, *(start + cut for cut in cuts), end]
            segments += itertools.pairwise(edges)
    found = _refine(values, found, min_size)
    bounds = [0, *sorted(found), len(values)]
    steps = []
    for left, index, right in zip(bounds, bounds[1:], bounds[2:], strict=False):
        before = Summary.of(values[left:index]).mean
        after = Summary.of(values[index:right]).mean
        if scale == "log":
            change = math.expm1(after - before)
            before, after = math.exp(before), math.exp(after)
        else:
            change = after - before
        steps.append(Step(index, before, after, change, found[index]))
    return steps


def fewest_runs(alpha: float = 0.005, min_size: int = 3) -> int:
    """The fewest runs in which `change_points` can find a step at all: with n runs, the
    most extreme split (k runs against n - k, k = n // 2) is significant only if 2 / C(n, k)
    is below the single-split level, `SINGLE_SHARE` * alpha (see the module docstring). 12 at
    the defaults: a series of 11 runs, however clear its step, is never flagged."""
    if not 0 < alpha < 1 or min_size < 1:
        raise ValueError("alpha must be in (0, 1), min_size >= 1")
    n = 2 * min_size
    while 2 / math.comb(n, n // 2) > SINGLE_SHARE * alpha:
        n += 1
    return n


def _refine(values: list[float], found: dict[int, float], min_size: int) -> dict[int, float]:
    """Each change point moved to the best single split between its neighbours, until none
    moves. Binary segmentation cuts a staircase first where the whole series splits best,
    which can fall between its steps; the piece left beside a step may then be too short
    for its own permutation test (see above), and the step's first run would be missed."""
    cuts = sorted(found)
    for _ in range(len(cuts) + 1):
        moved = False
        for k, cut in enumerate(cuts):
            left = cuts[k - 1] if k else 0
            right = cuts[k + 1] if k + 1 < len(cuts) else len(values)
            best = left + _best(values[left:right], min_size, bump=False)[2]
            if best != cut and best not in found:
                found = {best if c == cut else c: p for c, p in found.items()}
                cuts[k], moved = best, True
        if not moved:
            break
    return found


def _run_values(series: Sequence[float | Sequence[float]], scale: Scale) -> list[float]:
    runs = [[run] if isinstance(run, (int, float)) else list(run) for run in series]
    values = [transform(run, scale) for run in runs]
    if any(v is None for v in values):
        raise ValueError("a log-scale series needs positive values; use scale='linear'")
    return [Summary.of(v).mean for v in values if v is not None]


def _split(
    values: list[float], min_size: int, alpha: float, permutations: int, rng: random.Random
) -> tuple[list[int], float] | None:
    """Where `values` change level (one cut, or the two ends of a bump) and the p-value."""
    if len(values) < 2 * min_size or Summary.of(values).sum_squares == 0:
        return None
    for bump, level in ((False, SINGLE_SHARE * alpha), (True, (1 - SINGLE_SHARE) * alpha)):
        score, start, end = _best(values, min_size, bump)
        if score < 0:
            continue  # too short for a bump with min_size runs on each side
        p = _permutation_p(values, min_size, bump, score, level, permutations, rng)
        if p is not None:
            return [cut for cut in (start, end) if 0 < cut < len(values)], p
    return None


def _best(values: Sequence[float], min_size: int, bump: bool) -> tuple[float, int, int]:
    """The stretch [start, end) whose mean differs most from the rest's, scored by the
    between-groups sum of squares k (n - k) / n (mean_in - mean_out)^2. Without `bump` the
    stretch starts at 0 (one split, at `end`); with it, at least `min_size` runs lie on
    each side. (-1, 0, 0) when no stretch fits."""
    n = len(values)
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    mean = prefix[-1] / n
    # centred[i] = sum of the first i values minus i * mean: a stretch's sum, centred.
    centred = [s - i * mean for i, s in enumerate(prefix)]
    best = (-1.0, 0, 0)
    starts = range(min_size, n - 2 * min_size + 1) if bump else range(1)
    for start in starts:
        base = centred[start]
        for end in range(start + min_size, n - min_size + 1):
            k = end - start
            d = centred[end] - base
            score = d * d * n / (k * (n - k))
            if score > best[0]:
                best = (score, start, end)
    return best


def _permutation_p(
    values: list[float],
    min_size: int,
    bump: bool,
    observed: float,
    level: float,
    permutations: int,
    rng: random.Random,
) -> float | None:
    """The permutation p-value of `observed`, if it is <= level (None as soon as it cannot be)."""
    # p <= level needs at most this many shuffles at or above the observed score.
    allowed = math.floor(level * (permutations + 1)) - 1
    shuffled = list(values)
    at_least = 0
    for _ in range(permutations):
        rng.shuffle(shuffled)
        # A shuffle that ties the observed score (up to rounding) counts as reaching it.
        if _best(shuffled, min_size, bump)[0] >= observed * (1 - 1e-12):
            at_least += 1
            if at_least > allowed:
                return None
    p = (1 + at_least) / (1 + permutations)
    return p if p <= level else None
