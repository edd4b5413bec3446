"""The suites we ship pass on this machine against the thresholds we ship.

This is the README's first command, run by CI: `pytest suites/ -m smoke` on the built-in
tiny model, checked against `thresholds/cpu/<engine>.yaml`, for the hf engine and for vLLM's
CPU build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.suite_run import REPO, run_suite


@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_smoke_suite_passes_against_shipped_cpu_thresholds(tmp_path: Path, engine: str) -> None:
    # tests/test_report.py runs (and checks) two configurations of the vLLM sweep
    # (VLLM_REPORT_CONFIGS, which says why the rest of the sweep is left out here).
    skip = ["-k", "not test_sweep_cpu"] if engine == "vllm" else []
    run = run_suite(tmp_path, "-m", "smoke", "--engine", engine, *skip)
    assert run.out.returncode == 0, run.output
    assert "llmperf summary" in run.out.stdout
    summary = run.summary()
    assert summary["hardware"] == "cpu"
    tests = summary["tests"]
    assert len(tests) >= 4
    # The engine's tests, and the suite's own code (suites/test_own_code.py: engine "own").
    assert {t["engine"] for t in tests} == {engine, "own"}
    for test in tests:
        # Every shipped smoke test has bounds, and they were checked.
        assert test["thresholds"]["checked"], f"{test['test_id']} has no thresholds"
        assert test["thresholds"]["passed"]
    assert "thresholds:" not in run.out.stdout  # no stale ids or metrics in the shipped file


@pytest.mark.parametrize("path", sorted((REPO / "thresholds").glob("*/*.yaml")))
def test_shipped_threshold_files_load(path: Path) -> None:
    from pytest_llmperf.thresholds.files import load_threshold_file

    assert load_threshold_file(path).bounds
