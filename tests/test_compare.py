"""Runs read back: `llmperf list/show/compare`, baseline gating in pytest, responses.parquet,
pandas frames and the github-action-benchmark exports, all on files a real run wrote.

One real run of a small hf suite is made per module; comparisons that must regress use a
copy of it whose numbers were changed by a known factor, so the verdicts do not depend on
how noisy this machine's timings are.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import spec_for
from pytest_llmperf.results.changes import compare_metrics
from pytest_llmperf.results.identity import Machine, Setup
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import load_requests, load_runs, open_run
from pytest_llmperf.results.tolerances import Tolerance, parse_tolerances
from tests.conftest import SUITE
from tests.suite_run import make_project, run_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the small suite and one real run of it in results/."""
    root = make_project(tmp_path_factory.mktemp("project"), SUITE)
    out = run_project(root)
    assert out.returncode == 0, out.stdout[-3000:]
    return root


@pytest.fixture(scope="module")
def base_run(project: Path) -> Path:
    (run_dir,) = (project / "results").iterdir()
    return run_dir


def doctored_copy(
    run_dir: Path, dest: Path, change: Callable[[str, dict[str, Any]], dict[str, Any] | None]
) -> Path:
    """A copy of a run whose tests' flat metrics `change(test_id, metrics)` rewrote
    (None drops the test), each measured as if in three quiet rounds (1% apart) around its
    value, so that verdicts on samples are decided whatever the machine's load was."""
    shutil.copytree(run_dir, dest)
    summary = json.loads((dest / "summary.json").read_text())
    summary["run_id"] = dest.name
    tests = []
    for test in summary["tests"]:
        metrics = change(test["test_id"], dict(test["metrics_flat"]))
        if metrics is not None:
            samples = {  # the metrics measured round by round (not telemetry, say)
                name: [value * 0.99, value, value * 1.01]
                for name, value in metrics.items()
                if isinstance(value, (int, float))
                and not isinstance(value, bool)
                and name in test.get("samples", {})
            }
            tests.append({**test, "metrics_flat": metrics, "samples": samples})
    summary["tests"] = tests
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


def scaled(factors: dict[str, float]) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    return lambda _id, m: {**m, **{k: m[k] * f for k, f in factors.items()}}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- llmperf list / show ---------------------------------------------------------------


def test_list_and_show_a_real_run(base_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "list", "--results-dir", str(base_run.parent))
    assert code == 0 and base_run.name in out and "finished" in out
    code, out, _ = cli(capsys, "show", "latest", "--results-dir", str(base_run.parent))
    assert code == 0
    assert "test_suite.py::test_latency" in out and "output_tok_per_s" in out


