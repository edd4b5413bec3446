"""How sure a number is: intervals, verdicts with error rates, rounds until decided, steps.

Pure Python and `math`: the plugin's dependencies stay pytest, pytest-benchmark and PyYAML
(scipy, 35 MB, is only a test dependency, to check these functions against).

Each measured round is one sample of every per-test metric. From a test's samples:

Intervals (`estimate`, `proportion`)
    Positive ratio-scale metrics (throughput, latency): a t interval on the logs of the
    samples, mapped back; the centre is the geometric mean. Timing noise is multiplicative
    and skewed to the right (a round is slowed by a stall far more often than sped up), and
    logs make it near-symmetric; the t quantile with n - 1 degrees of freedom accounts for
    the 3-10 samples a benchmark can afford. A bootstrap understates the width there: the
    bootstrap means of 3 values take at most 10 distinct values, and its 95% percentile
    interval of a mean covers the truth in 74% of trials with 3 normal samples, 84% with 5,
    90% with 10 (2,000 simulated trials each).
    Metrics that can be 0 or negative (failure_rate, counts, differences): a t interval on
    the values. Proportions over items with per-item outcomes (accuracy over questions):
    a Wilson score interval, which, unlike the normal approximation, stays inside [0, 1]
    and keeps its coverage closer to the stated level near 0 and 1 (8 of 10 correct:
    [0.490, 0.943] at 95%). One sample, or samples all equal: `exact`, with no interval; it
    says nothing about noise.
    The interval prints as its relative half-width, `6,193 tok/s ±2.1%`.

Against a bound (`judge_bound`)
    Higher-is-better with bound b (a threshold's `min`; `max` mirrors it), on the logs:
    missed when a one-sided t-test is confident the true value is below b (H0: mean >=
    log b; p <= alpha); met when the one-sided (1 - alpha) lower confidence bound is >= b;
    inconclusive otherwise. An unchanged run whose true value sits exactly at the bound is
    missed with probability alpha; one truly below it is met with probability at most
    alpha. Bounds of 0 (`failure_rate: {max: 0}`) and samples without spread (a
    deterministic model's exact-match accuracy) are judged exactly, the mean against the
    bound: an interval never softens a no-evidence check.

Against a baseline (`judge_change`)
    On the logs, run r of a side has mean mu + d_r, with d_r ~ N(0, drift^2) the drift
    between runs, and its rounds vary around it with sd sigma_w. The change is D = (mean of
    the current runs' means) - (mean of the K baseline runs' means). With one current run of
    n rounds and one baseline run (K = 1) of m rounds, drift can only be given (`drift`):

        Var(D) = drift^2 (1 + 1/K) + s_c^2 / n + s_b^2 / (K m),

    s_c, s_b the pooled within-run sds of each side (a side made of single-round runs
    borrows the other's). Drift is what this project's machines show most (an unchanged
    rerun of the CPU smoke tier moved by 10% in throughput, a vLLM configuration by 2.6x):
    a test on the rounds alone would call it a regression. With K >= 2 baseline runs, the
    variance of their means, S^2 (K - 1 df), estimates drift^2 + s_b^2 mean(1/m) directly,
    and

        Var(D) = (1 + 1/K) max(S^2, drift^2 + s_b^2 mean(1/m)) + s_c^2 / n,

    so the given drift is a floor under the estimated one. This counts a baseline run's
    round noise once too often in the current run's share, which is conservative. The first
    design, drift^2 estimated as S^2 less the within part, floored at 0, then used like a
    given floor, let 6.65% (2 baseline runs) and 6.3% (3 runs) of verdicts at a 5% error rate
    false-alarm with the truth on the tolerance (4,000 simulated verdicts each): when S^2
    falls under the within part by chance, drift counts as known to be 0. Subtracting the
    within part inside Var(D) instead drives Welch-Satterthwaite's df below 1 with 2
    baseline runs (intervals without end). The degrees of freedom are Welch-Satterthwaite's,
    df = V^2 / sum_j (c_j s_j^2)^2 / df_j over the independent variance estimates s_j^2
    (df_j each) with V = sum_j c_j s_j^2: the within-run variances (df: rounds minus runs)
    and S^2; a drift floor is known, so it adds variance but no uncertainty about it.
    Higher-is-better, tolerance tol: regressed when confident the ratio is below 1 - tol
    (H0: ratio >= 1 - tol; p <= alpha), ok when the (1 - alpha) lower confidence bound of the
    ratio is >= 1 - tol, inconclusive otherwise. On the linear scale the change is the
    difference and the tolerance absolute; a linear tolerance of 0 (`failure_rate:0`, any
    new failure) is judged exactly.

Two sides paired by turn (`paired_ratio`)
    `llmperf.compare` measures A and B in turns, ABBA BAAB ..., one pair of turns (one round
    of each side, or a block of rounds where the engines are swapped) at a time. Machine drift
    moves both turns of a pair alike and cancels in their ratio r_i = b_i / a_i, and the ABBA
    order cancels a linear drift within each group of two pairs. The ratio B/A is the
    geometric mean of the r_i with a t interval on log r_i (n - 1 df for n pairs): the paired
    t interval, which fits the 3-10 pairs a benchmark affords for the reasons the log-t
    interval above does. A bound on a ratio (`speedup: {min: 1.1}`) is judged on the r_i
    like any other metric on its samples (`judge_bound`, so Holm's correction and the looks of
    rounds until decided apply unchanged): met means B beats A by the bound with confidence.

Several metrics in one test (`correct`)
    Holm's step-down procedure over the metrics' one-sided p-values keeps the chance that
    any metric of an unchanged test is missed / regressed at alpha, whatever the dependence
    between the metrics (throughput and latency of one run are strongly dependent). It
    rejects everything Bonferroni (alpha / m each) rejects and more, with the same
    guarantee. `met` / `ok` need no correction: a test passes only when every metric is met,
    and a test with some truly-bad metric passes only if that metric is wrongly met, which
    happens with probability at most alpha (the intersection-union principle); dividing
    alpha there would only make more verdicts inconclusive.

Rounds until decided (`round_alpha`, `should_continue`)
    Looking after every round and stopping at the first decided verdict inflates false
    alarms: looking after each of rounds 3 to 10 at alpha = 0.05 misses a bound that is
    exactly met in 14-15% of trials. Each look k gets alpha_k, the increment of a Lan-DeMets
    spending function between the information fractions (rounds / most rounds) of looks
    k - 1 and k; the alpha_k sum to alpha, so by the union bound the false-alarm rate over
    all looks is at most alpha with no assumption about how the looks' statistics depend on
    each other (t statistics on nested samples with a drift term, for which no exact
    group-sequential boundaries are tabulated). The price is some conservatism, as the
    looks are correlated: about 3% instead of 5% in the same trials. The same alpha_k serves
    both sides of a verdict, so a wrongly `met` bound is as rare.
    The default is the Pocock-type function alpha ln(1 + (e - 1) t): with 3 of at most 10
    rounds the first look gets 42% of alpha, so clear passes and clear regressions stop at
    the minimum, which is what rounds until decided is for. The O'Brien-Fleming type
    keeps alpha for the last looks: with 3% round noise at alpha = 0.005 it catches a 5%
    miss in 88% of trials instead of 62%, but a 20% miss takes 5.4 rounds on average instead
    of 3.9, and a clear pass likewise; choose it where power at the margin matters more
    than time. Measuring stops when every metric is decided, at the round or time budget,
    or when more rounds cannot decide: every undecided verdict has less than 10% of its
    variance in the current run's rounds (the rest is drift and the baseline's noise).

Change points over a history (`change_points`)
    Binary segmentation by the best two-sample split, or the best middle stretch (a
    regression fixed later), each tested by permutation with a fixed seed;
    `pytest_llmperf.measure.stats.changepoints` explains it, and its limits (`fewest_runs`:
    no step is found in fewer than 12 runs at the default level).
"""

