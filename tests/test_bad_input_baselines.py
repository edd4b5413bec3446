"""The bad-input catalogue, part two: baselines, tolerances, run files and CLI paths, and
files other writers change under a run.

In the style of `tests/test_bad_input.py`, whose helpers it uses: one row per input, each
ending as a usage error (pytest: exit 4; `llmperf`: exit 2) with its message on one line of
stderr, no traceback, and nothing damaged: the results folder (SHA-256 of every file), and
for the rows that name another file, that file, are byte for byte as they were. The rows
that need a baseline with measured tests copy one real run (hf, tiny model) into the
project, then change the copy as the row says. RELIABILITY.md ("Baselines, bounds and the
CLI") lists the classes these rows cover.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.suite_run import make_project, run_project
from tests.test_bad_input import (
    PREVIOUS_RUN,
    SUITE,
    Outcome,
    assert_refused,
    hashes,
    llmperf_in,
    project_with_previous_run,
    pytest_in,
)

BASE = "20260102-000000-bbbbbb"
BASE_DIR = f"results/{BASE}"
EMPTY_DIR = f"results/{PREVIOUS_RUN}"  # the catalogue's previous run: no measured test


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of the catalogue's suite (hf, tiny): one measured test."""
    root = make_project(tmp_path_factory.mktemp("measured"), SUITE)
    out = run_project(root)
    assert out.returncode == 0, out.stdout[-3000:]
    (run,) = (root / "results").iterdir()
    return run


def one_line(out: Outcome) -> None:
    """The error is one line of stderr."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr


# --- how a row changes the baseline copy ---------------------------------------------------

Change = Callable[[Path], None]


def summary_set(key: str, value: Any) -> Change:
    def change(run: Path) -> None:
        summary = json.loads((run / "summary.json").read_text())
        if value is _DELETE:
            del summary[key]
        else:
            summary[key] = value
        (run / "summary.json").write_text(json.dumps(summary))

    return change


def settings_set(key: str, value: Any) -> Change:
    def change(run: Path) -> None:
        summary = json.loads((run / "summary.json").read_text())
        summary["settings"][key] = value
        (run / "summary.json").write_text(json.dumps(summary))

    return change


def unfinished(run: Path) -> None:
    (run / "summary.json").unlink()


def write(name: str, text: str, keep_summary: bool = True) -> Change:
    def change(run: Path) -> None:
        if not keep_summary:
            unfinished(run)
        (run / name).write_text(text)

    return change


def record_schema(version: object) -> Change:
    def change(run: Path) -> None:
        unfinished(run)
        records = [json.loads(line) for line in (run / "tests.jsonl").read_text().splitlines()]
        records[0]["schema_version"] = version
        (run / "tests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    return change


def unchanged(run: Path) -> None:
    pass


_DELETE = object()


def project_with_baseline(tmp_path: Path, measured_run: Path, change: Change) -> Path:
    """The catalogue's project, with a copy of the measured run (as BASE) changed."""
    project = project_with_previous_run(tmp_path)
    shutil.copytree(measured_run, project / BASE_DIR)
    change(project / BASE_DIR)
    return project


# --- baselines given to pytest (--llmperf-compare) -------------------------------------------

