"""One measured test as data: `TestRecord`, the line of `tests.jsonl` and an entry of
`summary.json`'s `tests`.

The fixture builds a `TestRecord` when a measurement ends and writes `as_record()`;
every reader (runs, compare, exports, the terminal summary, the threshold update, the
CLI, the HTML report, its plots and the dashboard) gets `TestRecord`s back through
`from_record()`, never the JSON by its keys. The JSON is the one `writer` has always
written (its `schema_version` is the writer's): a run folder of any earlier version
still reads. Fields added after the first version (`worker_pid`, `gpus`, `baseline`,
`responses`, `evidence`, `ab`, `split`, a judged change's `note`) read as null where a record
lacks them (`samples`, `unreliable`, `host` as empty); keys this version does not know are
left out.

Reading is strict: a field of the wrong type is a `RecordError`, a usage error that
names the file, the line or entry, and the field (`results/r/tests.jsonl: line 3:
thresholds.checked[0].ok: expected true or false, got a string`).

Parts that are free-form by design stay JSON objects: the workload's `describe()`,
the engine's `details`, settings, `ab` and `metrics`, the nested form of `metrics_flat`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from pytest_llmperf.measure.evidence import Evidence, EvidenceCheck, FailureReason
from pytest_llmperf.measure.metrics import MetricSpec
from pytest_llmperf.measure.stats import Estimate, Scale, estimate
from pytest_llmperf.results.fields import Fields, Number

#: Metrics as thresholds name them: `output_tok_per_s`, `ttft_ms.p90`, ...
FlatMetrics = Mapping[str, Number | None]


@dataclass(frozen=True)
class ConfigRecord:
    """The grid point, as `Config.describe()` says it."""

    name: str
    engine: str | None
    engine_settings: Mapping[str, Any]
    workload_settings: Mapping[str, Any]
    marks: tuple[str, ...]

    @classmethod
    def from_record(cls, data: object, source: str) -> ConfigRecord:
        return cls.read(Fields.of(data, source))

    @classmethod
    def read(cls, f: Fields) -> ConfigRecord:
        return cls(
            name=f.text("name"),
            engine=f.optional(f.text, "engine"),
            engine_settings=f.json_object("engine_settings"),
            workload_settings=f.json_object("workload_settings"),
            marks=f.list_of("marks", lambda f, k: f.text(k)),
        )


@dataclass(frozen=True)
class EngineConfigRecord:
    """The engine configuration the test ran on, as `EngineConfig.describe()` says it."""

    engine: str
    model: str
    gpus: tuple[int, ...]
    settings: Mapping[str, Any]
    #: Settings of a grid meant for several engines that this engine does not take.
    settings_not_applied: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, data: object, source: str) -> EngineConfigRecord:
        return cls.read(Fields.of(data, source))

    @classmethod
    def read(cls, f: Fields) -> EngineConfigRecord:
        return cls(
            engine=f.text("engine"),
            model=f.text("model"),
            gpus=f.list_of("gpus", lambda f, k: f.integer(k)),
            settings=f.json_object("settings"),
            settings_not_applied=(
                f.list_of("settings_not_applied", lambda f, k: f.text(k))
                if "settings_not_applied" in f.keys()
                else ()
            ),
        )


@dataclass(frozen=True)
class EngineInfoRecord:
    """What the started engine said about itself (`EngineInfo`)."""

    engine: str
    model: str
    device: str
    dtype: str | None
    details: Mapping[str, Any]

    @classmethod
    def read(cls, f: Fields) -> EngineInfoRecord:
        return cls(
            engine=f.text("engine"),
            model=f.text("model"),
            device=f.text("device"),
            dtype=f.optional(f.text, "dtype"),
            details=f.json_object("details"),
        )


@dataclass(frozen=True)
class BoundCheck:
    """One threshold bound against the measured value, and where the bound was written."""

    metric: str
    measured: Number | None
    min: Number | None
    max: Number | None
    ok: bool
    file: str
    line: int
    #: met / missed / inconclusive (`thresholds.check`); older records: met or missed (`ok`).
    outcome: str | None = None
    #: samples, value or not measured: how the bound was judged.
    how: str | None = None
    #: The one-sided p-value after Holm's correction, and the samples' centre and
    #: confidence bounds (at the verdict's error rate), where judged on samples.
    p: Number | None = None
    centre: Number | None = None
    low: Number | None = None
    high: Number | None = None
    #: The noise the bound was written from, as its file records it.
    noise: Number | None = None

    @property
    def verdict(self) -> str:
        """met, missed or inconclusive (older records: from `ok`)."""
        return self.outcome or ("met" if self.ok else "missed")

    @classmethod
    def read(cls, f: Fields) -> BoundCheck:
        return cls(
            metric=f.text("metric"),
            measured=f.optional(f.number, "measured"),
            min=f.optional(f.number, "min"),
            max=f.optional(f.number, "max"),
            ok=f.flag("ok"),
            file=f.text("file"),
            line=f.integer("line"),
            outcome=f.optional(f.text, "outcome"),
            how=f.optional(f.text, "how"),
            p=f.optional(f.number, "p"),
            centre=f.optional(f.number, "centre"),
            low=f.optional(f.number, "low"),
            high=f.optional(f.number, "high"),
            noise=f.optional(f.number, "noise"),
        )


@dataclass(frozen=True)
class ThresholdsRecord:
    """The thresholds' verdict: passed when every bound that applied was kept."""

    passed: bool
    checked: tuple[BoundCheck, ...]
    #: The error rate the bounds were judged at (None in records before verdicts had one).
    alpha: Number | None = None

    @property
    def inconclusive(self) -> tuple[str, ...]:
        """The metrics whose bound was neither met nor missed with confidence."""
        return tuple(c.metric for c in self.checked if c.verdict == "inconclusive")

    @property
    def missed(self) -> tuple[str, ...]:
        """The metrics whose bound was missed."""
        return tuple(c.metric for c in self.checked if not c.ok)

    @classmethod
    def read(cls, f: Fields) -> ThresholdsRecord:
        return cls(
            passed=f.flag("passed"),
            checked=f.list_of("checked", lambda f, k: BoundCheck.read(f.obj(k))),
            alpha=f.optional(f.number, "alpha"),
        )


