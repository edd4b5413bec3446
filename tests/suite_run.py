"""Run the shipped suites as a user does: `pytest suites/ ...` in a child process.

One helper for every test that runs a whole suite (smoke, accuracy; through hf, vLLM,
servers), so they all run it the same way: no cache provider, CPU only, results in a
folder of the test's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: Two configurations of the vLLM sweep's smoke tier (max_num_seqs 4 and 16): tests/test_report.py
#: runs them (and checks them against the shipped thresholds). tests/test_shipped_suites.py's
#: vLLM run leaves the whole sweep out: its other three configurations are the same code with
#: other settings, five vLLM starts (two to three minutes of CI) that prove nothing new; the
#: nightly run checks them.
VLLM_REPORT_CONFIGS = ("cpu_tp2_len1536_batch4", "cpu_tp1_len1024_batch24")


@dataclass
class SuiteRun:
    out: subprocess.CompletedProcess[str]
    results_dir: Path

    @property
    def output(self) -> str:
        """The end of what pytest printed, for assertion messages."""
        return self.out.stdout[-4000:] + self.out.stderr[-2000:]

    def summary(self) -> dict[str, Any]:
        (run_dir,) = self.results_dir.iterdir()
        data: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
        return data

    def tests_by_name(self) -> dict[str, dict[str, Any]]:
        """summary.json's tests by function name (parameters kept), e.g. "test_x[a]"."""
        return {t["test_id"].split("::")[-1]: t for t in self.summary()["tests"]}


def run_suite(
    tmp_path: Path,
    *args: str,
    target: str = "suites/",
    copy: bool = False,
    conftest: str | None = None,
    timeout_s: float = 900,
) -> SuiteRun:
    """`pytest TARGET ARGS` from the repository, or with `copy` from a copy of its suites
    and thresholds (so a `conftest` can be added without touching the checkout)."""
    cwd = REPO
    if copy or conftest is not None:
        cwd = tmp_path / "project"
        cwd.mkdir()
        for name in ("suites", "thresholds"):
            subprocess.run(["cp", "-r", str(REPO / name), str(cwd / name)], check=True)
        if conftest is not None:
            (cwd / "conftest.py").write_text(conftest)
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "pytest", target, "-p", "no:cacheprovider", "--gpus", "cpu"]
    argv += ["--llmperf-results-dir", str(results), "--llmperf-thresholds-dir", "thresholds"]
    out = subprocess.run(
        [*argv, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    return SuiteRun(out, results)


def make_project(root: Path, suite: str) -> Path:
    """A folder holding one test module (`test_suite.py`) and a pytest.ini, so that it is
    its own rootdir and its runs land in `root/results`."""
    (root / "test_suite.py").write_text(suite)
    (root / "pytest.ini").write_text("[pytest]\n")
    return root


def run_project(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pytest test_suite.py` in a `make_project` folder, CPU only, results in results/."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "test_suite.py",
            "-p",
            "no:cacheprovider",
            "--gpus",
            "cpu",
            "--llmperf-results-dir",
            "results",
            *args,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
