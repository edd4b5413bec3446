"""Reading runs back: the results folder as data, for the CLI, reports and pandas.

A run is a folder `results/<run-id>/` (see `results`). It is read from its
`summary.json` when the run finished, else rebuilt from `run.json` and the JSONL
records it appended as it went (a run that was killed still reads). Only JSON is read:
nothing in a results folder is executed or unpickled.

A run is named, wherever one is asked for (`llmperf show RUN`, `--llmperf-compare
BASE`), by its folder, its `summary.json`, its run id under the results folder, or
`latest` / `latest~N`: the newest run with measured tests, the one N before it. A run that
measured nothing (it stopped before its first measurement) is never `latest`; as a
baseline (`open_run(..., baseline=True)`), neither is one without a summary (still going,
or killed: `llmperf rebuild` gives it one).

Every file is checked for what this version reads: a `schema_version` other than
`SCHEMA_VERSION` (a later version's files), or a value of the wrong JSON type, is a usage
error naming the file and the key, never a traceback or a silent misreading.

In pandas (`pip install 'pytest-llmperf[report]'`):

    from pytest_llmperf.results.runs import load_runs, load_requests
    tests = load_runs("results")            # one row per (run, test), one column per metric
    requests = load_requests("latest")      # one row per measured request
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.declared import declare_metrics
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.writer import (
    SCHEMA_VERSION,
    build_summary,
    loads_json,
    read_jsonl_lines,
)

if TYPE_CHECKING:
    import pandas

DEFAULT_RESULTS_DIR = Path("results")
_LATEST = re.compile(r"^latest(?:~(\d+))?$")


@dataclass(frozen=True)
class Run:
    """One run folder, read."""

    path: Path
    #: The run's summary.json (or what it would say, for an unfinished run) less its
    #: tests: run id, start, hardware, settings, machine, ...
    summary: dict[str, Any] = field(repr=False)
    #: Its measured tests, in the order they finished.
    tests: tuple[TestRecord, ...] = field(default=(), repr=False)
    #: False when the run has no summary.json (it was killed, or is still going).
    finished: bool = True

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or self.path.name)

    @property
    def started_at(self) -> str:
        return str(self.summary.get("started_at") or "")

    @property
    def started_unix(self) -> float:
        """When the run started, in seconds since the epoch (0 for runs from before it was
        recorded): the order of runs started within one second."""
        value = self.summary.get("started_unix")
        return float(value) if isinstance(value, int | float) else 0.0

    def test(self, key: str) -> TestRecord | None:
        """The record of a test by its key (`TestRecord.key`; the last, if it ran twice)."""
        found = [t for t in self.tests if t.key == key]
        return found[-1] if found else None

    def requests(self) -> Iterator[dict[str, Any]]:
        """Every measured request's record, worker files included; a line that is not
        a JSON object, or not JSON, is a usage error naming its file and line."""
        return self._records("requests", "request record")

    def server_reads(self) -> Iterator[dict[str, Any]]:
        """Every read of a server's metrics (`measure.server`), worker files included, as
        `requests` reads its records."""
        return self._records("server_metrics", "server metrics read")

    def _records(self, kind: str, what: str) -> Iterator[dict[str, Any]]:
        for path in sorted(self.path.glob(f"{kind}*.jsonl")):
            try:
                for number, record in read_jsonl_lines(path):
                    if not isinstance(record, dict):
                        raise LLMPerfUsageError(
                            f"{path}: line {number}: {what}: expected an object"
                        )
                    check_schema(record, f"{path}: line {number}")
                    yield record
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise LLMPerfUsageError(f"{path}: cannot be read ({exc})") from None


def is_run_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    named = any((path / name).is_file() for name in ("summary.json", "run.json"))
    return named or any(path.glob("tests*.jsonl"))


def read_run(path: Path) -> Run:
    """The run in folder `path` (or in the folder of a `summary.json` given as `path`)."""
    if path.is_file() and path.name == "summary.json":
        path = path.parent
    if not is_run_dir(path):
        raise LLMPerfUsageError(
            f"{path}: not a run folder (no summary.json, run.json or tests.jsonl)"
        )
    _check_metadata(path / "run.json")
    summary_path = path / "summary.json"
    if summary_path.is_file():
        try:
            summary = loads_json(summary_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise LLMPerfUsageError(f"{summary_path}: cannot be read as JSON ({exc})") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("tests", []), list):
            raise LLMPerfUsageError(f"{summary_path}: not a run summary (no list of tests)")
        check_schema(summary, str(summary_path), required=True)
        check_run_fields(summary, str(summary_path))
        tests = []
        for index, test in enumerate(summary.pop("tests", [])):
            source = f"{summary_path}: tests[{index}]"
            check_schema(test, source)
            tests.append(TestRecord.from_record(test, source))
        return _declaring(Run(path, summary, tuple(tests), finished=True))
    try:
        summary = build_summary(path)
        summary.pop("tests")
        return _declaring(Run(path, summary, read_test_records(path), finished=False))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LLMPerfUsageError(f"{path}: its records cannot be read ({exc})") from None


def _declaring(run: Run) -> Run:
    """The run, once the metrics its suite declared are known to this process (so that
    `llmperf compare` and the report judge them as the run did)."""
    for test in run.tests:
        if test.declared_metrics:
            declare_metrics(test.metric_specs(), f"{run.path}: test {test.key}")
    return run


def _check_metadata(run_json: Path) -> None:
    """run.json, when there is one, is run metadata of this version's schema."""
    if not run_json.is_file():
        return
    try:
        metadata = loads_json(run_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LLMPerfUsageError(f"{run_json}: cannot be read as JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise LLMPerfUsageError(f"{run_json}: not run metadata (expected an object)")
    check_schema(metadata, str(run_json))
    check_run_fields(metadata, str(run_json))


#: Run-level keys of a summary (and run.json) that readers use, with their JSON types.
_RUN_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "run_id": ((str,), "a string"),
    "started_at": ((str,), "a string"),
    "started_unix": ((int, float), "a number"),
    "finished_at": ((str,), "a string"),
    "hardware": ((str, type(None)), "a string or null"),
    "plugin_version": ((str,), "a string"),
    "settings": ((dict,), "an object"),
    "machine": ((dict,), "an object"),
    "interrupted": ((bool,), "true or false"),
    "rebuilt": ((bool,), "true or false"),
    "engine_handovers": ((list,), "a list"),
    "thresholds_update": ((dict,), "an object"),
    "outcomes": ((dict,), "an object"),
    "engine_failures": ((list,), "a list"),
    "threads": ((dict,), "an object"),
    "load_average_at_start": ((int, float, type(None)), "a number or null"),
}


def check_run_fields(data: dict[str, Any], source: str) -> None:
    """The run-level keys readers use have their JSON types (others are left alone)."""
    for key, (types, expected) in _RUN_FIELDS.items():
        if key in data and not isinstance(data[key], types):
            got = type(data[key]).__name__
            raise LLMPerfUsageError(f"{source}: {key}: expected {expected}, got {got}")


def check_schema(data: object, source: str, required: bool = False) -> None:
    """`data` (a JSON object) was written in the schema this version reads."""
    if not isinstance(data, dict):
        return  # the record's own reader names a value that is not an object
    version = data.get("schema_version")
    if version is None and not required:
        return
    if type(version) is not int or version != SCHEMA_VERSION:
        what = "no schema_version" if version is None else f"schema_version {version!r}"
        raise LLMPerfUsageError(
            f"{source}: {what}: this version of pytest-llmperf reads schema_version "
            f"{SCHEMA_VERSION} (a later version wrote it? upgrade pytest-llmperf to read it)"
        )


def read_test_records(run_dir: Path) -> tuple[TestRecord, ...]:
    """The test records a run folder's tests*.jsonl hold (every worker's), as written.

    A record of the wrong shape is a `RecordError` naming its file and line."""
    records = []
    for path in sorted(run_dir.glob("tests*.jsonl")):
        for number, record in read_jsonl_lines(path):
            check_schema(record, f"{path}: line {number}")
            records.append(TestRecord.from_record(record, f"{path}: line {number}"))
    return tuple(records)


def find_runs(results_dir: Path = DEFAULT_RESULTS_DIR) -> list[Run]:
    """Every run under `results_dir`, oldest first (by start time, then name)."""
    if not results_dir.is_dir():
        raise LLMPerfUsageError(f"{results_dir}: no such results folder")
    runs = [read_run(p) for p in sorted(results_dir.iterdir()) if is_run_dir(p)]
    return sorted(runs, key=time_order)


def open_run(
    ref: str | Path, results_dir: Path = DEFAULT_RESULTS_DIR, *, baseline: bool = False
) -> Run:
    """The run `ref` names: a folder, a summary.json, a run id, or `latest[~N]`.

    `latest[~N]` counts the runs with measured tests; with `baseline`, only those that
    finished (have a summary.json), since a run still going is no baseline."""
    text = str(ref)
    if not text.strip():
        raise LLMPerfUsageError("empty run name (give a run folder, run id or latest[~N])")
    latest = _LATEST.match(text)
    if latest:
        every = find_runs(results_dir)
        runs = [r for r in every if r.tests and (r.finished or not baseline)]
        back = int(latest.group(1) or 0)
        if back >= len(runs):
            kind = "finished with measured tests" if baseline else "with measured tests"
            raise LLMPerfUsageError(
                f"{text}: {results_dir} holds {len(every)} run(s), {len(runs)} of them {kind}, "
                f"so there is no {text}"
            )
        return runs[-1 - back]
    path = Path(text).expanduser()
    if path.exists():
        return read_run(path)
    if (results_dir / text).exists():
        return read_run(results_dir / text)
    known = [p.name for p in sorted(results_dir.glob("*")) if is_run_dir(p)][-5:]
    hint = f"; the newest in {results_dir}: {', '.join(known)}" if known else ""
    raise LLMPerfUsageError(
        f"{text}: no such run (give a run folder, its summary.json, a run id under "
        f"{results_dir}, or latest / latest~N){hint}"
    )


def _open_many(refs: tuple[str | Path, ...], results_dir: Path) -> list[Run]:
    """Runs for `refs`; a results folder given as a ref stands for all its runs."""
    runs: list[Run] = []
    for ref in refs or (results_dir,):
        path = Path(ref)
        if path.is_dir() and not is_run_dir(path):
            runs.extend(find_runs(path))
        else:
            runs.append(open_run(ref, results_dir))
    return runs


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise LLMPerfUsageError(
            "pandas is not installed: pip install 'pytest-llmperf[report]'"
        ) from None
    return pandas


def load_runs(*refs: str | Path, results_dir: Path = DEFAULT_RESULTS_DIR) -> pandas.DataFrame:
    """Tests x metrics: one row per test of each run, one column per flat metric.

    Columns: `run_id`, `started_at`, `hardware`, `test_id`, `config`, `engine`, `model`,
    `passed` (thresholds), then every metric as the thresholds name it
    (`output_tok_per_s`, `ttft_ms.p90`, `accuracy`, ...). Give runs (see `open_run`)
    or results folders; none: every run under `results_dir`.
    """
    pandas = _pandas()
    rows = []
    for run in _open_many(refs, results_dir):
        for test in run.tests:
            rows.append(
                {
                    "run_id": run.run_id,
                    "started_at": run.started_at,
                    "hardware": run.summary.get("hardware"),
                    "test_id": test.test_id,
                    "config": test.config.name,
                    "engine": test.engine,
                    "model": test.engine_info.model,
                    "passed": test.thresholds.passed,
                    **test.metrics_flat,
                }
            )
    return pandas.DataFrame(rows)


def load_requests(*refs: str | Path, results_dir: Path = DEFAULT_RESULTS_DIR) -> pandas.DataFrame:
    """One row per measured request: `run_id`, `test_id`, `custom_id`, `round`, token
    counts, `finish_reason`, `ttft_ms`, `tpot_ms`, `e2e_ms`, `queue_ms`, `error`, ...
    (`itl_ms` stays a list per row)."""
    pandas = _pandas()
    rows = []
    for run in _open_many(refs, results_dir):
        for record in run.requests():
            record.pop("schema_version", None)
            rows.append({"run_id": run.run_id, **record})
    return pandas.DataFrame(rows)


def run_refs(text: str, source: str) -> list[str]:
    """The runs `text` names: `RUN`, `RUN,RUN,...`, or `latest:N` (`latest`, `latest~1`,
    ... `latest~N-1`: the newest N runs); `source` says where it was given."""
    text = text.strip()
    name, _, count = text.partition(":")
    if count:
        if name != "latest" or not count.isdigit() or not 1 <= int(count) <= 100:
            raise LLMPerfUsageError(
                f"{source}: {text!r}: the pooled form is latest:N, N from 1 to 100"
            )
        return ["latest"] + [f"latest~{back}" for back in range(1, int(count))]
    refs = [ref.strip() for ref in text.split(",")]
    if any(not ref for ref in refs):
        raise LLMPerfUsageError(f"{source}: {text!r}: an empty run name in the list")
    return refs


def time_order(run: Run) -> tuple[str, float, str]:
    """The sort key that puts runs in the order they started."""
    return (run.started_at, run.started_unix, run.run_id)
