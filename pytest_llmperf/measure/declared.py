"""Metrics a suite declares for its own code (`MetricSpec`s from the `pytest_llmperf_metrics`
hook), and those that run folders read since recorded: names beside the built-in table
(`metrics.metric_specs` reads them), never instead of one of its names.

Each pytest run replaces the declarations of the one before (pytester runs many in one
process); a run folder that is read declares the metrics its records hold, so that
`llmperf compare` judges them in its own process as the run did.
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import DECLARED, MetricSpec, installed_metric_specs


def declare_metrics(specs: Iterable[MetricSpec], source: str, replace: bool = False) -> None:
    """Add the metrics of a suite's own code (`replace`: instead of those declared before,
    as each pytest run does). A distribution, a name the installed table has, or one
    declared before with another unit, direction or kind is a usage error naming both."""
    if replace:
        DECLARED.clear()
    installed = installed_metric_specs()
    for spec in specs:
        if not isinstance(spec, MetricSpec) or spec.distribution:
            raise LLMPerfUsageError(f"{source}: expected a scalar MetricSpec, got {spec!r}")
        if spec.name in installed:
            owner = installed[spec.name].defined_in or "an installed package"
            raise LLMPerfUsageError(
                f"{source}: metric {spec.name!r} is a built-in metric (defined in {owner}): "
                "give yours another name"
            )
        meaning = (spec.unit, spec.better, spec.kind)
        before, by = DECLARED.get(spec.name, (spec, source))
        if (before.unit, before.better, before.kind) != meaning:
            raise LLMPerfUsageError(
                f"{source}: metric {spec.name!r} is {meaning} here, but "
                f"{(before.unit, before.better, before.kind)} in {by}"
            )
        DECLARED.setdefault(spec.name, (spec, source))


def declared_metrics() -> tuple[MetricSpec, ...]:
    """The metrics a suite declared, in the order they were declared."""
    return tuple(spec for spec, _ in DECLARED.values())
