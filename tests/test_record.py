"""The test record: written by the plugin, read back through `TestRecord` by every reader.

One real run of the small suite; its records are read back, rewritten the way earlier
versions wrote them, and broken field by field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.results.fields import RecordError
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import open_run, read_test_records
from tests.conftest import SUITE
from tests.suite_run import make_project, run_project

#: Keys a record of the first version (5e97a18) lacks: they read as null (samples and
#: unreliable: empty).
ADDED_AFTER_V1 = (
    "worker_pid",
    "gpus",
    "baseline",
    "responses",
    "evidence",
    "samples",
    "unreliable",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the small suite and one real run of it in results/."""
    root = make_project(tmp_path_factory.mktemp("project"), SUITE)
    out = run_project(root)
    assert out.returncode == 0, out.stdout[-3000:]
    return root


@pytest.fixture(scope="module")
def run_dir(project: Path) -> Path:
    (found,) = (project / "results").iterdir()
    return found


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_read_back_as_they_were_written(run_dir: Path) -> None:
    written = lines(run_dir / "tests.jsonl")
    records = read_test_records(run_dir)
    assert len(records) == len(written) == 3
    for record, line in zip(records, written, strict=True):
        assert line.pop("schema_version") == 1  # the writer's, around the record
        assert record.as_record() == line  # same keys, same order, same values
        assert list(record.as_record()) == list(line)
    latency = next(r for r in records if r.test_id.endswith("test_latency"))
    assert latency.key == latency.threshold_key == "test_suite.py::test_latency"
    assert latency.engine == latency.engine_info.engine == "hf"
    assert latency.config.name == "default" and latency.engine_config.model == "tiny"
    assert latency.thresholds.passed is True and latency.thresholds.checked == ()
    assert latency.metrics["requests"] == latency.metrics_flat["requests"] == 5  # 5 rounds of 1
    assert latency.metric("output_tok_per_s") == latency.metrics_flat["output_tok_per_s"] > 0
    assert latency.baseline is None and latency.responses is None and latency.gpus is None
    assert latency.evidence is not None and latency.evidence.passed is True
    assert [(c.name, c.measured, c.ok) for c in latency.evidence.checks] == [
        ("requests", 5, True),
        ("failure_rate", 0, True),
    ]
    # summary.json holds the same records
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [t.as_record() for t in open_run(run_dir).tests] == [
        {k: v for k, v in t.items() if k != "schema_version"} for t in summary["tests"]
    ]