def test_a_run_without_its_summary_still_reads(
    base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    killed = tmp_path / "results" / "killed-run"
    shutil.copytree(base_run, killed)
    (killed / "summary.json").unlink()  # as a run killed before its end leaves it
    code, out, _ = cli(capsys, "list", "--results-dir", str(tmp_path / "results"))
    assert code == 0 and "unfinished" in out
    run = open_run(killed)
    assert not run.finished and len(run.tests) == len(open_run(base_run).tests) == 3


@pytest.mark.parametrize("ref", ["no-such-run", "latest~5"])
def test_a_bad_run_reference_is_exit_2_with_the_reason(
    base_run: Path, ref: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "show", ref, "--results-dir", str(base_run.parent))
    assert code == 2 and out == ""
    assert f"llmperf show: error: {ref}:" in err


# --- llmperf compare -------------------------------------------------------------------


def test_a_run_compared_with_itself_has_no_regression(
    base_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "compare", str(base_run), str(base_run))
    assert code == 0 and "no regression beyond tolerance" in out


@pytest.mark.parametrize(
    ("factors", "regressed"),
    [
        ({"output_tok_per_s": 0.8}, "output_tok_per_s"),  # higher is better, fell 20%
        ({"ttft_ms.p90": 1.3}, "ttft_ms.p90"),  # lower is better, rose 30%
        ({"output_tok_per_s": 1.3, "ttft_ms.p90": 0.7}, None),  # both better
    ],
)
def test_compare_judges_each_metric_by_its_direction(
    base_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    factors: dict[str, float],
    regressed: str | None,
) -> None:
    base = doctored_copy(base_run, tmp_path / "base", scaled({}))
    new = doctored_copy(base_run, tmp_path / "new", scaled(factors))
    code, out, _ = cli(capsys, "compare", str(base), str(new))
    if regressed is None:
        assert code == 0, out
        assert out.count("improved") >= 2 * 3  # both metrics, in each of the three tests
    else:
        assert code == 1, out
        assert f"{regressed}: " in out.split("regression(s) beyond tolerance:")[1]
        assert "REGRESSED" in out


def test_a_tolerance_wider_than_the_change_lets_it_pass(
    base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = doctored_copy(base_run, tmp_path / "base", scaled({}))
    new = doctored_copy(base_run, tmp_path / "new", scaled({"output_tok_per_s": 0.8}))
    args = ("compare", str(base), str(new))
    assert cli(capsys, *args, "--tolerance", "output_tok_per_s:-25%")[0] == 0
    assert cli(capsys, *args, "--tolerance", "output_tok_per_s:-5%")[0] == 1
    # 20% against 15%: beyond it, but by less than the drift of one baseline run allows
    # telling apart (2%, twice over): inconclusive, which does not fail.
    code, out, _ = cli(capsys, *args, "--tolerance", "output_tok_per_s:-15%")
    assert code == 0 and "inconclusive" in out
    assert cli(capsys, *args, "--tolerance", "output_tok_per_*:25%")[0] == 0  # a glob


def test_a_tolerance_against_the_metrics_direction_is_a_usage_error(
    base_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        capsys, "compare", str(base_run), str(base_run), "--tolerance", "output_tok_per_s:+5%"
    )
    assert code == 2
    assert "output_tok_per_s is higher-is-better" in err and "output_tok_per_s:-5%" in err
    code, _, err = cli(capsys, "compare", str(base_run), str(base_run), "--tolerance", "ttft")
    assert code == 2 and "'ttft' is not METRIC:CHANGE" in err


def with_energy(joules: float) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """A GPU run's telemetry on this CPU-only run: every test used `joules`."""
    return lambda _id, m: {**m, "energy_j": joules}


def test_compare_judges_energy_like_pytest_does(
    base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The plugin records energy_j on every test (null without NVML); here it was measured.
    assert all("energy_j" in t.metrics_flat for t in open_run(base_run).tests)
    base = doctored_copy(base_run, tmp_path / "base", with_energy(100.0))
    new = doctored_copy(base_run, tmp_path / "new", with_energy(110.0))
    code, out, _ = cli(capsys, "compare", str(base), str(new), "--tolerance", "energy_j:+5%")
    assert code == 1, out
    regressions = out.split("regression(s) beyond tolerance:")[1]
    assert regressions.count("energy_j: 100 -> 110 (tolerance +5%)") == 3  # one per test
    # The default (15%) lets +10% pass as "worse" and fails +20%.
    code, out, _ = cli(capsys, "compare", str(base), str(new))
    assert code == 0 and out.count("worse") == 3, out
    worse = doctored_copy(base_run, tmp_path / "worse", with_energy(120.0))
    assert cli(capsys, "compare", str(base), str(worse))[0] == 1
    # An energy tolerance that allows a fall is an error: using less energy is never worse.
    code, _, err = cli(capsys, "compare", str(base), str(new), "--tolerance", "energy_j:-5%")
    assert code == 2 and "energy_j is lower-is-better" in err


@pytest.mark.parametrize(
    ("metric", "base", "within", "beyond"),
    [
        ("mbu", 0.50, 0.46, 0.44),  # 10%: a fall
        ("energy_j", 100.0, 114.0, 116.0),  # 15%: a rise
        ("output_tok_per_j", 2.0, 1.72, 1.68),  # 15%: a fall
        ("peak_gpu_mem_bytes", 20e9, 20.9e9, 21.1e9),  # 5%: a rise
    ],
)
def test_default_tolerances_of_energy_bandwidth_and_memory(
    metric: str, base: float, within: float, beyond: float
) -> None:
    tolerances = parse_tolerances([])
    (change,) = compare_metrics("t", {metric: base}, {metric: within}, tolerances)
    assert change.verdict == "worse"
    (change,) = compare_metrics("t", {metric: base}, {metric: beyond}, tolerances)
    assert change.verdict == "regressed"


def test_every_metric_a_run_records_has_a_spec(base_run: Path) -> None:
    recorded = {metric for t in open_run(base_run).tests for metric in t.metrics_flat}
    assert {"energy_j", "peak_gpu_mem_bytes", "output_tok_per_j"} <= recorded
    assert sorted(m for m in recorded if spec_for(m) is None) == []


def test_absolute_tolerances_for_ratios() -> None:
    tolerances = parse_tolerances(["accuracy:-0.05"])
    (change,) = compare_metrics("t", {"accuracy": 0.90}, {"accuracy": 0.86}, tolerances)
    assert change.verdict == "worse" and change.tolerance == "-0.05"
    (change,) = compare_metrics("t", {"accuracy": 0.90}, {"accuracy": 0.84}, tolerances)
    assert change.verdict == "regressed"
    # The default for failure_rate is 0: any rise is a regression, a fall an improvement.
    (change,) = compare_metrics("t", {"failure_rate": 0.0}, {"failure_rate": 0.01}, tolerances)
    assert change.verdict == "regressed"
    (change,) = compare_metrics("t", {"failure_rate": 0.1}, {"failure_rate": 0.0}, tolerances)
    assert change.verdict == "improved"
    # A metric with no known direction is reported, never judged.
    (change,) = compare_metrics("t", {"my_own_number": 1.0}, {"my_own_number": 9.0}, [])
    assert change.verdict == "undirected"
    with pytest.raises(LLMPerfUsageError, match=r"ttft_ms.p90 is lower-is-better"):
        Tolerance.parse("ttft_ms.p90:-10%")


def test_a_value_the_tool_knows_is_bad_is_not_judged() -> None:
    tolerances = parse_tolerances([])
    base = {"requests": 8, "failures": 0, "output_tok_per_s": 900.0, "tpot_ms.p90": 0.0}
    new = {"requests": 8, "failures": 0, "output_tok_per_s": 850.0, "tpot_ms.p90": 4.0}
    verdicts = {c.metric: c for c in compare_metrics("t", base, new, tolerances)}
    tpot = verdicts["tpot_ms.p90"]
    assert tpot.verdict == "unreliable" and tpot.note is not None
    assert tpot.note.startswith("baseline value unreliable: 0 ms")
    assert verdicts["output_tok_per_s"].verdict == "worse"  # still judged
    # A client-bound side: its timings are not judged, its counts are.
    bound = {**base, "tpot_ms.p90": 3.0, "client_bound": 1.0, "failure_rate": 0.0}
    after = {**new, "output_tok_per_s": 100.0, "failure_rate": 0.5}
    verdicts = {c.metric: c for c in compare_metrics("t", bound, after, tolerances)}
    assert verdicts["output_tok_per_s"].verdict == "unreliable"
    assert "client-bound" in str(verdicts["output_tok_per_s"].note)
    assert verdicts["failure_rate"].verdict == "regressed"
    # Every request failed in the baseline: nothing of it is judged.
    failed = {"requests": 8, "failures": 8, "output_tok_per_s": 0.0, "failure_rate": 1.0}
    verdicts = {c.metric: c for c in compare_metrics("t", failed, new, tolerances)}
    moved = [c for c in verdicts.values() if None not in (c.base, c.new) and c.base != c.new]
    assert [c.metric for c in moved] == ["failures", "output_tok_per_s"]
    for change in moved:
        assert change.verdict == "unreliable"
        assert change.note == "baseline value unreliable: every request failed (8 of 8)"


def test_a_zero_baseline_is_judged_only_with_an_absolute_tolerance() -> None:
    """A relative tolerance of 0 allows no rise at all: not judged, rather than REGRESSED."""
    tolerances = parse_tolerances(["peak_gpu_mem_bytes:+5%"])
    (memory,) = compare_metrics(
        "t", {"peak_gpu_mem_bytes": 0}, {"peak_gpu_mem_bytes": 1e9}, tolerances
    )
    assert memory.verdict == "unreliable" and "relative tolerance" in str(memory.note)
    (failures,) = compare_metrics("t", {"failure_rate": 0.0}, {"failure_rate": 0.1}, tolerances)
    assert failures.verdict == "regressed"  # failure_rate:0 is absolute


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("output_tokps:-5%", "unknown metric 'output_tokps' (did you mean 'output_tok_per_s'"),
        ("ttft_ms.p91:+5%", "unknown metric 'ttft_ms.p91' (did you mean"),
        ("nothing_*:5%", "'nothing_*' matches no metric"),
    ],
)
def test_a_tolerance_names_a_metric_as_a_thresholds_file_does(text: str, message: str) -> None:
    with pytest.raises(LLMPerfUsageError, match=re.escape(message)):
        Tolerance.parse(text)
    assert Tolerance.parse("ttft_ms.*:15%").matches("ttft_ms.p90")


def test_setups_differ_by_engine_model_name_and_hardware_key() -> None:
    here = Setup.of("hf", "/models/llama-3.2-1b/", "h100")
    # The same model in another folder, and a more specific name of the same card.
    assert here.differences(Setup.of("hf", "llama-3.2-1b", "h100-80gb-hbm3")) == []
    assert here.differences(Setup.of(None, None, None)) == []  # unknown is no difference
    assert here.differences(Setup.of("vllm", "tiny", "h200")) == [
        "engine: hf vs vllm",
        "model: llama-3.2-1b vs tiny",
        "hardware: h100 vs h200",
    ]


def test_machines_differ_by_cpu_cores_memory_and_gpus() -> None:
    vm = Machine("vm", "Xeon", 2, 23.5, ())
    assert vm.differences(Machine("vm2", "Xeon", 2, 23.9, ())) == []  # memory within 5%
    assert vm.differences(Machine(None, None, None, None, None)) == []  # unknown: no difference
    assert vm.differences(Machine("box", "EPYC", 64, 512.0, ("NVIDIA H100",))) == [
        "cpu: Xeon vs EPYC",
        "cpus: 2 vs 64",
        "memory: 24 GiB vs 512 GiB",
        "gpus: none vs NVIDIA H100",
    ]


# --- baseline gating in pytest ---------------------------------------------------------


def test_llmperf_compare_fails_each_regressed_test_and_only_those(
    project: Path, base_run: Path, tmp_path: Path
) -> None:
    tests = {t.test_id.split("::")[1]: t for t in open_run(base_run).tests}
    decode = sorted(name for name in tests if name.startswith("test_decode"))
    real = {name: t.metrics_flat for name, t in tests.items()}

    def baseline(test_id: str, _metrics: dict[str, Any]) -> dict[str, Any] | None:
        name = test_id.split("::")[1]
        if name == "test_latency":  # the baseline was 1000x faster: throughput regressed
            # (1000x: with this machine's noise, a round of one 8-token request can take 30x
            # another under load, and a verdict on samples must still be sure)
            return {"output_tok_per_s": real[name]["output_tok_per_s"] * 1000}
        if name == decode[0]:  # the baseline's p90 TTFT was 1/1000: latency regressed
            return {"ttft_ms.p90": real[name]["ttft_ms.p90"] * 0.001}
        # The baseline was 10x worse on both: improvements, which pass.
        return {
            "output_tok_per_s": real[name]["output_tok_per_s"] * 0.1,
            "ttft_ms.p90": real[name]["ttft_ms.p90"] * 10,
        }

    doctored = doctored_copy(base_run, tmp_path / "baseline", baseline)
    out = run_project(project, "--llmperf-compare", str(doctored), "--llmperf-responses")
    assert out.returncode == 1, out.stdout[-3000:]
    failed = {
        line.split("::")[1].split(" ")[0]
        for line in out.stdout.splitlines()
        if line.startswith("FAILED")
    }
    assert failed == {"test_latency", decode[0]}, out.stdout[-6000:]
    assert f"regressed against baseline run {doctored.name}" in out.stdout
    run = open_run("latest", project / "results")
    records = {t.test_id.split("::")[1]: t for t in run.tests}
    latency, improved = records["test_latency"].baseline, records[decode[1]].baseline
    assert latency is not None and latency.passed is False
    assert improved is not None and improved.passed is True
    verdicts = {j.metric: j.verdict for j in improved.judged}
    assert verdicts == {"output_tok_per_s": "improved", "ttft_ms.p90": "improved"}
    check_responses(run.path, records)


def check_responses(run_dir: Path, records: dict[str, TestRecord]) -> None:
    """--llmperf-responses wrote one table per test: every measured request, its texts."""
    import pandas

    requests = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    for name, record in records.items():
        assert record.responses is not None
        table = pandas.read_parquet(run_dir / record.responses)
        mine = [r for r in requests if r["test_id"].endswith("::" + name)]
        assert len(table) == len(mine) > 0
        assert list(table["response"]) == [r["output_text"] for r in mine]
        assert table["prompt"].notna().all() and (table["output_tokens"] > 0).all()
        assert list(table["ttft_ms"]) == [r["ttft_ms"] for r in mine]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--llmperf-compare", "nowhere"), "--llmperf-compare: nowhere: no such run"),
        (
            ("--llmperf-compare", "latest", "--llmperf-tolerance", "ttft_ms.p90:-5%"),
            "--llmperf-tolerance: 'ttft_ms.p90:-5%': ttft_ms.p90 is lower-is-better",
        ),
    ],
)
def test_a_bad_baseline_or_tolerance_is_a_usage_error_before_anything_runs(
    project: Path, args: tuple[str, ...], message: str
) -> None:
    before = sorted((project / "results").iterdir())
    out = run_project(project, *args)
    assert out.returncode == 4, out.stdout[-2000:]
    assert message in out.stderr
    assert sorted((project / "results").iterdir()) == before  # nothing ran, nothing written