BASELINE_ROWS: list[tuple[str, Change, str, tuple[str, ...]]] = [
    # (case, change to the baseline copy, --llmperf-compare value, words)
    (
        "latest_measured_nothing",  # issue 21's example: a 0-test run was `latest`
        lambda run: shutil.rmtree(run),
        "latest",
        ("--llmperf-compare: latest:", "holds 1 run(s), 0 of them finished with measured tests"),
    ),
    (
        "latest_unfinished",  # a run still going (or killed) is no baseline
        unfinished,
        "latest",
        ("holds 2 run(s), 0 of them finished with measured tests",),
    ),
    (
        "latest~1_only_one_measured",
        unchanged,
        "latest~1",
        ("latest~1:", "holds 2 run(s), 1 of them finished with measured tests"),
    ),
    ("named_measured_nothing", unchanged, EMPTY_DIR, (f"baseline {PREVIOUS_RUN}", "no measured")),
    (
        "schema_2",  # issue 21's example: compared as "no regression"
        summary_set("schema_version", 2),
        BASE_DIR,
        ("summary.json: schema_version 2: this version of pytest-llmperf reads schema_version 1",),
    ),
    ("schema_missing", summary_set("schema_version", _DELETE), BASE_DIR, ("no schema_version",)),
    ("schema_text", summary_set("schema_version", "1"), BASE_DIR, ("schema_version '1'",)),
    ("record_schema_3", record_schema(3), BASE_DIR, ("tests.jsonl: line 1: schema_version 3",)),
    (
        "other_engine",
        settings_set("engine", "llamacpp"),
        BASE_DIR,
        ("another setup (engine: llamacpp vs hf", "--llmperf-allow-mismatch"),
    ),
    (
        "other_model",
        settings_set("model", "/models/llama-3.2-1b/"),
        BASE_DIR,
        ("another setup (model: llama-3.2-1b vs tiny",),
    ),
    (
        "other_hardware",
        summary_set("hardware", "h100-80gb-hbm3"),
        BASE_DIR,
        ("another setup (hardware: h100-80gb-hbm3 vs cpu",),
    ),
    ("settings_a_list", summary_set("settings", []), BASE_DIR, ("settings: expected an object",)),
    (
        "test_entry_a_string",
        summary_set("tests", ["x"]),
        BASE_DIR,
        ("tests[0]: test record: expected an object, got a string",),
    ),
    ("run_json_a_list", write("run.json", "[]"), BASE_DIR, ("run.json: not run metadata",)),
]


@pytest.mark.parametrize(
    "change, ref, words", [r[1:] for r in BASELINE_ROWS], ids=[r[0] for r in BASELINE_ROWS]
)
def test_baseline(
    tmp_path: Path, measured_run: Path, change: Change, ref: str, words: tuple[str, ...]
) -> None:
    project = project_with_baseline(tmp_path, measured_run, change)
    before = hashes(project / "results")
    out = pytest_in(project, "--llmperf-compare", ref)
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, ("--llmperf-compare:", *words))
    one_line(out)
    assert hashes(project / "results") == before


def test_a_baseline_of_another_setup_is_compared_when_the_user_says_so(
    tmp_path: Path, measured_run: Path
) -> None:
    project = project_with_baseline(tmp_path, measured_run, settings_set("engine", "llamacpp"))
    out = pytest_in(project, "--llmperf-compare", BASE_DIR, "--llmperf-allow-mismatch")
    assert out.returncode == 0, out.stdout + out.stderr
    (project / "pytest.ini").write_text("[pytest]\nllmperf_allow_mismatch = true\n")
    out = pytest_in(project, "--llmperf-compare", BASE_DIR)
    assert out.returncode == 0, out.stdout + out.stderr


# --- tolerances and the new ini key ------------------------------------------------------------

OPTION_ROWS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    # issue 21's example: silently ignored, where a thresholds file rejects the name
    (
        ("--llmperf-tolerance", "output_tokps:-5%"),
        (
            "--llmperf-tolerance: 'output_tokps:-5%': unknown metric 'output_tokps' (did you mean "
            "'output_tok_per_s'",
        ),
    ),
    (("--llmperf-tolerance", "ttft:+10%"), ("unknown metric 'ttft' (did you mean 'ttft_ms.p50'",)),
    (("--llmperf-tolerance", "TTFT_MS.P90:10%"), ("unknown metric 'TTFT_MS.P90'",)),
    (("--llmperf-tolerance", "nothing_*:5%"), ("'nothing_*' matches no metric",)),
    (("--llmperf-tolerance", "ttft_ms.p9?:+5%", "--llmperf-tolerance", "x:1"), ("'x'",)),
]


@pytest.mark.parametrize("args, words", OPTION_ROWS, ids=[a[1] for a, _ in OPTION_ROWS])
def test_tolerance(project: Path, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    before = hashes(project / "results")
    out = pytest_in(project, *args)
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, words)
    one_line(out)
    assert hashes(project / "results") == before


