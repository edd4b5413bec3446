"""The arguments of `llmperf.measure()` and `llmperf.evaluate_choices()`, checked when
they are called, before any engine starts; a wrong one is an `ArgumentError` naming the
test's line, the call, the argument and the value (see `suite.arguments`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pytest_llmperf.suite.accuracy import ChoiceTask, GenerationTask
from pytest_llmperf.suite.arguments import a_callable, bad, optional_number, text, whole
from pytest_llmperf.suite.config import Config
from pytest_llmperf.suite.load import SLO, Arrivals
from pytest_llmperf.suite.split import LoadShare

_WORKLOADS = (
    "SyntheticWorkload, DatasetWorkload, SharedPrefixWorkload, TraceWorkload, "
    "ConversationWorkload, GenerationTask"
)


def _is_workload(value: object) -> bool:
    """Does `value` keep the `Workload` protocol (build, describe, with_overrides)?"""
    return all(callable(getattr(value, m, None)) for m in ("build", "describe", "with_overrides"))


def check_config(owner: str, config: object) -> None:
    if isinstance(config, Config):
        return
    if _is_workload(config):
        problem = "is a workload, not a Config: give it as workload=..."
    else:
        problem = "must be a Config (from grid_params or Config.make)"
    raise bad(owner, "config", config, problem)


def check_measure(
    config: object,
    workload: object,
    *,
    rounds: object,
    warmup_rounds: object,
    label: object,
    extra_metrics: object,
    arrivals: object,
    slo: object,
    model: object,
    score: object,
    derived: object,
    allowed_failure_rate: object,
    share: object = None,
) -> None:
    """Every argument of `measure()`; the first wrong one raises."""
    owner = "measure()"
    check_config(owner, config)
    if isinstance(workload, ChoiceTask):
        problem = "a ChoiceTask is scored by llmperf.evaluate_choices(task, config)"
        raise bad(owner, "workload", workload, problem)
    if not _is_workload(workload):
        problem = f"is not a workload ({_WORKLOADS}, or an object with build, describe "
        raise bad(owner, "workload", workload, problem + "and with_overrides)")
    if rounds != "auto":  # rounds until decided (`plugin.gate`), else a number
        whole(owner, "rounds", rounds, 1)
    whole(owner, "warmup_rounds", warmup_rounds, 0)
    _common(owner, label, model)
    if extra_metrics is not None:
        if not isinstance(extra_metrics, Mapping):
            raise bad(owner, "extra_metrics", extra_metrics, "must map metric names to numbers")
        for name, value in extra_metrics.items():
            if not isinstance(name, str) or not name:
                problem = "metric names must be non-empty text"
                raise bad(owner, "extra_metrics", extra_metrics, problem)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise bad(owner, f"extra_metrics[{name!r}]", value, "must be a number or None")
    if arrivals is not None and not isinstance(arrivals, Arrivals):
        raise bad(owner, "arrivals", arrivals, "must be an Arrivals, e.g. Arrivals(rate_per_s=8)")
    if share is not None and not isinstance(share, LoadShare):
        raise bad(owner, "share", share, "must be a LoadShare, from split_load(name, clients)")
    if slo is not None and not isinstance(slo, SLO):
        raise bad(owner, "slo", slo, "must be an SLO, e.g. SLO(ttft_ms=200)")
    a_callable(owner, "score", score, "of the measured request records")
    a_callable(owner, "derived", derived, "of the aggregate metrics")
    optional_number(owner, "allowed_failure_rate", allowed_failure_rate, minimum=0, maximum=1)


def check_evaluate_choices(task: object, config: object, label: object, model: object) -> None:
    """Every argument of `evaluate_choices()`; the first wrong one raises."""
    owner = "evaluate_choices()"
    if isinstance(task, (str, os.PathLike)):
        raise bad(owner, "task", task, "give the questions as ChoiceTask.load(path)")
    if isinstance(task, GenerationTask):
        problem = "a GenerationTask is measured by llmperf.measure(config, task, score=task.score)"
        raise bad(owner, "task", task, problem)
    if not isinstance(task, ChoiceTask):
        raise bad(owner, "task", task, "must be a ChoiceTask (ChoiceTask.load(path))")
    if not task.items:
        raise bad(owner, "task", task, "has no questions to score")
    check_config(owner, config)
    _common(owner, label, model)


def _common(owner: str, label: object, model: object) -> None:
    if label is not None:
        text(owner, "label", label)
    if model is not None:
        text(owner, "model", model)


def check_time(
    owner: str,
    functions: Mapping[str, object],
    *,
    kwargs: object,
    rounds: object,
    warmup_rounds: object,
    setup: object,
    count: object,
    label: object,
) -> None:
    """Every argument of `time()` and `time_turns()`; the first wrong one raises."""
    if not functions:
        raise bad(owner, "functions", functions, "give at least one function to time")
    for name, fn in functions.items():
        if not callable(fn):
            raise bad(owner, name, fn, "must be a function (or other callable) to time")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise bad(owner, "kwargs", kwargs, "must map argument names to values")
    if rounds != "auto":  # rounds until decided (`plugin.gate`), else a number
        whole(owner, "rounds", rounds, 1)
    whole(owner, "warmup_rounds", warmup_rounds, 0)
    a_callable(owner, "setup", setup, "called before each round, returning None or (args, kwargs)")
    if count is not None and not (isinstance(count, Mapping) or callable(count)):
        raise bad(owner, "count", count, "must map items to counts, or be a function of the result")
    _common(owner, label, None)
