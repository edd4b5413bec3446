"""Reading runs back: the results folder as data, for the CLI, reports and pandas.

A run is a folder `results/<run-id>/` (see `results`). It is read from its
`summary.json` when the run finished, else rebuilt from `run.json` and the JSONL
records it appended as it went (a run that was killed still reads). Only JSON is read:
nothing in a results folder is executed or unpickled.

A run is named, wherever one is asked for (`llmperf show RUN`, `--llmperf-compare
BASE`), by its folder, its `summary.json`, its run id under the results folder, or
`latest` / `latest~N` (the newest run, the one N before it).

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
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.writer import build_summary, loads_json, read_jsonl, read_jsonl_lines

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

    def test(self, key: str) -> TestRecord | None:
        """The record of a test by its key (`TestRecord.key`; the last, if it ran twice)."""
        found = [t for t in self.tests if t.key == key]
        return found[-1] if found else None

    def requests(self) -> Iterator[dict[str, Any]]:
        """Every measured request's record, worker files included."""
        for path in sorted(self.path.glob("requests*.jsonl")):
            yield from read_jsonl(path)


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
    summary_path = path / "summary.json"
    if summary_path.is_file():
        try:
            summary = loads_json(summary_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise LLMPerfUsageError(f"{summary_path}: cannot be read as JSON ({exc})") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("tests", []), list):
            raise LLMPerfUsageError(f"{summary_path}: not a run summary (no list of tests)")
        tests = tuple(
            TestRecord.from_record(test, f"{summary_path}: tests[{index}]")
            for index, test in enumerate(summary.pop("tests", []))
        )
        return Run(path, summary, tests, finished=True)
    try:
        summary = build_summary(path)
        summary.pop("tests")
        return Run(path, summary, read_test_records(path), finished=False)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LLMPerfUsageError(f"{path}: its records cannot be read ({exc})") from None


def read_test_records(run_dir: Path) -> tuple[TestRecord, ...]:
    """The test records a run folder's tests*.jsonl hold (every worker's), as written.

    A record of the wrong shape is a `RecordError` naming its file and line."""
    return tuple(
        TestRecord.from_record(record, f"{path}: line {number}")
        for path in sorted(run_dir.glob("tests*.jsonl"))
        for number, record in read_jsonl_lines(path)
    )


def find_runs(results_dir: Path = DEFAULT_RESULTS_DIR) -> list[Run]:
    """Every run under `results_dir`, oldest first (by start time, then name)."""
    if not results_dir.is_dir():
        raise LLMPerfUsageError(f"{results_dir}: no such results folder")
    runs = [read_run(p) for p in sorted(results_dir.iterdir()) if is_run_dir(p)]
    return sorted(runs, key=lambda r: (r.started_at, r.path.name))


def open_run(ref: str | Path, results_dir: Path = DEFAULT_RESULTS_DIR) -> Run:
    """The run `ref` names: a folder, a summary.json, a run id, or `latest[~N]`."""
    text = str(ref)
    if not text.strip():
        raise LLMPerfUsageError("empty run name (give a run folder, run id or latest[~N])")
    latest = _LATEST.match(text)
    if latest:
        runs = find_runs(results_dir)
        back = int(latest.group(1) or 0)
        if back >= len(runs):
            raise LLMPerfUsageError(
                f"{text}: {results_dir} holds {len(runs)} run(s), so there is no {text}"
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