def test_ini_allow_mismatch_that_is_not_a_boolean(project: Path) -> None:
    (project / "pytest.ini").write_text("[pytest]\nllmperf_allow_mismatch = maybe\n")
    out = pytest_in(project)
    words = ("ini option llmperf_allow_mismatch: 'maybe' is not true or false",)
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, words)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return project_with_previous_run(tmp_path)


# --- the llmperf command: runs compared, reports written, run files read ------------------------

CLI_ROWS: list[tuple[str, Change, tuple[str, ...], tuple[str, ...]]] = [
    # (case, change to the baseline copy, command, words)
    (
        "compare_measured_nothing",
        unchanged,
        ("compare", EMPTY_DIR, BASE_DIR),
        (f"base {PREVIOUS_RUN}", "has no measured tests, so there is nothing to compare"),
    ),
    (
        "compare_misspelt_tolerance",
        unchanged,
        ("compare", BASE_DIR, BASE_DIR, "--tolerance", "output_tokps:-5%"),
        ("unknown metric 'output_tokps' (did you mean 'output_tok_per_s'",),
    ),
    ("show_schema_2", summary_set("schema_version", 2), ("show", BASE), ("schema_version 2",)),
    (
        "compare_schema_2",
        summary_set("schema_version", 2),
        ("compare", BASE_DIR, BASE_DIR),
        ("schema_version 2",),
    ),
    (
        "report_over_a_file_it_did_not_write",  # issue 21's example
        unchanged,
        ("report", BASE, "-o", "pyproject.toml"),
        ("-o: pyproject.toml exists and is not a report written by llmperf report", "--force"),
    ),
    (
        "report_over_a_run_summary",  # issue 21's example
        unchanged,
        ("report", BASE, "-o", f"{BASE_DIR}/summary.json"),
        (f"-o: {BASE_DIR}/summary.json is inside the run folder",),
    ),
    (
        "report_over_a_run_summary_forced",
        unchanged,
        ("report", BASE, "-o", f"{BASE_DIR}/summary.json", "--force"),
        ("is inside the run folder",),
    ),
    (
        "report_into_a_run_folder",
        unchanged,
        ("report", BASE, "-o", f"{BASE_DIR}/responses/report.html"),
        ("is inside the run folder",),
    ),
    (
        "show_a_record_that_is_a_string",  # issue 21's example: exit 1, traceback
        write("tests.jsonl", '"x"\n', keep_summary=False),
        ("show", BASE),
        ("tests.jsonl: line 1: test record: expected an object, got a string",),
    ),
    (
        "list_run_json_a_list",
        write("run.json", "[]"),
        ("list",),
        ("run.json: not run metadata (expected an object)",),
    ),
    (
        "report_request_record_a_number",
        write("requests.jsonl", "5\n"),
        ("report", BASE, "-o", "out.html"),
        ("requests.jsonl: line 1: request record: expected an object",),
    ),
    (
        "show_hardware_a_list",
        summary_set("hardware", ["cpu"]),
        ("show", BASE),
        ("summary.json: hardware: expected a string or null, got list",),
    ),
    (
        "rebuild_forced_over_broken_records",
        write("tests.jsonl", '{"schema_version": 1, "test_id": \n'),
        ("rebuild", BASE, "--force"),
        ("its records cannot be read",),
    ),
    (
        "rebuild_forced_over_a_string_record",
        write("tests.jsonl", '"x"\n'),
        ("rebuild", BASE, "--force"),
        ("tests.jsonl: line 1: test record: expected an object",),
    ),
    (
        "dashboard_of_a_file",
        unchanged,
        ("dashboard", "pyproject.toml"),
        ("pyproject.toml: no such results folder",),
    ),
]


@pytest.mark.parametrize(
    "change, args, words", [r[1:] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS]
)
def test_cli(
    tmp_path: Path,
    measured_run: Path,
    change: Change,
    args: tuple[str, ...],
    words: tuple[str, ...],
) -> None:
    project = project_with_baseline(tmp_path, measured_run, change)
    mine = project / "pyproject.toml"
    mine.write_text("[project]\nname = 'mine'\n")
    before = hashes(project / "results"), mine.read_bytes()
    out = llmperf_in(project, *args)
    assert_refused(out, 2, words)
    one_line(out)
    assert (hashes(project / "results"), mine.read_bytes()) == before


