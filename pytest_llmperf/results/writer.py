"""The results folder: records written as they happen, one summary at the end.

Each run writes `results/<run-id>/`:

    run.json              metadata, written when the run starts
    requests[-gwN].jsonl  one line per measured request, appended when its round ends
    tests[-gwN].jsonl     one line per measured test, appended when it finishes
    server_metrics[-gwN].jsonl
                          one line per read of a server's metrics during a test's measured
                          rounds (`pytest_llmperf.measure.server`): test id, seconds since
                          the test's first read, wall clock, each quantity
    engine_failures[-gwN].jsonl
                          one line per engine (or server) that failed to start: its
                          configuration, the error and the full command it ran
    summary.json          metadata + every test (+ `engine_failures`), written at the end

Under pytest-xdist each worker appends to its own `-gwN` files and only the
controller writes `summary.json`, by merging them. Since the JSONL files are flushed
line by line, a run that dies half-way still leaves every finished record readable
and its summary can be rebuilt from them (`build_summary`; `llmperf rebuild RUN`).
Request records are appended when their round ends (a write inside the round would
delay the next chunk's timestamp), test records when the test's measurement ends.

All JSON is strict (`allow_nan=False`): unknown or non-finite values are `null`.
Every file carries `schema_version`.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

SCHEMA_VERSION = 1


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


class RunWriter:
    """Appends a run's records to its folder; one instance per process."""

    def __init__(self, run_dir: Path, worker_id: str | None) -> None:
        self.run_dir = run_dir
        self._suffix = f"-{worker_id}" if worker_id else ""
        self._files: dict[str, IO[str]] = {}

    def _append(self, kind: str, record: Mapping[str, Any]) -> None:
        handle = self._files.get(kind)
        if handle is None:  # opened on first use: a run that measures nothing writes nothing
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(self.run_dir / f"{kind}{self._suffix}.jsonl", "a", encoding="utf-8")
            self._files[kind] = handle
        handle.write(dumps({"schema_version": SCHEMA_VERSION, **record}) + "\n")
        handle.flush()

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
    kinds = ("tests", "requests", "engine_failures")
    return any(any(run_dir.glob(f"{kind}*.jsonl")) for kind in kinds)


def read_tests(run_dir: Path) -> list[dict[str, Any]]:
    return read_records(run_dir, "tests")


def read_records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """Every worker's `<kind>[-gwN].jsonl` records of a run folder."""
    records: list[dict[str, Any]] = []
    for path in sorted(run_dir.glob(f"{kind}*.jsonl")):
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
