"""The results folder: records written as they happen, one summary at the end.

Each run writes `results/<run-id>/`:

    run.json              metadata, written when the run starts
    requests.jsonl        one line per measured request, appended when its round ends
    tests.jsonl           one line per measured test, appended when it finishes
    server_metrics.jsonl  one line per read of a server's metrics during a test's measured
                          rounds (`pytest_llmperf.measure.server`): test id, seconds since
                          the test's first read, wall clock, each quantity
    engine_failures.jsonl one line per engine (or server) that failed to start: its
                          configuration, the error and the full command it ran
    summary.json          metadata + every test (+ `engine_failures`), written at the end
    workers/gwN/          under pytest-xdist, worker gwN's own copy of its records

Under pytest-xdist the records travel with xdist, not through the filesystem: a
worker appends its records to its own `workers/gwN/` files (in the run folder of its
host and working folder, which may not be the controller's) and hands them to the
controller with each test's report (`outbox`); the controller appends what it receives
to the run's files and writes `summary.json`. So a worker on another host, or in
another folder, measures into the controller's run. Runs of earlier versions, whose
workers wrote `-gwN` files beside the controller's, still read. Since the JSONL files
are flushed line by line, a run that dies half-way still leaves every finished record
readable and its summary can be rebuilt from them (`build_summary`; `llmperf rebuild
RUN`).
Request records are appended when their round ends (a write inside the round would
delay the next chunk's timestamp), test records when the test's measurement ends.

All JSON is strict (`allow_nan=False`): unknown or non-finite values are `null`.
Every file carries `schema_version`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

SCHEMA_VERSION = 1

log = logging.getLogger("pytest_llmperf")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _finite(value: Any) -> Any:
    """Replace NaN and infinities with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(_finite(value), allow_nan=False, indent=indent, default=str)


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


#: The kinds of record a run appends, each to `<kind>.jsonl`.
RECORD_KINDS = ("tests", "requests", "server_metrics", "engine_failures")


class RunWriter:
    """Appends a run's records to its folder; one instance per process.

    An xdist worker's writer (`worker_id` set) appends to `workers/<id>/` and keeps each
    record in `outbox` too, for the controller, until `take_outbox` hands them over; the
    controller's appends what it is handed with `receive`."""

    def __init__(self, run_dir: Path, worker_id: str | None) -> None:
        self.run_dir = run_dir
        self._folder = run_dir / "workers" / worker_id if worker_id else run_dir
        self._files: dict[str, IO[str] | None] = {}
        self._outbox: dict[str, list[dict[str, Any]]] | None = {} if worker_id else None

    def _append(self, kind: str, record: Mapping[str, Any]) -> None:
        line = dumps({"schema_version": SCHEMA_VERSION, **record})
        if self._outbox is not None:  # as JSON reads it back: only types xdist can send
            self._outbox.setdefault(kind, []).append(json.loads(line))
        if kind not in self._files:  # opened on first use: a run that measures nothing
            self._files[kind] = self._open(kind)  # writes nothing
        handle = self._files[kind]
        if handle is not None:
            handle.write(line + "\n")
            handle.flush()

    def _open(self, kind: str) -> IO[str] | None:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            return open(self._folder / f"{kind}.jsonl", "a", encoding="utf-8")
        except OSError as exc:
            if self._outbox is None:
                raise  # the run's own files: nothing else keeps the records
            # A worker's copy is a spare: where its host cannot write the run's folder
            # (an absolute --llmperf-results-dir of the controller's), the records still
            # reach the controller.
            log.warning("worker records kept only by the controller: %s", exc)
            return None

    def take_outbox(self) -> dict[str, list[dict[str, Any]]]:
        """The records appended since the last call, by kind (a worker's writer)."""
        if self._outbox is None:
            return {}
        taken, self._outbox = self._outbox, {}
        return taken

    def receive(self, records: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Append the records a worker handed over (`take_outbox`) to the run's files."""
        for kind in RECORD_KINDS:
            for record in records.get(kind, ()):
                self._append(kind, record)

    def write_metadata(self, metadata: Mapping[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / "run.json", {"schema_version": SCHEMA_VERSION, **metadata})

    def append_request(self, record: Mapping[str, Any]) -> None:
        self._append("requests", record)

    def append_test(self, record: Mapping[str, Any]) -> None:
        self._append("tests", record)

    def append_server_metrics(self, record: Mapping[str, Any]) -> None:
        self._append("server_metrics", record)

    def append_engine_failure(self, record: Mapping[str, Any]) -> None:
        self._append("engine_failures", record)

    def close(self) -> None:
        for handle in self._files.values():
            if handle is not None:
                handle.close()
        self._files.clear()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (a killed run) is skipped."""
    for _, record in read_jsonl_lines(path):
        yield record


def read_jsonl_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) of each record of a JSONL file, as `read_jsonl`."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith("\n"):
                return
            if line.strip():
                yield number, loads_json(line)


def loads_json(text: str) -> Any:
    """`json.loads`, with JSON nested deeper than the decoder can recurse turned into the
    ValueError every reader of results already handles, rather than a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def has_measurements(run_dir: Path) -> bool:
    """Whether the run recorded anything: a measurement, or an engine that failed to start
    (a run whose every engine failed still leaves its folder, with why)."""
    return any(any(run_dir.glob(f"{kind}*.jsonl")) for kind in RECORD_KINDS)


def read_tests(run_dir: Path) -> list[dict[str, Any]]:
    return read_records(run_dir, "tests")


def read_records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """A run folder's `<kind>.jsonl` records (and the `<kind>-gwN.jsonl` ones of runs
    whose xdist workers wrote beside the controller); never `workers/`, whose records
    the controller's files already hold."""
    records: list[dict[str, Any]] = []
    for path in sorted(run_dir.glob(f"{kind}*.jsonl")):
        records.extend(read_jsonl(path))
    return records


def worker_copies(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The `<kind>` records xdist workers kept in this run folder (`workers/gwN/`: those
    that ran in the controller's folder). A run killed with its controller holds there the
    records of the tests the workers were measuring, which the controller never received."""
    records: list[dict[str, Any]] = []
    for path in sorted(run_dir.glob(f"workers/*/{kind}.jsonl")):
        records.extend(read_jsonl(path))
    return records


def build_summary(
    run_dir: Path,
    extra: Mapping[str, Any] | None = None,
    more_tests: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The summary of a run folder, from its metadata and test records (and `more_tests`:
    those `llmperf rebuild` made of a killed run's request records)."""
    run_json = run_dir / "run.json"
    metadata = loads_json(run_json.read_text(encoding="utf-8")) if run_json.exists() else {}
    metadata.pop("schema_version", None)
    more = more_tests
    failures = [
        {k: v for k, v in r.items() if k != "schema_version"}
        for r in read_records(run_dir, "engine_failures")
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_dir.name,
        **metadata,
        **(extra or {}),
        **({"engine_failures": failures} if failures else {}),
        "tests": [*read_tests(run_dir), *({"schema_version": SCHEMA_VERSION, **t} for t in more)],
    }


def write_summary(
    run_dir: Path,
    extra: Mapping[str, Any] | None = None,
    more_tests: Sequence[Mapping[str, Any]] = (),
) -> Path:
    path = run_dir / "summary.json"
    write_json_atomic(path, build_summary(run_dir, extra, more_tests))
    return path