# --- files other writers change under a run --------------------------------------------------

WRITER_SUITE = """
from pathlib import Path
from pytest_llmperf import SyntheticWorkload

def test_x(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=1, input_tokens=4, output_tokens=2),
                    rounds=1)
    # Another writer, while this run measures:
    Path("thresholds/cpu/hf.yaml").write_text(Path("other_writer.yaml").read_text())
"""
OTHERS = "test_suite.py::test_other"


def writer_project(tmp_path: Path, other_writes: str) -> Path:
    project = make_project(tmp_path, WRITER_SUITE)
    (project / "thresholds" / "cpu").mkdir(parents=True)
    (project / "thresholds" / "cpu" / "hf.yaml").write_text("schema: 1\ntests:\n")
    (project / "other_writer.yaml").write_text(other_writes)
    return project


def test_a_bound_another_writer_added_during_the_run_is_kept(tmp_path: Path) -> None:
    project = writer_project(
        tmp_path, f'schema: 1\ntests:\n  "{OTHERS}":\n    requests: {{min: 1}}\n'
    )
    out = run_project(project, "--llmperf-update-thresholds")
    assert out.returncode == 0, out.stdout[-3000:]
    tests = yaml.safe_load((project / "thresholds" / "cpu" / "hf.yaml").read_text())["tests"]
    assert tests[OTHERS] == {"requests": {"min": 1}}  # the other writer's, merged
    assert "output_tok_per_s" in tests["test_suite.py::test_x"]  # and this run's


def test_a_thresholds_file_another_writer_broke_is_a_usage_error_after_the_summary(
    tmp_path: Path,
) -> None:
    project = writer_project(tmp_path, "schema: 1\ntests: [\n")
    out = run_project(project, "--llmperf-update-thresholds")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-3000:]
    assert "--llmperf-update-thresholds:" in out.stderr and "hf.yaml: line 3" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    # The broken file is left as it is, and the run's results are whole.
    assert (project / "thresholds" / "cpu" / "hf.yaml").read_text() == "schema: 1\ntests: [\n"
    (run,) = (project / "results").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["tests"]) == 1 and "hf.yaml: line 3" in summary["thresholds_update"]["error"]


HOLDER = """
import fcntl, os, sys, time
from pathlib import Path
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
Path(sys.argv[2]).write_text("")
while not Path(sys.argv[3]).exists():
    time.sleep(0.05)
Path(sys.argv[4]).write_text(repr(time.time()))
os.close(fd)
"""


def test_an_update_waits_for_another_writers_lock(tmp_path: Path) -> None:
    """Another update holds the thresholds folder's lock: this run's update waits for it,
    rather than writing under it, and writes once it is released."""
    project = writer_project(tmp_path, "schema: 1\ntests:\n")
    folder = project / "thresholds" / "cpu"
    held, release, released = (tmp_path / name for name in ("held", "release", "released"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *map(str, (folder, held, release, released))]
    )
    run: subprocess.Popen[str] | None = None
    try:
        while not held.exists():
            assert holder.poll() is None
            time.sleep(0.05)
        argv = [sys.executable, "-m", "pytest", "test_suite.py", "-p", "no:cacheprovider"]
        run = subprocess.Popen(
            [*argv, "--gpus", "cpu", "--llmperf-update-thresholds"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        while not list((project / "results").glob("*/tests.jsonl")):  # measured: ending now
            assert run.poll() is None, run.communicate()[0]
            time.sleep(0.1)
        time.sleep(3)
        assert run.poll() is None  # waiting for the lock
        assert "test_x" not in (folder / "hf.yaml").read_text()
        release.write_text("")
        output = run.communicate(timeout=120)[0]
    finally:
        release.write_text("")
        holder.wait(timeout=60)
        if run is not None and run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-3000:]
    assert os.path.getmtime(folder / "hf.yaml") >= float(released.read_text()) - 0.01
    assert "test_suite.py::test_x" in yaml.safe_load((folder / "hf.yaml").read_text())["tests"]