@dataclass(frozen=True)
class StopRecord:
    """How many measured rounds a test took and why it stopped: `fixed` (a fixed number),
    `decided`, `max_rounds`, `max_seconds` or `cannot_decide` (rounds until decided)."""

    rounds: int
    reason: str
    undecided: int = 0

    @classmethod
    def read(cls, f: Fields) -> StopRecord:
        return cls(f.integer("rounds"), f.text("reason"), f.integer("undecided"))


@dataclass(frozen=True)
class JudgedChange:
    """One metric against the baseline run, judged with a tolerance."""

    metric: str
    base: Number | None
    new: Number | None
    relative: Number | None
    verdict: str
    tolerance: str | None
    #: Why it was not judged (verdict `unreliable`), else None.
    note: str | None = None
    #: Judged on samples: the change's confidence bounds, p-value and drift (else null).
    low: Number | None = None
    high: Number | None = None
    p: Number | None = None
    drift: Number | None = None

    @classmethod
    def read(cls, f: Fields) -> JudgedChange:
        return cls(
            metric=f.text("metric"),
            base=f.optional(f.number, "base"),
            new=f.optional(f.number, "new"),
            relative=f.optional(f.number, "relative"),
            verdict=f.text("verdict"),
            tolerance=f.optional(f.text, "tolerance"),
            note=f.optional(f.text, "note"),
            low=f.optional(f.number, "low"),
            high=f.optional(f.number, "high"),
            p=f.optional(f.number, "p"),
            drift=f.optional(f.number, "drift"),
        )


@dataclass(frozen=True)
class BaselineRecord:
    """The test against the baseline run of `--llmperf-compare`."""

    run_id: str
    #: False when the baseline has no such test (nothing to regress against).
    found: bool
    passed: bool
    judged: tuple[JudgedChange, ...]

    @classmethod
    def read(cls, f: Fields) -> BaselineRecord:
        return cls(
            run_id=f.text("run_id"),
            found=f.flag("found"),
            passed=f.flag("passed"),
            judged=f.list_of("judged", lambda f, k: JudgedChange.read(f.obj(k))),
        )


@dataclass(frozen=True)
class GpuRecord:
    """The GPUs the test leased and every process NVML saw on them (proof of isolation)."""

    #: As this process numbers them (CUDA_VISIBLE_DEVICES applied).
    cuda: tuple[int, ...]
    #: As NVML numbers them.
    physical: tuple[int, ...]
    #: Physical index (as text: a JSON key) -> (pid, bytes) of each compute process.
    processes: Mapping[str, tuple[tuple[int, int], ...]]

    @classmethod
    def read(cls, f: Fields) -> GpuRecord:
        processes = f.obj("processes")
        return cls(
            cuda=f.list_of("cuda", lambda f, k: f.integer(k)),
            physical=f.list_of("physical", lambda f, k: f.integer(k)),
            processes={gpu: processes.list_of(gpu, _pid_bytes) for gpu in processes.keys()},
        )