# --- pandas and CI exports -------------------------------------------------------------


def test_runs_load_into_pandas(base_run: Path) -> None:
    tests = load_runs(base_run.parent)
    assert len(tests) >= 3 and {
        "run_id",
        "test_id",
        "engine",
        "output_tok_per_s",
        "ttft_ms.p90",
    } <= set(tests.columns)
    requests = load_requests(base_run)
    summary = json.loads((base_run / "summary.json").read_text())
    assert len(requests) == sum(t["metrics"]["requests"] for t in summary["tests"])
    assert {"custom_id", "ttft_ms", "output_tokens", "finish_reason"} <= set(requests.columns)


def test_github_benchmark_exports_split_by_direction(base_run: Path) -> None:
    folder = base_run / "github-benchmark"
    bigger = json.loads((folder / "bigger_is_better.json").read_text())
    smaller = json.loads((folder / "smaller_is_better.json").read_text())
    names_big = {e["name"].split(" ")[1] for e in bigger}
    names_small = {e["name"].split(" ")[1] for e in smaller}
    assert "output_tok_per_s" in names_big and "ttft_ms.p90" in names_small
    assert not names_big & names_small
    assert "requests" not in names_big and "ttft_ms.count" not in names_big | names_small
    summary = json.loads((base_run / "summary.json").read_text())
    latency = next(t for t in summary["tests"] if t["test_id"].endswith("test_latency"))
    entry = next(e for e in bigger if e["name"] == f"{latency['test_id']} output_tok_per_s")
    assert entry["value"] == latency["metrics_flat"]["output_tok_per_s"]
    assert entry["unit"] == "tok/s"


