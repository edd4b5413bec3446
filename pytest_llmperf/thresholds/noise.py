"""Bounds written from noise: where a bound goes, given the runs it is written from.

For a metric with per-round samples in K runs (one run, under `--llmperf-update-thresholds`;
several, under `llmperf calibrate`), on the logs of the samples: each run's mean m_r, their
mean m, the pooled within-run variance s_w^2 over n rounds a run, and the spread of a run's
mean between runs, `noise`:

    K >= 2:  noise^2 = max(S^2, drift^2 + s_w^2 / n)    S^2 the variance of the K run means
    K = 1:   noise^2 = drift^2 + s_w^2 / n              drift: `--llmperf-drift`, a floor

(the same model as the baseline verdicts of `measure.stats.judge_change`). The bound is a
one-sided prediction limit for the mean of a new run of the same setup:

    min: exp(m - c noise)    max: exp(m + c noise),    c = t(0.975, K - 1) sqrt(1 + 1/K)
                                                       (c = 2 for K = 1)

so an unchanged setup's run falls beyond it about 2.5% of the time (less for K = 1), and is
judged missed far more rarely than that: `thresholds.check` misses a bound only when the
run is confidently beyond it, with `noise` as the drift between runs. The file records
`noise`, `runs` (K), `rounds` (n) and `detects`: the smallest change the bound catches in 80%
of runs of n rounds at error rate `alpha`, a fall of 1 - exp(-(c noise + (z_alpha + z_0.8)
se)) for a `min` (a rise of exp(...) - 1 for a `max`), se^2 = noise^2 + s_w^2 / n. A metric
with a sample of 0 or less, or fewer than two samples in all, has no noise to write from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from pytest_llmperf.measure.stats import t_ppf

Side = Literal["min", "max"]
_POWER = 0.8


@dataclass(frozen=True)
class NoiseBound:
    """Where a bound goes, and the noise it was written from (see the module docstring)."""

    limit: float
    noise: float
    runs: int
    rounds: int
    #: The smallest change caught in 80% of runs: a fall for a `min`, a rise for a `max`.
    detects: float


def bound_from_noise(
    runs: Sequence[Sequence[float]], side: Side, drift: float, alpha: float
) -> NoiseBound | None:
    """The bound of one side of a metric from its per-round samples in `runs`."""
    kept = [[math.log(v) for v in run] for run in runs if run]
    values = [v for run in runs for v in run]
    if not kept or len(values) < 2 or any(v <= 0 or not math.isfinite(v) for v in values):
        return None
    means = [sum(run) / len(run) for run in kept]
    k = len(kept)
    centre = sum(means) / k
    squares = sum(sum((x - m) ** 2 for x in run) for run, m in zip(kept, means, strict=True))
    within_df = sum(len(run) - 1 for run in kept)
    within = squares / within_df if within_df > 0 else 0.0
    rounds = round(sum(len(run) for run in kept) / k)
    floor = drift**2 + within / rounds
    if k >= 2:
        between = sum((m - centre) ** 2 for m in means) / (k - 1)
        noise = math.sqrt(max(between, floor))
        c = t_ppf(0.975, k - 1) * math.sqrt(1 + 1 / k)
    else:
        noise = math.sqrt(floor)
        c = 2.0
    if noise == 0:
        return None
    sign = -1.0 if side == "min" else 1.0
    limit = math.exp(centre + sign * c * noise)
    se = math.sqrt(noise**2 + within / rounds)
    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(_POWER)
    shift = c * noise + z * se
    detects = 1 - math.exp(-shift) if side == "min" else math.exp(shift) - 1
    return NoiseBound(limit, noise, k, rounds, detects)
