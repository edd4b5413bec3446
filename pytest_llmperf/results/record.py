"""One measured test as data: `TestRecord`, the line of `tests.jsonl` and an entry of
`summary.json`'s `tests`.

The fixture builds a `TestRecord` when a measurement ends and writes `as_record()`;
every reader (runs, compare, exports, the terminal summary, the threshold update, the
CLI, the HTML report, its plots and the dashboard) gets `TestRecord`s back through
`from_record()`, never the JSON by its keys. The JSON is the one `writer` has always
written (its `schema_version` is the writer's): a run folder of any earlier version
still reads. Fields added after the first version (`worker_pid`, `gpus`, `baseline`,
`responses`) read as null where a record lacks them (`unreliable` as empty, a judged
change's `note` as null); keys this version does not know are left out (a later version
may add some).

Reading is strict: a field of the wrong type is a `RecordError`, a usage error that
names the file, the line or entry, and the field (`results/r/tests.jsonl: line 3:
thresholds.checked[0].ok: expected true or false, got a string`).

Parts that are free-form by design stay JSON objects: the workload's `describe()`,
the engine's `details`, settings, and `metrics`, the nested form of `metrics_flat`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, TypeVar

from pytest_llmperf.errors import LLMPerfUsageError

Number = float | int
#: Metrics as thresholds name them: `output_tok_per_s`, `ttft_ms.p90`, ...
FlatMetrics = Mapping[str, Number | None]
T = TypeVar("T")


class RecordError(LLMPerfUsageError):  # type: ignore[misc]  # UsageError is final in typing only
    """A test record of the wrong shape; the message says which file, entry and field."""


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
        return cls.read(_Fields.of(data, source))

    @classmethod
    def read(cls, f: _Fields) -> ConfigRecord:
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
        return cls.read(_Fields.of(data, source))

    @classmethod
    def read(cls, f: _Fields) -> EngineConfigRecord:
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
    def read(cls, f: _Fields) -> EngineInfoRecord:
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

    @classmethod
    def read(cls, f: _Fields) -> BoundCheck:
        return cls(
            metric=f.text("metric"),
            measured=f.optional(f.number, "measured"),
            min=f.optional(f.number, "min"),
            max=f.optional(f.number, "max"),
            ok=f.flag("ok"),
            file=f.text("file"),
            line=f.integer("line"),
        )


@dataclass(frozen=True)
class ThresholdsRecord:
    """The thresholds' verdict: passed when every bound that applied was kept."""

    passed: bool
    checked: tuple[BoundCheck, ...]

    @property
    def missed(self) -> tuple[str, ...]:
        """The metrics whose bound was missed."""
        return tuple(c.metric for c in self.checked if not c.ok)

    @classmethod
    def read(cls, f: _Fields) -> ThresholdsRecord:
        return cls(
            passed=f.flag("passed"),
            checked=f.list_of("checked", lambda f, k: BoundCheck.read(f.obj(k))),
        )


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

    @classmethod
    def read(cls, f: _Fields) -> JudgedChange:
        return cls(
            metric=f.text("metric"),
            base=f.optional(f.number, "base"),
            new=f.optional(f.number, "new"),
            relative=f.optional(f.number, "relative"),
            verdict=f.text("verdict"),
            tolerance=f.optional(f.text, "tolerance"),
            note=f.optional(f.text, "note"),
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
    def read(cls, f: _Fields) -> BaselineRecord:
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
    def read(cls, f: _Fields) -> GpuRecord:
        processes = f.obj("processes")
        return cls(
            cuda=f.list_of("cuda", lambda f, k: f.integer(k)),
            physical=f.list_of("physical", lambda f, k: f.integer(k)),
            processes={gpu: processes.list_of(gpu, _pid_bytes) for gpu in processes.keys()},
        )


def _pid_bytes(f: _Fields, key: str | int) -> tuple[int, int]:
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
    #: What names the measurement in thresholds and across runs: the node id, plus
    #: `@label` for a labelled call (see `key`).
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
    #: Metrics that cannot be trusted, each with the reason (`*`: every metric); see
    #: `pytest_llmperf.measure.reliability`. No bound or baseline is made of them.
    unreliable: Mapping[str, str] = field(default_factory=dict)

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

    def as_record(self) -> dict[str, Any]:
        """The JSON object written to tests.jsonl (the writer adds `schema_version`)."""
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_record(cls, data: object, source: str) -> TestRecord:
        """Read a record back; `source` says where it came from (`FILE: line N`)."""
        f = _Fields.of(data, source)
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
            unreliable=(
                f.json_object("unreliable", _check_text) if "unreliable" in f.keys() else {}
            ),
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


# -- strict reading ----------------------------------------------------------------------

_MISSING = object()


def _kind(value: object) -> str:
    """A JSON value's type, as an error message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


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


class _Fields:
    """One JSON object (or list) of a record; each accessor checks a field's type and
    names the field in its error (`thresholds.checked[0].ok`)."""

    def __init__(self, data: dict[str, Any], source: str, path: str) -> None:
        self._data = data
        self._source = source
        self._path = path

    @classmethod
    def of(cls, value: object, source: str, path: str = "") -> _Fields:
        if not isinstance(value, dict):
            where = path or "test record"
            raise RecordError(f"{source}: {where}: expected an object, got {_kind(value)}")
        return cls(value, source, path)

    def _name(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self._path}[{key}]"
        return f"{self._path}.{key}" if self._path else key

    def error(
        self, key: str | int, expected: str, value: object, got: str | None = None
    ) -> RecordError:
        got = got or _kind(value)
        return RecordError(f"{self._source}: {self._name(key)}: expected {expected}, got {got}")

    def _get(self, key: str | int) -> object:
        value = self._data.get(str(key), _MISSING)
        if value is _MISSING:
            raise RecordError(f"{self._source}: missing {self._name(key)!r}")
        return value

    def keys(self) -> list[str]:
        return list(self._data)

    def optional(self, read: Callable[[str], T], key: str) -> T | None:
        """`read(key)`, or None where the field is null or missing (added after v1)."""
        return read(key) if self._data.get(key) is not None else None

    def text(self, key: str | int) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.error(key, "a string", value)
        return value

    def integer(self, key: str | int) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, "an integer", value)
        return value

    def number(self, key: str | int) -> Number:
        value = self._get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.error(key, "a number", value)
        return value

    def flag(self, key: str | int) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def obj(self, key: str | int) -> _Fields:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self.error(key, "an object", value)
        return _Fields(value, self._source, self._name(key))

    def json_object(
        self, key: str, check: Callable[[object], str | None] | None = None
    ) -> dict[str, Any]:
        """A free-form object; `check` says what each value must be, where that matters."""
        inner = self.obj(key)
        for name, item in inner._data.items():
            expected = check(item) if check is not None else None
            if expected is not None:
                raise inner.error(name, expected, item)
        return inner._data

    def list_of(self, key: str | int, read: Callable[[_Fields, int], T]) -> tuple[T, ...]:
        """A list, each item read by `read(the list's fields, index)`."""
        value = self._get(key)
        if not isinstance(value, list):
            raise self.error(key, "a list", value)
        # The items as fields named by their index: `gpus[0]`.
        items = _Fields(
            {str(i): item for i, item in enumerate(value)}, self._source, self._name(key)
        )
        return tuple(read(items, i) for i in range(len(value)))