def test_exports_carry_intervals_rounds_and_verdicts(gated_run: Path) -> None:
    """tests.csv and the github-action-benchmark files of a real run judged on bounds, a
    baseline and rounds until decided: each headline metric's interval (low and high columns;
    `range`), the rounds and why they ended, and each verdict with its p-value."""
    run = open_run(gated_run)
    with (gated_run / "tests.csv").open(newline="", encoding="utf-8") as handle:
        rows = {row["test_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {t.key for t in run.tests}
    for test in run.tests:
        row = rows[test.key]
        assert test.stop is not None
        assert row["rounds"] == str(test.stop.rounds) and row["stop"] == test.stop.reason
        for metric in ("output_tok_per_s", "ttft_ms.p90", "e2e_ms.p90"):
            found = test.interval(metric)
            assert found is not None and found.low < found.high
            assert float(row[f"{metric}.low"]) == pytest.approx(found.low, rel=1e-12)
            assert float(row[f"{metric}.high"]) == pytest.approx(found.high, rel=1e-12)
            assert float(row[metric]) == test.metric(metric)
        assert float(row["requests_per_s"]) > 0 and float(row["failure_rate"]) == 0
        assert row["failure_rate.low"] == row["failure_rate.high"] == ""  # no spread: none
        assert test.baseline is not None
        assert row["baseline"] in ("ok", "regressed", "inconclusive")
        assert row["baseline_metrics"].count("; ") == len(test.baseline.judged) - 1
        assert (
            "output_tok_per_s " in row["baseline_metrics"]
            and " within 10%: " in row["baseline_metrics"]
        )
    latency = next(t for t in run.tests if t.key.endswith("test_latency"))
    bound = latency.thresholds.checked[0]
    assert bound.p is not None
    assert rows[latency.key]["thresholds"] == "missed"
    assert rows[latency.key]["bounds"] == f"e2e_ms.p90 <= 0.001: missed (p={bound.p:.2g})"
    decode = [rows[t.key] for t in run.tests if "test_decode" in t.key]
    assert all(
        r["thresholds"] == "met" and "output_tok_per_s >= 0.001: met (p=" in r["bounds"]
        for r in decode
    )

    folder = gated_run / "github-benchmark"
    bigger = json.loads((folder / "bigger_is_better.json").read_text())
    smaller = json.loads((folder / "smaller_is_better.json").read_text())
    entries = {e["name"]: e for e in bigger + smaller}
    for test in run.tests:
        entry = entries[f"{test.key} output_tok_per_s"]
        found = test.interval("output_tok_per_s")
        assert found is not None and found.relative_half_width is not None
        assert entry["range"] == f"±{found.relative_half_width * 100:.1f}%"
        assert f"rounds={test.stop.rounds} (" in entry["extra"]  # type: ignore[union-attr]
        assert "; baseline " in entry["extra"] and " within 10%: " in entry["extra"]
    e2e = entries[f"{latency.key} e2e_ms.p90"]
    assert f"bound <= 0.001: missed (p={bound.p:.2g})" in e2e["extra"]
    assert "range" not in entries[f"{latency.key} failure_rate"]  # no spread, no range