def _pid_bytes(f: Fields, key: str | int) -> tuple[int, int]:
    pair = f.list_of(key, lambda f, k: f.integer(k))
    if len(pair) != 2:
        raise f.error(key, "[pid, bytes]", pair, got=f"{len(pair)} item(s)")
    return pair[0], pair[1]


@dataclass(frozen=True)
class TestRecord:
    """One measurement of a test (one `llmperf.measure` or `evaluate_choices` call)."""

    __test__: ClassVar[bool] = False  # a class named Test*: not for pytest to collect

    #: The test's node id.
    test_id: str
    #: What names the measurement in thresholds and across runs: node id[@label] (`key`).
    threshold_key: str
    config: ConfigRecord
    engine: str
    engine_config: EngineConfigRecord
    engine_info: EngineInfoRecord
    #: Seconds the engine took to start; None when the test reused a loaded engine.
    engine_load_s: Number | None
    #: The workload's `describe()`: free-form, its `kind` says which workload.
    workload: Mapping[str, Any]
    rounds: int
    warmup_rounds: int
    #: The xdist worker (`gw0`), None without xdist.
    worker: str | None
    worker_pid: int | None
    #: None on a run without GPUs.
    gpus: GpuRecord | None
    finished_at: str
    #: Nested, as `AggregateMetrics.as_dict()`: distributions as objects.
    metrics: Mapping[str, Any]
    metrics_flat: FlatMetrics
    thresholds: ThresholdsRecord
    #: None without `--llmperf-compare`.
    baseline: BaselineRecord | None
    #: The responses table, relative to the run folder (`--llmperf-responses`).
    responses: str | None
    #: The checks every measurement must pass (`measure.evidence`); None in older records.
    evidence: Evidence | None = None
    #: Per-round samples, as `metrics_flat` names them: metric -> one value per measured round
    #: (null where the round had none). Empty in older records: readers use `metrics_flat`.
    samples: Mapping[str, tuple[Number | None, ...]] = field(default_factory=dict)
    #: Metrics that cannot be trusted, each with the reason (`*`: every metric; see
    #: `measure.reliability`): no bound or baseline is made of them.
    unreliable: Mapping[str, str] = field(default_factory=dict)
    #: How the measured rounds ended (None in records before rounds could be adaptive).
    stop: StopRecord | None = None
    #: The suite's own metrics the record holds (`pytest_llmperf_metrics`): name -> {unit,
    #: better, kind}, for readers in other processes (`llmperf compare`). Empty in older records.
    declared_metrics: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: The host that measured the test (`hardware.environment.host_facts`; xdist: its worker's).
    host: Mapping[str, Any] = field(default_factory=dict)
    #: An A/B test (`llmperf.compare`, `plugin.ab`): how its turns ran and each side's
    #: configuration and engine; its metrics are `a.*`, `b.*`, `ratio.*` (`measure.turns`).
    ab: Mapping[str, Any] | None = None
    #: A share of a load split over client workers (`suite.split`): load, index, clients.
    split: Mapping[str, Any] | None = None
    #: An SLO search's plan, steps, chosen step and note (`suite.slo.search`).
    slo_search: Mapping[str, Any] | None = None
    OPTIONAL_OBJECTS: ClassVar[tuple[str, ...]] = ("ab", "split", "slo_search")

    @property
    def key(self) -> str:
        """What names a measurement across runs and in thresholds (`threshold_key`)."""
        return self.threshold_key or self.test_id

    def metric(self, name: str) -> float | None:
        """A flat metric as a finite number, or None (missing, null, true/false, NaN)."""
        value = self.metrics_flat.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def interval(self, name: str, confidence: float = 0.95) -> Estimate | None:
        """The interval of a metric's per-round samples (`measure.stats.estimate`: on the logs
        for positive values), or None with fewer than two or with no spread."""
        values = self.samples_of(name)
        if len(values) < 2:
            return None
        scale: Scale = "log" if all(v > 0 for v in values) else "linear"
        found = estimate(values, scale, confidence)
        return None if found.exact else found

    def samples_of(self, name: str) -> tuple[float, ...]:
        """A metric's per-round samples that are finite numbers; () when the record has
        none for it (an older record, or a metric not sampled per round)."""
        values = (v for v in self.samples.get(name, ()) if not isinstance(v, bool))
        return tuple(float(v) for v in values if v is not None and math.isfinite(v))

    def as_record(self) -> dict[str, Any]:
        """The JSON object written to tests.jsonl (the writer adds `schema_version`)."""
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_record(cls, data: object, source: str) -> TestRecord:
        """Read a record back; `source` says where it came from (`FILE: line N`)."""
        f = Fields.of(data, source)
        test_id = f.text("test_id")
        gpus, baseline = f.optional(f.obj, "gpus"), f.optional(f.obj, "baseline")
        return cls(
            test_id=test_id,
            threshold_key=f.optional(f.text, "threshold_key") or test_id,
            config=ConfigRecord.read(f.obj("config")),
            engine=f.text("engine"),
            engine_config=EngineConfigRecord.read(f.obj("engine_config")),
            engine_info=EngineInfoRecord.read(f.obj("engine_info")),
            engine_load_s=f.optional(f.number, "engine_load_s"),
            workload=f.json_object("workload"),
            rounds=f.integer("rounds"),
            warmup_rounds=f.integer("warmup_rounds"),
            worker=f.optional(f.text, "worker"),
            worker_pid=f.optional(f.integer, "worker_pid"),
            gpus=GpuRecord.read(gpus) if gpus is not None else None,
            finished_at=f.text("finished_at"),
            metrics=f.json_object("metrics", _check_metric),
            metrics_flat=f.json_object("metrics_flat", _check_flat_metric),
            thresholds=ThresholdsRecord.read(f.obj("thresholds")),
            baseline=BaselineRecord.read(baseline) if baseline is not None else None,
            responses=f.optional(f.text, "responses"),
            evidence=f.optional(lambda k: read_evidence(f.obj(k)), "evidence"),
            samples=_samples(f) if "samples" in f.keys() else {},
            stop=f.optional(lambda k: StopRecord.read(f.obj(k)), "stop"),
            unreliable=f.json_object("unreliable", _check_text) if "unreliable" in f.keys() else {},
            declared_metrics=(
                f.json_object("declared_metrics", _check_declared)
                if "declared_metrics" in f.keys()
                else {}
            ),
            host=f.json_object("host") if "host" in f.keys() else {},
            **{k: f.optional(lambda k: f.json_object(str(k)), k) for k in cls.OPTIONAL_OBJECTS},
        )

    def metric_specs(self) -> list[MetricSpec]:
        """The suite's own metrics this record holds, as specs (`declared_metrics`)."""
        return [
            MetricSpec(name, d["unit"], d["better"], d["kind"])  # type: ignore[arg-type]
            for name, d in self.declared_metrics.items()
        ]


def _samples(f: Fields) -> dict[str, tuple[Number | None, ...]]:
    """`samples`: metric -> a list of numbers or nulls, one per round."""
    samples = f.obj("samples")

    def sample(items: Fields, index: int) -> Number | None:
        return items.optional(items.number, index)

    return {metric: samples.list_of(metric, sample) for metric in samples.keys()}


def read_evidence(f: Fields) -> Evidence:
    """A record's `evidence` (the types are `measure.evidence`'s own)."""

    def check(f: Fields, k: str | int) -> EvidenceCheck:
        c = f.obj(k)
        return EvidenceCheck(
            name=c.text("name"),
            measured=c.number("measured"),
            min=c.optional(c.number, "min"),
            max=c.optional(c.number, "max"),
            ok=c.flag("ok"),
            source=c.text("source"),
        )

    def reason(f: Fields, k: str | int) -> FailureReason:
        r = f.obj(k)
        return FailureReason(
            reason=r.text("reason"),
            count=r.integer("count"),
            examples=r.list_of("examples", lambda f, k: f.text(k)),
        )

    return Evidence(
        passed=f.flag("passed"),
        checks=f.list_of("checks", check),
        failures=f.list_of("failures", reason),
    )


def _json(value: object) -> object:
    """A record as JSON values: records as objects (fields in order), tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json(v) for v in value]
    return value


def _check_declared(value: object) -> str | None:
    """Why `value` cannot be a declared metric's meaning, or None."""
    expected = 'an object {"unit": text, "better": "higher"|"lower", "kind": "scalar"}'
    if not isinstance(value, dict) or not isinstance(value.get("unit"), str):
        return expected
    if value.get("better") not in ("higher", "lower"):
        return expected
    return None if value.get("kind") in ("scalar", "count", "flag") else expected


def _check_text(value: object) -> str | None:
    return None if isinstance(value, str) else "a string"


def _check_flat_metric(value: object) -> str | None:
    """Why `value` cannot be a flat metric (a number or null), or None."""
    if value is None or isinstance(value, (int, float)):  # true/false: flags stay readable
        return None
    return "a number or null"


def _check_metric(value: object) -> str | None:
    """Why `value` cannot be a nested metric (a number, null, or stat -> number), or None."""
    values = value.values() if isinstance(value, dict) else (value,)
    ok = all(_check_flat_metric(v) is None for v in values)
    return None if ok else "a number, null or an object of numbers"
