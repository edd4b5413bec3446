"""`llmperf calibrate RUN...`: thresholds written from the noise of several runs.

Run a suite N times on the machine its bounds are for (`for i in $(seq 5); do pytest suites/
-m smoke; done`), then `llmperf calibrate latest:5` (or the run folders) writes each test's
bounds into `<thresholds-dir>/<hardware>/<engine>.yaml` from the spread of the runs' means and
of their rounds (`thresholds.noise`): the drift between runs that one run cannot see is then
measured, not assumed. A test that some runs lack is written from the runs that have it.
Runs of several engines or machines each go to their own file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.results.baseline import DEFAULT_DRIFT
from pytest_llmperf.results.runs import Run
from pytest_llmperf.thresholds.check import DEFAULT_ALPHA
from pytest_llmperf.thresholds.update import Observed, update_thresholds

#: The metrics a test without bounds gets (as under --llmperf-update-thresholds).
DEFAULT_METRICS = ("output_tok_per_s", "ttft_ms.p90", "tpot_ms.p90", "e2e_ms.p90", "failure_rate")


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
        for key, having in tests.items():
            records = [r.test(key) for r in having]
            found = [t for t in records if t is not None]
            newest = found[-1]
            metrics = {m for t in found for m in t.samples}
            samples = {m: [list(t.samples_of(m)) for t in found] for m in metrics}
            results[key] = Observed(newest.metrics_flat, samples)
        path = thresholds_dir / hardware / f"{engine}.yaml"
        report = update_thresholds(path, results, margin, DEFAULT_METRICS, drift, alpha)
        lines += [f"{path}: {t} ({len(tests[t])} runs)" for t in report.written]
        lines += [f"WARNING: {path}: {r}" for r in report.refused]
        lines += [f"WARNING: threshold loosened: {r}" for r in report.loosened]
    return lines
