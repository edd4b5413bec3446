"""The nightly GPU workflow: a valid workflow file whose commands exist here and work, run
in dry-run form on this CPU machine (the GPU run itself needs the self-hosted runner)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from tests.conftest import SUITE
from tests.suite_run import REPO, make_project, run_project

WORKFLOW = REPO / ".github" / "workflows" / "nightly-gpu.yml"


def test_the_workflow_file_is_a_scheduled_job_on_a_gpu_runner() -> None:
    data = yaml.safe_load(WORKFLOW.read_text())
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    (job,) = data["jobs"].values()
    assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    steps = job["steps"]
    assert all(("uses" in s) != ("run" in s) for s in steps)  # each step does one thing
    assert all("@v" in s["uses"] for s in steps if "uses" in s)  # actions pinned to a version
    commands = [s["run"] for s in steps if "run" in s]
    assert "scripts/nightly.sh" in commands
    # Results are uploaded even when the night is red; only a green night becomes baseline.
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    by_name = {s.get("name"): s for s in steps}
    for name in ("Make this run the next baseline", "Save the baseline"):
        assert by_name[name]["if"] == "success()"


def test_the_nightly_script_runs_in_dry_run_form_against_a_baseline(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project", SUITE)
    out = run_project(project)
    assert out.returncode == 0, out.stdout[-2000:]
    (baseline,) = (project / "results").iterdir()
    env = {
        **os.environ,
        "LLMPERF_NIGHTLY_RESULTS": str(tmp_path / "nightly"),
        "LLMPERF_NIGHTLY_BASELINE": str(baseline),
        "LLMPERF_NIGHTLY_MARKERS": "smoke",
    }
    script = REPO / "scripts" / "nightly.sh"
    assert os.access(script, os.X_OK)
    run = subprocess.run(
        [str(script), "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"comparing with the baseline in {baseline}" in run.stdout
    assert "dry run:" in run.stdout and " passed" not in run.stdout.splitlines()[-1]
    assert not (tmp_path / "nightly").exists()  # a dry run measures and writes nothing
    bad = subprocess.run(
        [str(script), "--wet"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "usage: scripts/nightly.sh" in bad.stderr