def test_a_run_written_by_the_first_version_still_reads(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records without the keys added since (and without a summary: rebuilt from JSONL)."""
    old = tmp_path / "results" / "old-run"
    shutil.copytree(run_dir, old)
    (old / "summary.json").unlink()
    records = lines(old / "tests.jsonl")
    for record in records:
        for key in ADDED_AFTER_V1:
            del record[key]
    (old / "tests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = open_run(old)
    assert [t.test_id for t in run.tests] == [r["test_id"] for r in records]
    for test in run.tests:
        assert (test.worker_pid, test.gpus, test.baseline, test.responses) == (None,) * 4
        assert test.evidence is None
        assert test.samples == {} and test.samples_of("output_tok_per_s") == ()
        assert test.unreliable == {}
    assert main(["show", str(old)]) == 0
    assert "test_suite.py::test_latency" in capsys.readouterr().out
    assert main(["compare", str(run_dir), str(old)]) == 0
    assert "no regression beyond tolerance" in capsys.readouterr().out


def _set(record: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        record = record[key]
    if value is _DELETE:
        del record[last]
    else:
        record[last] = value


_DELETE = object()

#: (field path, bad value, words the error must say after "FILE: WHERE: ")
BROKEN: list[tuple[str, Any, str]] = [
    ("metrics_flat.output_tok_per_s", "fast", "metrics_flat.output_tok_per_s: expected a number"),
    ("thresholds.passed", "yes", "thresholds.passed: expected true or false, got a string"),
    ("engine_config.gpus", ["0"], "engine_config.gpus[0]: expected an integer, got a string"),
    ("metrics.ttft_ms", {"p90": []}, "metrics.ttft_ms: expected a number, null or an object"),
    ("rounds", 2.5, "rounds: expected an integer, got a number"),
    ("test_id", _DELETE, "missing 'test_id'"),
    ("config", None, "config: expected an object, got null"),
    ("samples", [1.0], "samples: expected an object, got a list"),
    ("samples", {"ttft_ms.p90": [1.5, "x"]}, "samples.ttft_ms.p90[1]: expected a number"),
    ("evidence.passed", "yes", "evidence.passed: expected true or false, got a string"),
    ("evidence.checks", {}, "evidence.checks: expected a list, got an object"),
]


@pytest.mark.parametrize(("field", "value", "words"), BROKEN, ids=[field for field, _, _ in BROKEN])
def test_a_record_of_the_wrong_shape_names_its_file_line_and_field(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: Any,
    words: str,
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    records = lines(broken / "tests.jsonl")
    _set(records[1], field, value)
    (broken / "tests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = json.loads((broken / "summary.json").read_text())
    _set(summary["tests"][2], field, value)
    (broken / "summary.json").write_text(json.dumps(summary))

    assert main(["show", str(broken)]) == 2  # a usage error, read from summary.json
    err = capsys.readouterr().err
    assert f"llmperf show: error: {broken / 'summary.json'}: tests[2]: {words}" in err
    (broken / "summary.json").unlink()  # an unfinished run: read from its records
    with pytest.raises(RecordError, match=r"tests\.jsonl: line 2: "):
        open_run(broken)
    assert main(["show", str(broken)]) == 2
    assert f"{broken / 'tests.jsonl'}: line 2: {words}" in capsys.readouterr().err


def test_per_round_samples_read_back(run_dir: Path) -> None:
    """`samples`: metric -> one value per round, null where a round had none."""
    line = lines(run_dir / "tests.jsonl")[0]
    written = line["samples"]  # the pipeline's: every harness metric, one value a round
    assert len(written["output_tok_per_s"]) == line["rounds"]
    assert all(v > 0 for v in written["output_tok_per_s"])
    line["samples"] = {"output_tok_per_s": [101.5, 99, None], "ttft_ms.p90": []}
    record = TestRecord.from_record(line, "tests.jsonl: line 1")
    assert record.samples["output_tok_per_s"] == (101.5, 99, None)
    assert record.samples_of("output_tok_per_s") == (101.5, 99.0)
    assert record.samples_of("ttft_ms.p90") == record.samples_of("e2e_ms.p90") == ()
    assert record.as_record()["samples"] == line["samples"]


def test_the_gpu_part_reads_back(run_dir: Path) -> None:
    """As a GPU run writes it: leased indices, and NVML's (pid, bytes) per physical GPU."""
    line = lines(run_dir / "tests.jsonl")[0]
    line["gpus"] = {"cuda": [0, 1], "physical": [2, 3], "processes": {"3": [[4321, 2**30]]}}
    record = TestRecord.from_record(line, "tests.jsonl: line 1")
    assert record.gpus is not None and record.gpus.physical == (2, 3)
    assert record.gpus.processes == {"3": ((4321, 2**30),)}
    assert record.as_record()["gpus"] == line["gpus"]
    line["gpus"]["processes"]["3"] = [[4321, 2**30, 7]]
    with pytest.raises(RecordError, match=r"gpus\.processes\.3\[0\]: expected \[pid, bytes\]"):
        TestRecord.from_record(line, "tests.jsonl: line 1")


def test_a_record_that_is_not_an_object_is_named() -> None:
    with pytest.raises(RecordError, match=r"^x.jsonl: line 4: test record: expected an object"):
        TestRecord.from_record([1, 2], "x.jsonl: line 4")


def test_a_broken_baseline_is_a_usage_error_before_any_test(
    project: Path, run_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "baseline"
    shutil.copytree(run_dir, broken)
    summary = json.loads((broken / "summary.json").read_text())
    summary["tests"][0]["metrics_flat"] = [1, 2]
    (broken / "summary.json").write_text(json.dumps(summary))
    out = run_project(project, "--llmperf-compare", str(broken))
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-2000:]
    assert (
        f"--llmperf-compare: {broken / 'summary.json'}: tests[0]: metrics_flat: "
        "expected an object, got a list"
    ) in out.stderr
    assert list((project / "results").iterdir()) == [run_dir]  # nothing ran
