"""`llmperf merge RUN... -o RUN`: several runs of one suite joined into one run.

For the parts of a suite measured on several machines: the shards of a CI matrix
(`--llmperf-shard K/N`), or runs on several hosts. The merged folder is a run like any
other (`results`): `run.json` (the first run's metadata, with `merged_from` naming every
run, its host, hardware and shard), `tests.jsonl`, `requests.jsonl` and
`engine_failures.jsonl` holding every run's records as they were written, so each test's
thresholds verdicts and baseline comparison stay as its run judged them, and
`summary.json` with the runs' pytest outcomes joined, written with its exports
(`results.exports`). A test measured in two runs is a conflict: the merge names each one
and writes nothing, since which measurement is the run's would be a guess. Runs of other
engines or models are refused too (a merge of setups compares nothing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.results.exports import write_github_benchmark, write_tests_csv
from pytest_llmperf.results.readback.split import merged_loads
from pytest_llmperf.results.runs import Run, read_run
from pytest_llmperf.results.writer import RunWriter, read_records, write_summary


def merge_runs(runs: Sequence[Run], out: Path) -> Run:
    """Write the merged run of `runs` to the new folder `out`; return it, read back."""
    if len(runs) < 2:
        raise LLMPerfUsageError("give at least two runs to merge")
    _check(runs, out)
    first = runs[0]
    metadata = {k: v for k, v in first.summary.items() if k not in _PER_RUN}
    metadata["run_id"] = out.name
    metadata["merged_from"] = [_origin(run) for run in runs]
    writer = RunWriter(out, None)
    try:
        writer.write_metadata(metadata)
        for run in runs:  # tests as the summary has them: rebuilt ones too
            writer.receive(
                {
                    "tests": [test.as_record() for test in run.tests],
                    "requests": read_records(run.path, "requests"),
                    "engine_failures": run.summary.get("engine_failures") or [],
                }
            )
    finally:
        writer.close()
    outcomes: dict[str, Any] = {}
    for run in runs:
        outcomes.update(run.summary.get("outcomes") or {})
    extra = {
        "finished_at": max(str(r.summary.get("finished_at") or "") for r in runs),
        "interrupted": any(bool(r.summary.get("interrupted")) for r in runs),
        "outcomes": outcomes,
    }
    # Split loads merged again, from the joined runs' shares (a load's shares may be in several).
    if loads := merged_loads([test for run in runs for test in run.tests], out):
        extra["split_loads"] = loads
    write_summary(out, extra)
    merged = read_run(out)
    write_github_benchmark(merged)
    write_tests_csv(merged)
    return merged


#: Keys of a run's summary that describe that run alone, not the merged one.
_PER_RUN = frozenset(
    {
        "tests",
        "engine_failures",
        "outcomes",
        "finished_at",
        "interrupted",
        "thresholds_update",
        "split_loads",
    }
)


def _origin(run: Run) -> dict[str, Any]:
    machine = run.summary.get("machine") or {}
    settings = run.summary.get("settings") or {}
    return {
        "run_id": run.run_id,
        "path": str(run.path),
        "hostname": machine.get("hostname"),
        "hardware": run.summary.get("hardware"),
        "shard": settings.get("shard"),
        "tests": len(run.tests),
    }


def _check(runs: Sequence[Run], out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LLMPerfUsageError(f"-o {out}: exists and is not an empty folder")
    for run in runs:
        if not run.finished:
            raise LLMPerfUsageError(f"{run.path}: has no summary.json (llmperf rebuild first)")
    setups = {_setup(run) for run in runs}
    if len(setups) > 1:
        shown = "; ".join(f"{r.run_id}: engine {_setup(r)[0]}, model {_setup(r)[1]}" for r in runs)
        raise LLMPerfUsageError(f"the runs measured different setups ({shown})")
    seen: dict[str, str] = {}
    conflicts: list[str] = []
    for run in runs:
        for test in run.tests:
            if test.key in seen and seen[test.key] != run.run_id:
                conflicts.append(f"{test.key} (in {seen[test.key]} and {run.run_id})")
            seen.setdefault(test.key, run.run_id)
    if conflicts:
        raise LLMPerfUsageError(
            f"{len(conflicts)} test(s) measured in more than one run, nothing written: "
            + "; ".join(conflicts)
        )
    paths = [os.path.realpath(run.path) for run in runs]
    if len(set(paths)) < len(paths):
        raise LLMPerfUsageError("a run is given twice")


def _setup(run: Run) -> tuple[str, str]:
    settings = run.summary.get("settings") or {}
    return (str(settings.get("engine")), str(settings.get("model")))
