"""`llmperf calibrate RUN...`: thresholds written from the noise of several runs.

Run a suite N times on the machine its bounds are for (`for i in $(seq 5); do pytest suites/
-m smoke; done`), then `llmperf calibrate latest:5` (or the run folders) writes each test's
bounds into `<thresholds-dir>/<hardware>/<engine>.yaml` (the file a run there is checked
against: an existing `h100/` folder for "h100-80gb-hbm3") from the spread of the runs' means and
of their rounds (`thresholds.noise`): the drift between runs that one run cannot see is then
measured, not assumed. A test that some runs lack is written from the runs that have it.
Runs of several engines or machines each go to their own file.

A run disturbed by other work (another job on the machine's cores) is not the setup's noise:
with four runs or more, a run whose mean headline metric sits far from the median run's
(`OUTLIER_DISTANCE` robust standard deviations, and never nearer than that many drifts) is
left out of that test's bounds, and the output says so. The drift floor (`--drift`) is the
least noise written for, whatever the runs showed: runs made back to back on one machine
drift less than runs on another day or another machine of the same kind.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.results.baseline import DEFAULT_DRIFT
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run
from pytest_llmperf.thresholds.check import DEFAULT_ALPHA
from pytest_llmperf.thresholds.files import select_threshold_files
from pytest_llmperf.thresholds.update import AB_DEFAULT_METRICS, Observed, update_thresholds

#: The metrics a test without bounds gets (as under --llmperf-update-thresholds).
DEFAULT_METRICS = ("output_tok_per_s", "ttft_ms.p90", "tpot_ms.p90", "e2e_ms.p90", "failure_rate")

#: How far from the median run (in robust standard deviations of the runs' means, and at
#: least this many drifts) a run's headline metric must sit to be left out as disturbed.
OUTLIER_DISTANCE = 3.5
#: The fewest runs the outlier rule looks at, and the fewest it leaves.
_OUTLIER_RUNS = 4
_KEPT_RUNS = 3
#: The median absolute deviation of a normal sample, in standard deviations.
_MAD_SD = 1.4826


def calibrate(
    runs: Sequence[Run],
    thresholds_dir: Path,
    margin: float = 0.25,
    drift: float = DEFAULT_DRIFT,
    alpha: float = DEFAULT_ALPHA,
) -> list[str]:
    """Write the bounds of every test in `runs`; returns what was written, one line each."""
    if len(runs) < 2:
        raise LLMPerfUsageError(
            f"calibrating needs at least 2 runs to see their drift, got {len(runs)} (a single "
            "run's bounds: pytest --llmperf-update-thresholds)"
        )
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for run in runs:
        hardware = str(run.summary.get("hardware") or "cpu")
        for test in run.tests:
            groups.setdefault((hardware, test.engine), {}).setdefault(test.key, []).append(run)
    lines: list[str] = []
    for (hardware, engine), tests in sorted(groups.items()):
        results: dict[str, Observed] = {}
        used: dict[str, int] = {}
        for key, having in tests.items():
            pairs = [(r, t) for r in having if (t := r.test(key)) is not None]
            disturbed = dict(disturbed_runs([t for _, t in pairs], drift))
            for index, why in disturbed.items():
                lines.append(f"note: {key}: left out run {pairs[index][0].run_id}: {why}")
            found = [t for i, (_, t) in enumerate(pairs) if i not in disturbed]
            results[key], used[key] = Observed.of(found), len(found)
        # The file a run on this hardware is checked against (an `h100/` folder serves
        # "h100-80gb-hbm3"), so that a new, more specific folder does not shadow it.
        chosen = select_threshold_files(thresholds_dir, hardware, engine)
        path = chosen[0] if chosen else thresholds_dir / hardware / f"{engine}.yaml"
        report = update_thresholds(
            path, results, margin, DEFAULT_METRICS, drift, alpha, keep_met=True
        )
        lines += [f"{path}: {t} ({used[t]} runs)" for t in report.written]
        lines += [f"WARNING: {path}: {r}" for r in report.refused]
        lines += [f"WARNING: threshold loosened: {r}" for r in report.loosened]
    return lines


def disturbed_runs(records: Sequence[TestRecord], drift: float) -> list[tuple[int, str]]:
    """The runs of one test to leave out as disturbed (see the module docstring): their
    indices in `records` and why, judged on the first headline metric every run sampled."""
    if len(records) < _OUTLIER_RUNS:
        return []
    for metric in (*AB_DEFAULT_METRICS, *DEFAULT_METRICS):  # an A/B test's: its speedup
        samples = [r.samples_of(metric) for r in records]
        if all(samples) and all(v > 0 for s in samples for v in s):
            break
    else:
        return []
    means = [sum(math.log(v) for v in s) / len(s) for s in samples]
    middle = statistics.median(means)
    spread = _MAD_SD * statistics.median(abs(m - middle) for m in means)
    reach = OUTLIER_DISTANCE * max(spread, drift)
    out = [(i, m) for i, m in enumerate(means) if abs(m - middle) > reach]
    if len(records) - len(out) < _KEPT_RUNS:
        return []
    return [
        (
            i,
            f"its {metric} {math.exp(m - middle):.2f}x the median run's (disturbed: further "
            f"than {reach:.2f} in logs)",
        )
        for i, m in out
    ]