from __future__ import annotations

from pytest_llmperf.measure.stats.bounds import BoundOutcome, BoundVerdict, judge_bound
from pytest_llmperf.measure.stats.change import ChangeOutcome, ChangeVerdict, judge_change
from pytest_llmperf.measure.stats.changepoints import Step, change_points, fewest_runs
from pytest_llmperf.measure.stats.distributions import (
    normal_cdf,
    normal_ppf,
    t_cdf,
    t_pdf,
    t_ppf,
    t_sf,
)
from pytest_llmperf.measure.stats.estimate import Estimate, Method, Scale, estimate, proportion
from pytest_llmperf.measure.stats.multiple import Judged, correct, holm_adjust
from pytest_llmperf.measure.stats.paired import pair_ratios, paired_ratio
from pytest_llmperf.measure.stats.sequential import (
    Continuation,
    Spending,
    StopReason,
    look_alpha,
    round_alpha,
    should_continue,
    spent_alpha,
)

__all__ = [
    "BoundOutcome",
    "BoundVerdict",
    "ChangeOutcome",
    "ChangeVerdict",
    "Continuation",
    "Estimate",
    "Judged",
    "Method",
    "Scale",
    "Spending",
    "Step",
    "StopReason",
    "change_points",
    "correct",
    "estimate",
    "fewest_runs",
    "holm_adjust",
    "judge_bound",
    "judge_change",
    "look_alpha",
    "normal_cdf",
    "normal_ppf",
    "pair_ratios",
    "paired_ratio",
    "proportion",
    "round_alpha",
    "should_continue",
    "spent_alpha",
    "t_cdf",
    "t_pdf",
    "t_ppf",
    "t_sf",
]
