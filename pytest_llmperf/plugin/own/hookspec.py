"""Hooks for extenders, named `pytest_llmperf_*`: implement them in a conftest.py at the
run's rootdir or test paths (pytest reads those before the run configures), or in a
plugin."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pytest_llmperf.measure.metrics import MetricSpec


@pytest.hookspec
def pytest_llmperf_metrics(config: pytest.Config) -> Sequence[MetricSpec]:
    """The metrics of the suite's own code, declared once: name, unit, direction.

    Every metric that `llmperf.time` (its counted items: `tokens` -> `tokens_per_s`) or
    `llmperf.record` gives must be built in or declared here; thresholds files,
    `--llmperf-compare` and `llmperf compare` then judge it like the engines' metrics. A
    name the built-in table has is a usage error naming it. Every implementation's list
    counts::

        # conftest.py
        from pytest_llmperf import MetricSpec

        def pytest_llmperf_metrics(config):
            return [
                MetricSpec("jobs_per_s", "jobs/s", "higher"),
                MetricSpec("job_queue_s", "s", "lower"),
            ]
    """
    return ()
