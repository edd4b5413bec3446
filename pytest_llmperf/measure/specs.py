"""The table of metrics: each one's name, unit, direction and kind, and where it is defined.

`SPECS` lists every built-in metric once, with its unit, direction (`better`), kind and the
module whose docstring defines it (`pytest_llmperf.measure.metrics` for the harness's own,
the module that computes it for the rest); third-party packages add theirs through the
`ENTRY_POINT_GROUP` entry points, a test suite through `measure.declared`. Thresholds,
`llmperf compare`, reports and exports read the table through `metric_specs` and
`spec_for`: nothing else defines a metric.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Literal

from pytest_llmperf.errors import LLMPerfUsageError, did_you_mean
from pytest_llmperf.measure.server.summary import SPEC_ROWS as _SERVER_ROWS

Direction = Literal["higher", "lower"]
#: scalar: one number per test; distribution: count, mean, p50 ... max of many samples,
#: addressed as `name.stat`; count: a whole number of things (exports leave counts out);
#: flag: 0 or 1.
Kind = Literal["scalar", "distribution", "count", "flag"]

DISTRIBUTION_STATS = ("count", "mean", "p50", "p90", "p95", "p99", "min", "max")

#: Third-party packages add metrics under this entry-point group, each entry naming a
#: sequence of `MetricSpec` (`my_metrics = "my_package.metrics:SPECS"`). Read from the
#: installed packages' metadata on the first lookup, so that pytest, `llmperf compare`,
#: the report and the dashboard all see the same specs, whatever they imported.
ENTRY_POINT_GROUP = "pytest_llmperf.metrics"


@dataclass(frozen=True)
class MetricSpec:
    """What a metric means for thresholds and comparisons.

    `better` is its direction (a move the other way is a regression); `defined_in` is the
    module whose docstring defines it, formula and all, so that no definition is written
    twice.
    """

    name: str
    unit: str
    better: Direction
    kind: Kind = "scalar"
    defined_in: str | None = None
    #: Judged as a value, never through an interval (see `EXACT`).
    exact: bool = False

    @property
    def distribution(self) -> bool:
        return self.kind == "distribution"

    @property
    def judged_exactly(self) -> bool:
        """Counts and flags, and metrics `EXACT` names: their bounds are judged as values."""
        return self.exact or self.kind in ("count", "flag")


#: The harness's own metrics are defined in `measure.metrics`' docstring.
_HERE = "pytest_llmperf.measure.metrics"
_BANDWIDTH = "pytest_llmperf.measure.bandwidth"
_PP_TG = "pytest_llmperf.measure.prefill_decode"
_TELEMETRY = "pytest_llmperf.hardware.telemetry"
_LOAD = "pytest_llmperf.suite.load"
_ACCURACY = "pytest_llmperf.suite.accuracy"
_SCALING = "pytest_llmperf.suite.scaling"
_SEARCH = "pytest_llmperf.suite.slo.search"
_WORKLOAD_STATS = "pytest_llmperf.suite.workload_stats"
_CONVERSATION = "pytest_llmperf.suite.conversation"
_TIMED = "pytest_llmperf.measure.timed"
_TURNS = "pytest_llmperf.measure.turns"
#: Prefixes of an A/B test's metrics (`measure.turns`): each side's, and B/A.
AB_PREFIXES = ("a", "b", "ratio")


#: Metrics judged as values, not through the interval of their per-round samples: whether
#: requests failed (a no-evidence check that an interval must never soften), and what a
#: deterministic model under greedy decoding gives the same every time (accuracy and its
#: kin, truncation, the workload's coverage, a file's size): their spread is not noise.
EXACT = frozenset(
    {
        "failure_rate",
        "length_stop_fraction",
        "model_bytes",
        "accuracy",
        "accuracy_norm",
        "accuracy_stderr",
        "accuracy_norm_stderr",
        "exact_match",
        "token_f1",
        "truncation_rate",
        "output_coverage",
    }
)


def _specs(module: str, *rows: tuple[str, str, Direction, Kind]) -> list[MetricSpec]:
    return [
        MetricSpec(name, unit, better, kind, module, name in EXACT)
        for name, unit, better, kind in rows
    ]


#: Every built-in metric, whichever module computes it: one table that every importer
#: reads (nothing registers a metric at import).
SPECS: tuple[MetricSpec, ...] = (
    *_specs(
        _HERE,
        ("requests", "count", "higher", "count"),
        ("failures", "count", "lower", "count"),
        ("failure_rate", "ratio", "lower", "scalar"),
        ("duration_s", "s", "lower", "scalar"),
        ("output_tok_per_s", "tok/s", "higher", "scalar"),
        ("total_tok_per_s", "tok/s", "higher", "scalar"),
        ("requests_per_s", "req/s", "higher", "scalar"),
        ("length_stop_fraction", "ratio", "lower", "scalar"),
        ("ttft_ms", "ms", "lower", "distribution"),
        ("tpot_ms", "ms", "lower", "distribution"),
        ("itl_ms", "ms", "lower", "distribution"),
        ("e2e_ms", "ms", "lower", "distribution"),
        ("queue_ms", "ms", "lower", "distribution"),
        ("server_prefill_ms_p50", "ms", "lower", "scalar"),
        ("server_decode_tok_per_s", "tok/s", "higher", "scalar"),
        ("graph_build_s", "s", "lower", "scalar"),
        ("model_bytes", "bytes", "lower", "scalar"),
    ),
    *_specs(
        _BANDWIDTH,
        ("mbu", "ratio", "higher", "scalar"),
        ("weights_bound_tok_per_s", "tok/s", "higher", "scalar"),
    ),
    *_specs(
        _PP_TG,
        ("pp_tok_per_s", "tok/s", "higher", "scalar"),
        ("tg_tok_per_s", "tok/s", "higher", "scalar"),
    ),
    *_specs(
        _TELEMETRY,
        ("peak_gpu_mem_bytes", "bytes", "lower", "scalar"),
        ("mean_gpu_mem_bytes", "bytes", "lower", "scalar"),
        ("gpu_util_mean_pct", "%", "higher", "scalar"),
        ("gpu_util_max_pct", "%", "higher", "scalar"),
        ("power_mean_w", "W", "lower", "scalar"),
        ("energy_j", "J", "lower", "scalar"),
        ("temp_max_c", "C", "lower", "scalar"),
        ("sm_clock_mean_mhz", "MHz", "higher", "scalar"),
        ("mem_clock_mean_mhz", "MHz", "higher", "scalar"),
        ("output_tok_per_j", "tok/J", "higher", "scalar"),
    ),
    *_specs(
        _LOAD,
        ("goodput_fraction", "ratio", "higher", "scalar"),
        ("goodput_req_per_s", "req/s", "higher", "scalar"),
        ("client_cpu_ms_per_1k_tok", "ms", "lower", "scalar"),
        ("loop_lag_ms_max", "ms", "lower", "scalar"),
        ("client_bound", "flag", "lower", "flag"),
    ),
    *_specs(
        _ACCURACY,
        ("accuracy", "ratio", "higher", "scalar"),
        ("accuracy_norm", "ratio", "higher", "scalar"),
        ("accuracy_stderr", "ratio", "lower", "scalar"),
        ("accuracy_norm_stderr", "ratio", "lower", "scalar"),
        ("questions_per_s", "q/s", "higher", "scalar"),
        ("exact_match", "ratio", "higher", "scalar"),
        ("token_f1", "ratio", "higher", "scalar"),
        ("truncation_rate", "ratio", "lower", "scalar"),
    ),
    *_specs(_SCALING, ("efficiency", "ratio", "higher", "scalar")),
    *_specs(_SEARCH, ("max_rate_under_slo_req_per_s", "req/s", "higher", "scalar")),
    *_specs(_TURNS, ("speedup", "x", "higher", "scalar")),
    *_specs(_WORKLOAD_STATS, ("output_coverage", "ratio", "higher", "scalar")),
    *_specs(
        _CONVERSATION,
        ("first_turn_ttft_ms_p50", "ms", "lower", "scalar"),
        ("last_turn_ttft_ms_p50", "ms", "lower", "scalar"),
    ),
    *_specs(_TIMED, ("call_s", "s", "lower", "scalar")),
    *_specs("pytest_llmperf.measure.server.summary", *_SERVER_ROWS),
)

#: Metrics of a suite's own code, name -> (spec, who declared it): kept by `measure.declared`.
DECLARED: dict[str, tuple[MetricSpec, str]] = {}


def metric_specs() -> Mapping[str, MetricSpec]:
    """Every known metric by name: `SPECS`, those of the `ENTRY_POINT_GROUP` entries, then
    those a test suite declared (`measure.declared`)."""
    installed = installed_metric_specs()
    if not DECLARED:
        return installed
    return MappingProxyType({**installed, **{n: spec for n, (spec, _) in DECLARED.items()}})


@functools.cache
def installed_metric_specs() -> Mapping[str, MetricSpec]:
    """The metrics of `SPECS` and of the `ENTRY_POINT_GROUP` entries, read once.

    A bad entry (it does not load, is not a sequence of `MetricSpec`, or names a metric
    already known) is a usage error naming the entry point.
    """
    table = {spec.name: spec for spec in SPECS}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {entry.name!r} ({entry.value}) of group {ENTRY_POINT_GROUP!r}"
        try:
            loaded = entry.load()
        except Exception as exc:
            raise LLMPerfUsageError(f"{source}: cannot load it: {exc}") from None
        if not isinstance(loaded, Iterable) or isinstance(loaded, (str, MetricSpec)):
            raise LLMPerfUsageError(f"{source}: expected a sequence of MetricSpec")
        for spec in loaded:
            if not isinstance(spec, MetricSpec):
                raise LLMPerfUsageError(f"{source}: expected a MetricSpec, got {spec!r}")
            if spec.name in table:
                raise LLMPerfUsageError(f"{source}: metric {spec.name!r} is already defined")
            table[spec.name] = spec
    return MappingProxyType(table)


def metric_names() -> list[str]:
    """Every addressable metric name: scalars, and `dist.stat` for distributions."""
    names: list[str] = []
    for spec in metric_specs().values():
        if spec.distribution:
            names.extend(f"{spec.name}.{stat}" for stat in DISTRIBUTION_STATS)
        else:
            names.append(spec.name)
    return names


def spec_for(path: str) -> MetricSpec | None:
    """The spec behind a metric path (`output_tok_per_s`, `ttft_ms.p90`, `a.ttft_ms.p90`,
    `ratio.output_tok_per_s`), or None."""
    base, _, stat = path.partition(".")
    if base in AB_PREFIXES and stat:
        spec = spec_for(stat)
        if base != "ratio" or spec is None:
            return spec
        return None if spec.judged_exactly else MetricSpec(path, "x", spec.better, "scalar", _TURNS)
    spec = metric_specs().get(base)
    if spec is None:
        return None
    if spec.distribution != bool(stat) or (stat and stat not in DISTRIBUTION_STATS):
        return None
    if stat == "count":
        return MetricSpec(path, "count", "higher", "count", spec.defined_in)
    return spec


def metric_hint(name: str) -> str:
    """A ' (did you mean ...?)' suffix for an unknown metric name, or ''."""
    names = metric_names()
    hint = did_you_mean(name, names)
    base = name.partition(".")[0]
    if hint or len(base) < 3:
        return hint
    # `ttft` or `ttft_ms` is too far from `ttft_ms.p90` for difflib, yet plainly means one
    # of the names it begins: offer those, the usual percentiles first.
    extending = [known for known in names if known.startswith(base)]
    usual = [known for known in extending if known.rpartition(".")[2] in ("p50", "p90", "p99")]
    close = (usual or extending)[:3]
    return " (did you mean " + " or ".join(map(repr, close)) + "?)" if close else ""
